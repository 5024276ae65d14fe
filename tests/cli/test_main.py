"""The ``rlm`` parser: one-line usage errors, and a cold start that imports no LangGraph."""

from __future__ import annotations

import pytest
from support import python_probe, rlm

HEAVY = ("langgraph", "langchain_core", "langchain", "openai", "eryx", "rich")


def test_no_command_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = rlm(capsys)
    assert (status, out) == (2, "")
    assert err.startswith("rlm: error: ") and len(err.splitlines()) == 1


def test_help_and_a_bad_flag_import_no_model_or_graph_library() -> None:
    # The parser is built from light modules; a command's module is imported when it runs.
    code = (
        "import sys\n"
        "from rlm_graph.cli.main import main\n"
        "codes = [main(['--help']), main(['run', '--help']), main(['eval', '--bogus'])]\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(codes, heavy, file=sys.stderr)\n"
    )
    done = python_probe(code, timeout=60)
    assert done.stderr.splitlines()[-1] == "[0, 0, 2] []", done.stderr
