"""LangSmith tracing, offline: a run posts one tree to a stand-in for the LangSmith API.

The CLI runs in a subprocess so tracing is configured from its environment, as a user
enables it, and the client flushes at exit. Sub-calls run on another thread; the test
checks they still hang under the cell that made them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_langsmith import FakeLangSmith
from support import Script, tool

from rlm_graph.offline.stub_server import StubServer

ROOT = [tool("got = await llm_query('child task')\nprint(got)"), tool("FINAL(got)")]
CHILD = [tool("parts = await llm_batch(['a', 'b'])\nprint(parts)"), tool("FINAL('+'.join(parts))")]


def traced_cli_run(tmp_path: Path, langsmith: FakeLangSmith, model: StubServer) -> str:
    context = tmp_path / "ctx.txt"
    context.write_text("ctx")
    env = {
        **os.environ,
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_ENDPOINT": langsmith.url,
        "LANGSMITH_API_KEY": "fake-key-for-the-stand-in",
        "LANGSMITH_PROJECT": "rlm-tests",
    }
    argv = ["run", "--model", "stub-root", "--sub-model", "stub-sub"]
    argv += ["--base-url", model.base_url, "--max-depth", "2", "--context", str(context)]
    done = subprocess.run(
        [sys.executable, "-m", "rlm_graph.cli.main", *argv, "--quiet", "q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def metadata(run: dict[str, Any]) -> dict[str, Any]:
    return dict((run.get("extra") or {}).get("metadata") or {})


@pytest.mark.slow
def test_one_tree_with_sub_calls_under_their_cell(tmp_path: Path) -> None:
    with FakeLangSmith() as langsmith, StubServer(Script(ROOT, str.upper, CHILD)) as model:
        assert traced_cli_run(tmp_path, langsmith, model) == "A+B\n"
        runs = dict(langsmith.runs)

    def chain(run: dict[str, Any]) -> list[str]:
        names = []
        while run.get("parent_run_id"):
            run = runs[str(run["parent_run_id"])]
            names.append(run["name"])
        return names

    assert len({str(run["trace_id"]) for run in runs.values()}) == 1
    (root,) = [run for run in runs.values() if not run.get("parent_run_id")]
    assert root["name"] == "rlm"

    (child,) = [run for run in runs.values() if run["name"] == "rlm-sub"]
    assert chain(child) == ["cell", "execute", "rlm"]
    assert metadata(child)["rlm_depth"] == 1

    plain = [run for run in runs.values() if run["name"] == "llm_query"]
    assert sorted(run["inputs"]["messages"][0][0]["kwargs"]["content"] for run in plain) == [
        "a",
        "b",
    ]
    for run in plain:
        assert chain(run) == ["cell", "execute", "rlm-sub", "cell", "execute", "rlm"]
        assert metadata(run)["rlm_depth"] == 2 and metadata(run)["rlm_iteration"] == 1

    by_start = sorted(runs.values(), key=lambda run: str(run["start_time"]))
    root_model = [run for run in by_start if run["run_type"] == "llm" and chain(run)[1:] == ["rlm"]]
    assert [metadata(run)["rlm_iteration"] for run in root_model] == [1, 2]
    assert all(chain(run) == ["plan", "rlm"] for run in root_model)
    sandbox_ids = {metadata(run)["sandbox_id"] for run in root_model}
    assert len(sandbox_ids) == 1 and all(sandbox_ids)
    cells = [run for run in by_start if run["name"] == "cell" and chain(run)[1:] == ["rlm"]]
    assert [run["inputs"]["code"][:14] for run in cells] == ["got = await ll", "FINAL(got)"]
