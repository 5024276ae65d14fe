"""The graph's nodes and routing, with models answered in-process (fast, no HTTP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import Script, is_child, tool

from rlm_graph.graph import graph
from rlm_graph.graph.routing import route_after_execute, route_after_plan
from rlm_graph.graph.state import State, Step
from rlm_graph.offline.stub_server import Responder, StubModel, StubReply, is_root_request
from rlm_graph.settings import Settings

InProcess = Callable[[Responder], tuple[StubModel, dict[str, Any]]]
SETTINGS = Settings(model="stub-root", sub_model="stub-sub", max_iterations=6, cell_timeout=20.0)


def run(
    config: dict[str, Any], settings: Settings = SETTINGS, **inputs: Any
) -> tuple[list[str], dict[str, Any]]:
    """The nodes a run went through, in order, and its last state."""
    nodes: list[str] = []
    state: dict[str, Any] = {}
    inputs = {"question": "q", "context": "the context", **inputs}
    for mode, chunk in graph.stream(
        inputs, config, context=settings, stream_mode=["updates", "values"]
    ):
        if mode == "updates":
            nodes.extend(chunk)
        else:
            state = chunk
    return nodes, state


def test_an_answer_without_code_goes_from_plan_to_inspect(in_process: InProcess) -> None:
    model, config = in_process(Script(["FINAL(forty-two)"]))
    nodes, state = run(config)
    assert nodes == ["plan", "inspect", "finalize"]
    assert (state["status"], state["answer"]) == ("answered", "forty-two")
    assert len(model.requests) == 1


def test_code_runs_then_its_final_is_taken(in_process: InProcess) -> None:
    _, config = in_process(Script([tool("x = len(context)\nFINAL(x)")]))
    nodes, state = run(config)
    assert nodes == ["plan", "execute", "inspect", "finalize"]
    assert (state["status"], state["answer"]) == ("answered", len("the context"))


def test_a_bad_memory_setting_fails_the_run_saying_which_in_one_line(
    in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MIN_AVAILABLE_MB", "lots")
    _, config = in_process(Script([tool("x = 1")]))
    nodes, state = run(config)
    assert nodes == ["plan", "execute", "finalize"]
    assert state["status"] == "failed"
    assert state["error"] == "RLM_MIN_AVAILABLE_MB='lots': a whole number, at least 0"


def test_an_unusable_context_stops_at_plan_without_a_model_call(in_process: InProcess) -> None:
    model, config = in_process(Script(["FINAL(never)"]))
    nodes, state = run(config, context=None, context_path="/no/such/file")
    assert nodes == ["plan", "finalize"]
    assert state["status"] == "failed" and "/no/such/file" in state["error"]
    assert model.requests == []


def test_a_failed_root_call_stops_at_plan_and_says_why(in_process: InProcess) -> None:
    _, config = in_process(lambda body: StubReply(status=400, error="model does not exist"))
    nodes, state = run(config)
    assert nodes == ["plan", "finalize"]
    assert state["status"] == "failed"
    assert "root model call failed" in state["error"] and "does not exist" in state["error"]


def test_a_reply_with_nothing_to_do_becomes_a_note_the_model_reads(
    in_process: InProcess,
) -> None:
    model, config = in_process(Script(["let me think about it", "FINAL(done)"]))
    nodes, state = run(config)
    assert nodes == ["plan", "inspect", "plan", "inspect", "finalize"]
    assert state["answer"] == "done"
    second = str(model.requests[1].body["messages"])
    assert "no code and no final answer" in second


def test_a_sub_rlm_tree_draws_from_one_budget(in_process: InProcess) -> None:
    """Every model request below the root counts; a fresh budget per child would not stop."""
    forever = "n = 0\nwhile True:\n    n += 1\n    await llm_query(f'leaf {n}')"
    script = Script(
        [tool("print(await llm_query('go'))"), "FINAL(done)"],
        sub=lambda prompt: "leaf answer",
        child=[tool(forever)],
    )
    model, config = in_process(script)
    settings = Settings(**{**vars(SETTINGS), "max_depth": 2, "max_sub_calls": 6})
    _, state = run(config, settings)
    assert state["status"] == "answered"
    root = [r for r in model.requests if is_root_request(r.body) and not is_child(r.body)]
    below = [r for r in model.requests if r not in root]
    # 6 calls: the root's llm_query (a sub-RLM), its one step, four leaves; the fifth
    # leaf is refused and the child may not take another step.
    assert len(below) == 5
    assert state["sub_calls"] == 6


def test_routing_reads_the_step_kind() -> None:
    def state(kind: str, status: str = "running") -> State:
        step = Step(kind=kind, reply="", tool_call_id="", code="")  # type: ignore[typeddict-item]
        return State(step=step, status=status)  # type: ignore[typeddict-item]

    assert route_after_plan(state("code")) == "execute"
    assert route_after_plan(state("final")) == "inspect"
    assert route_after_plan(state("note")) == "inspect"
    assert route_after_plan(state("stop", "failed")) == "finalize"
    assert route_after_execute(state("code", "failed")) == "finalize"
    assert route_after_execute(state("code")) == "inspect"
