"""``rlm view`` / ``rlm export`` mistakes (the pages and logs: tests/observe/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import rlm


def test_a_missing_trace_is_a_one_line_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for command in ("view", "export"):
        status, out, err = rlm(capsys, command, str(tmp_path / "missing.jsonl"))
        assert (status, out) == (2, "")
        assert err.startswith("rlm: error: cannot read the trace") and len(err.splitlines()) == 1
