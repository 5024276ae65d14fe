"""Trajectories: a traced run read back as a tree, nested sub-RLMs, a crashed run's trace."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support import Script, fast_settings, tool

from rlm_graph import answer
from rlm_graph.observe.trajectory import (
    TraceError,
    TraceWriter,
    Trajectory,
    read_trajectory,
    runs,
    usage_by_depth,
    usage_by_model,
)
from rlm_graph.offline.stub_server import StubReply, StubServer
from rlm_graph.settings import Settings

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "trajectory.schema.json").read_text())
LONG = 5_000
ROOT = [
    tool(f"print('x' * {LONG})\ngot = await llm_query('child task')", "Looking first."),
    tool("FINAL(got)"),
]
CHILD = [
    tool("parts = await llm_batch(['a', 'b', 'a'])\nprint(parts)"),
    tool("FINAL('+'.join(parts))"),
]


def traced_run(stub: Any, path: Path) -> tuple[StubServer, Any]:
    server = stub(Script(ROOT, sub=str.upper, child=CHILD))
    settings = fast_settings(server, max_depth=2, max_output_chars=300, trace_text_chars=4)
    return server, answer("What?", "ctx", trace=path, **settings)


@pytest.fixture
def traced(stub: Any, tmp_path: Path) -> tuple[Path, Any, Trajectory]:
    path = tmp_path / "run.jsonl"
    _, result = traced_run(stub, path)
    return path, result, read_trajectory(path)


def test_trace_holds_iterations_full_output_and_the_result(
    traced: tuple[Path, Any, Trajectory],
) -> None:
    _, result, trajectory = traced
    assert trajectory["header"]["question"] == "What?"
    assert trajectory["result"] is not None and trajectory["result"]["answer"] == "A+B+A"
    root = trajectory["root"]
    assert [it["number"] for it in root["iterations"]] == [1, 2]
    first = root["iterations"][0]
    assert first["reply"] == "Looking first." and first["code"].startswith("print('x'")
    assert first["prompt_chars"] > 0 and first["usage"]["stub-root"]["calls"] == 1
    assert root["system_prompt"] and "What?" in root["question"]
    (cell,) = first["cells"]
    assert cell["output"] == "x" * LONG  # the model saw 300 characters of it
    assert len(result.state["cells"][0]["preview"]) <= 300  # state keeps a reference
    assert root["final"] is not None and root["final"]["status"] == "answered"


def test_sub_rlm_has_its_own_nested_trajectory(traced: tuple[Path, Any, Trajectory]) -> None:
    root = traced[2]["root"]
    (call,) = root["iterations"][0]["sub_calls"]
    assert (call["recursive"], call["depth"], call["ok"], call["answer"]) == (
        True,
        1,
        True,
        "A+B+…",  # cut to trace_text_chars
    )
    child = call["run"]
    assert child is not None and child["depth"] == 1
    assert [it["number"] for it in child["iterations"]] == [1, 2]
    plain = child["iterations"][0]["sub_calls"]
    assert [(c["prompt"], c["answer"], c["cached"], c["depth"]) for c in plain] == [
        ("a", "A", False, 2),
        ("b", "B", False, 2),
        ("a", "A", True, 2),
    ]
    assert all(c["ended"] is not None and c["ended"] >= c["started"] for c in plain)
    assert [r["depth"] for r in runs(root)] == [0, 1]


def test_usage_per_depth_adds_up_to_the_run_exactly(traced: tuple[Path, Any, Trajectory]) -> None:
    _, result, trajectory = traced
    by_depth = usage_by_depth(trajectory["root"])
    assert sorted(by_depth) == [0, 1, 2]
    assert set(by_depth[2]) == {"stub-sub"} and by_depth[2]["stub-sub"]["calls"] == 2
    assert usage_by_model(trajectory["root"]) == result.tokens


def test_every_line_follows_the_documented_schema(traced: tuple[Path, Any, Trajectory]) -> None:
    lines = [json.loads(line) for line in traced[0].read_text().splitlines()]
    kinds = {line.get("event", line["type"]) for line in lines}
    assert kinds == {
        "run",
        "iteration",
        "reply",
        "cell",
        "cell_end",
        "sub_call_start",
        "sub_call_end",
        "final",
        "result",
    }
    for line in lines:
        jsonschema.validate(line, SCHEMA)
    cell_end = next(line for line in lines if line.get("event") == "cell_end")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in cell_end.items() if k != "output"}, SCHEMA)


def test_a_best_effort_run_follows_the_schema_too(stub: Any, tmp_path: Path) -> None:
    def root(body: dict[str, Any]) -> StubReply | str:
        return tool("print('still looking')") if "tools" in body else "best guess: 7"

    server = stub(root)
    path = tmp_path / "run.jsonl"
    result = answer("q", "ctx", trace=path, **fast_settings(server, max_iterations=1))
    assert result.status == "budget_exhausted"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        jsonschema.validate(line, SCHEMA)
    (reply,) = [line for line in lines if line.get("best_effort")]
    assert reply["text"] == "best guess: 7"
    assert read_trajectory(path)["root"]["iterations"][-1]["best_effort"]


def test_a_trace_cut_off_mid_line_still_reads(traced: tuple[Path, Any, Trajectory]) -> None:
    path = traced[0]
    lines = path.read_text().splitlines()
    cut = len(lines) // 2
    path.write_text("\n".join(lines[:cut]) + "\n" + lines[cut][: len(lines[cut]) // 2])
    partial = read_trajectory(path)
    assert partial["result"] is None
    assert partial["events"] == cut - 1
    assert partial["root"]["iterations"][0]["number"] == 1


def test_the_header_keeps_no_password_of_a_base_url(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path / "run.jsonl")
    url = "https://me:hunter2-pw@models.example/v1"
    writer.header("What?", Settings(base_url=url, sub_base_url=url + "/sub"), {})
    writer.close()
    assert "hunter2-pw" not in (tmp_path / "run.jsonl").read_text()
    settings = read_trajectory(tmp_path / "run.jsonl")["header"]["settings"]
    assert settings["base_url"] == "https://me:***@models.example/v1"
    assert settings["sub_base_url"] == "https://me:***@models.example/v1/sub"


def test_not_a_trace_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"type": "iteration"}) + "\n")
    with pytest.raises(TraceError, match="not an rlm trajectory"):
        read_trajectory(bad)
    bad.write_text('{"type": "run"}\n{oops\n{"type": "event"}\n')
    with pytest.raises(TraceError, match=r"bad.jsonl:2 is not JSON"):
        read_trajectory(bad)
    with pytest.raises(TraceError, match="cannot read the trace"):
        read_trajectory(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_a_killed_run_leaves_a_readable_trace(stub: Any, tmp_path: Path) -> None:
    hang = StubReply(content="", delay=60.0)  # the second root request never returns in time
    server = stub(Script([tool("print('first cell ran')"), hang]))
    (tmp_path / "ctx.txt").write_text("ctx")
    trace = tmp_path / "run.jsonl"
    argv = ["run", "--model", "stub-root", "--sub-model", "stub-sub"]
    argv += ["--base-url", server.base_url, "--context", str(tmp_path / "ctx.txt")]
    process = subprocess.Popen(
        [sys.executable, "-m", "rlm_graph.cli.main", *argv, "--trace", str(trace), "--quiet", "q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while '"cell_end"' not in (trace.read_text() if trace.exists() else ""):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    trajectory = read_trajectory(trace)
    assert trajectory["result"] is None
    (cell,) = trajectory["root"]["iterations"][0]["cells"]
    assert cell["output"] == "first cell ran"
