"""The runnable examples of docs/integrations.md run, offline, and print the right answer."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from rlm_graph.offline import demo

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
NAMES = ["langchain", "deepagents", "mcp"]


def test_the_doc_has_one_example_per_integration() -> None:
    assert [name in code for name, code in zip(NAMES, EXAMPLES, strict=True)] == [True] * 3


@pytest.mark.parametrize("name", NAMES)
def test_a_doc_example_runs_and_answers_right(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip(name, reason=f"{name} is not installed")
    monkeypatch.chdir(tmp_path)
    # The MCP example starts `rlm` as a host would: from PATH, with a bare environment
    # (the SDK passes on HOME, PATH and a few more), which must still find the tests'
    # sandbox cache rather than build one in ~/.cache.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if name == "mcp":
        import mcp.client.stdio

        kept = [*mcp.client.stdio.DEFAULT_INHERITED_ENV_VARS, "RLM_GRAPH_HOME"]
        monkeypatch.setattr(mcp.client.stdio, "DEFAULT_INHERITED_ENV_VARS", kept)
    code = compile(EXAMPLES[NAMES.index(name)], f"{DOC}:{name}", "exec")
    exec(code, {"__name__": "__main__"})  # capfd: the SDK hands the server our stderr fd
    printed = capfd.readouterr().out
    expected = json.dumps(demo.make_context(size_mb=1).expected())
    answers = [line for line in printed.splitlines() if expected in line]
    assert len(answers) == (2 if name == "mcp" else 1), printed
    if name == "mcp":
        assert "True Error executing tool rlm_answer: path '/etc/passwd' is outside" in printed
