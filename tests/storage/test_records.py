"""Cell records: what a state's reference names and how a missing one is reported."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.records import CellRef, MissingRecord, load_cell


def test_a_missing_record_is_a_one_line_error_naming_where_it_was_looked_for(
    tmp_path: Path,
) -> None:
    # A thread resumed on a machine whose local blob directory never saw its cells.
    ref = cast(CellRef, {"record": "ab" * 32})
    with pytest.raises(MissingRecord) as raised:
        load_cell(Blobs(root=tmp_path), "sandbox-1", ref)
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"cell record abababababab… is missing from {tmp_path}")
