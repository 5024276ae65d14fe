"""``rlm threads``: the threads of a checkpoint (a listing after a run: tests/cli/test_run.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import rlm


def test_threads_of_a_missing_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = rlm(capsys, "threads", "--checkpoint", str(tmp_path / "none.sqlite"))
    assert status == 2 and "no checkpoint file at" in err
