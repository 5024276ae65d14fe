"""The official library's log format: its published example read, our export in its shape."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from support import Script, fast_settings, tool

from rlm_graph import answer
from rlm_graph.cli.main import main
from rlm_graph.observe.official_log import export_lines, read_official, to_trajectory
from rlm_graph.observe.trajectory import read_trajectory
from rlm_graph.observe.viewer import render_html

EXAMPLE = Path(__file__).parent / "fixtures" / "official-trace-log.jsonl"
# What the official visualizer reads from an rlm_calls entry (visualizer/src/lib/types.ts).
VISUALIZER_CALL_KEYS = {
    "prompt",
    "response",
    "prompt_tokens",
    "completion_tokens",
    "execution_time",
}


def example_lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE.read_text().splitlines()]


def first_of(lines: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(line for line in lines if line["type"] == kind)


@pytest.fixture
def our_trace(stub: Any, tmp_path: Path) -> Path:
    root = [
        tool("x = await llm_query('double 21')\nprint('got', x)", "Ask the sub model."),
        tool("FINAL(x)"),
    ]
    server = stub(Script(root, sub=lambda prompt: "42"))
    path = tmp_path / "run.jsonl"
    assert answer("What is 21 doubled?", "ctx", trace=path, **fast_settings(server)).answer == "42"
    return path


def test_the_published_example_is_read() -> None:
    log = read_official(EXAMPLE)
    assert log["metadata"]["root_model"] == "gpt-4o"
    (run,) = log["runs"]
    assert run["context"] is not None
    assert run["context"]["prompt"] == "Generate a random number between 1 and 100."
    assert [it["iteration"] for it in run["iterations"]] == [1, 2, 3, 4]
    block = run["iterations"][0]["code_blocks"][0]
    assert block["code"] == "print(completion_context)"
    assert block["result"]["stdout"] == "Generate a random number between 1 and 100.\n"


def test_the_published_example_opens_in_our_viewer(tmp_path: Path) -> None:
    trajectory = to_trajectory(read_official(EXAMPLE))
    assert len(trajectory["root"]["iterations"]) == 4
    assert trajectory["result"] is not None
    assert trajectory["result"]["answer"] == example_lines()[-1]["final_answer"]
    page = render_html(trajectory)
    assert "print(completion_context)" in page.replace('<span class="b">print</span>', "print")
    out = tmp_path / "example.html"
    assert main(["view", str(EXAMPLE), "-o", str(out)]) == 0
    assert out.read_text().count('class="iteration"') == 4


def test_our_export_has_the_shape_of_the_example(our_trace: Path) -> None:
    ours = export_lines(read_trajectory(our_trace))
    theirs = example_lines()
    assert [line["type"] for line in ours] == ["metadata", "iteration", "iteration"]
    assert set(ours[0]) == set(first_of(theirs, "metadata"))
    example_iteration = first_of(theirs, "iteration")
    for line in ours[1:]:
        assert set(line) == set(example_iteration)
        datetime.fromisoformat(line["timestamp"])
        assert all(set(m) == {"role", "content"} for m in line["prompt"])
        for block in line["code_blocks"]:
            assert set(block) == set(example_iteration["code_blocks"][0])
            assert set(block["result"]) == set(example_iteration["code_blocks"][0]["result"])
    first, last = ours[1], ours[2]
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert [m["role"] for m in last["prompt"]] == ["system", "user", "assistant", "user"]
    assert last["prompt"][3]["content"].startswith("Code executed:\n```python\nx = await")
    (call,) = first["code_blocks"][0]["result"]["rlm_calls"]
    assert set(call) >= VISUALIZER_CALL_KEYS
    assert (call["prompt"], call["response"]) == ("double 21", "42")
    assert first["code_blocks"][0]["result"]["stdout"] == "got 42"
    assert (first["final_answer"], last["final_answer"]) == (None, "42")


def test_export_round_trips_through_the_official_reader(
    our_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "official.jsonl"
    assert main(["export", str(our_trace), "-o", str(out)]) == 0
    back = to_trajectory(read_official(out))
    original = read_trajectory(our_trace)
    assert [len(it["cells"]) for it in back["root"]["iterations"]] == [1, 1]
    assert back["root"]["iterations"][0]["cells"][0]["output"] == "got 42"
    assert back["result"] is not None and back["result"]["answer"] == "42"
    assert back["root"]["system_prompt"] == original["root"]["system_prompt"]
