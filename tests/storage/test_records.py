"""Cell records: what a state's reference names and how a missing one is reported."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.records import Cell, CellRef, MissingRecord, _RecordCache, load_cell


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


def test_the_cache_of_cell_records_keeps_at_most_its_budget_of_sub_call_answers() -> None:
    # A cell's record holds its sub-call answers: 512 cells of 430 answers of 27 KB
    # would otherwise stay in memory after their records had been spilled to disk.
    cache = _RecordCache(size=512, budget=100_000)
    for n in range(10):
        cache.add(f"k{n}", cast(Cell, {"journal": [{"result": f"{n}" * 30_000}]}))
    assert 60_000 < cache.held <= 100_000
    assert cache.get("k0") is None and cache.get("k9") is not None
