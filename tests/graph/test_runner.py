"""The runner: sync and async runs into a sink, resume, approval, errors, the primitive."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from support import Recorder, Script, fast_settings, tool

from rlm_graph.graph import build_graph, graph
from rlm_graph.graph.runner import (
    GraphStream,
    RLMResult,
    Run,
    arun_graph,
    recursion_limit,
    resumable,
    run_config,
    run_graph,
)
from rlm_graph.graph.runtime import EVENTS_KEY
from rlm_graph.observe.events import Event
from rlm_graph.offline.stub_server import Responder, StubReply, StubServer, is_root_request
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import store_value

Start = Callable[[Responder], StubServer]
BATCH = "answers = await llm_batch(['a', 'b', 'c'])\nFINAL(answers)"


def run_of(server: StubServer, sink: Recorder | None = None, **fields: Any) -> Run:
    settings = Settings(**fast_settings(server, **fields.pop("settings", {})))
    fields.setdefault("graph", graph)
    return Run(question="q?", settings=settings, sink=sink, **fields)


def root_requests(server: StubServer) -> int:
    return sum(is_root_request(request.body) for request in server.requests)


def test_sub_call_events_from_the_background_thread_reach_the_sink(stub: Start) -> None:
    server = stub(Script([tool(BATCH)], sub=str.upper))
    recorder = Recorder()
    result = run_graph(run_of(server, recorder, context_ref=store_value("some context")))
    assert (result.status, result.answer, result.sub_calls) == ("answered", ["A", "B", "C"], 3)
    kinds = recorder.kinds()
    assert kinds[:3] == ["iteration", "reply", "cell"] and kinds[-2:] == ["final", "closed"]
    assert kinds.count("sub_call_start") == kinds.count("sub_call_end") == 3
    assert recorder.totals[-1] == 3
    assert set(result.tokens) == {"stub-root", "stub-sub"}


def test_the_async_run_streams_the_same_events_and_result(stub: Start) -> None:
    server = stub(Script([tool(BATCH)], sub=str.upper))
    recorder = Recorder()
    run = run_of(server, recorder, context_ref=store_value("some context"))
    result = asyncio.run(arun_graph(run))
    assert (result.status, result.answer, result.sub_calls) == ("answered", ["A", "B", "C"], 3)
    assert recorder.kinds()[-2:] == ["final", "closed"]
    assert recorder.kinds().count("sub_call_end") == 3


def test_a_thread_cut_off_mid_question_resumes_without_asking_again(stub: Start) -> None:
    server = stub(Script([tool("kept = 41"), tool("FINAL(kept + 1)")]))
    checkpointed = build_graph(checkpointer=InMemorySaver())
    on_thread = {
        "graph": checkpointed,
        "config": {"configurable": {"thread_id": "cut"}},
        "durability": "sync",
    }
    killed = Recorder(stop_at="cell")  # the process dies as the first cell starts
    with pytest.raises(KeyboardInterrupt):
        run_graph(run_of(server, killed, context_ref=store_value("ctx"), catch=True, **on_thread))
    assert killed.kinds()[-1] == "closed"  # the display is closed however the run ends
    assert root_requests(server) == 1
    # The cell may have finished (its writes saved) in a step never committed: still cut off.
    assert resumable(checkpointed.get_state(on_thread["config"]), "q?")

    resumed_at: list[int] = []
    run = run_of(server, Recorder(), on_resume=resumed_at.append, **on_thread)
    result = run_graph(run)
    assert (result.status, result.answer, result.iterations) == ("answered", 42, 2)
    assert resumed_at == [0]  # iteration 1 had not been counted when the run was cut off
    assert root_requests(server) == 2  # the first reply was not asked (or paid) again


def test_every_pause_is_answered_by_the_approver(stub: Start) -> None:
    server = stub(Script([tool("import os"), tool("x = 6"), tool("FINAL(x * 7)")]))
    proposals: list[str] = []

    def approve(proposal: dict[str, Any]) -> Any:
        proposals.append(proposal["code"])
        return {"action": "reject", "reason": "no os"} if len(proposals) == 1 else True

    run = run_of(
        server,
        settings={"approve_code": True},
        context_ref=store_value("ctx"),
        graph=build_graph(checkpointer=InMemorySaver()),
        config={"configurable": {"thread_id": "approved"}},
        approve=approve,
    )
    result = run_graph(run)
    assert (result.status, result.answer) == ("answered", 42)
    assert proposals == ["import os", "x = 6", "FINAL(x * 7)"]
    assert "rejected this code before it ran (no os)" in json.dumps(server.requests[1].body)
    async_run = Run(**{**run.__dict__, "config": {"configurable": {"thread_id": "again"}}})
    assert asyncio.run(arun_graph(async_run)).answer == 42


def test_a_model_error_is_a_failed_result_whatever_the_policy(stub: Start) -> None:
    server = stub(lambda body: StubReply(status=400, error="no such model"))
    for catch in (False, True):
        result = run_graph(run_of(server, context_ref=store_value("ctx"), catch=catch))
        assert (result.status, result.answer) == ("failed", None)
        assert "Error code: 400 - no such model" in result.error


def test_a_graph_exception_is_raised_or_becomes_a_failed_result(
    stub: Start, tmp_path: Path
) -> None:
    server = stub(Script([tool("x = 1")]))  # never answers: the step limit ends the run
    tight = {"context_ref": store_value("ctx"), "config": {"recursion_limit": 5}}
    with pytest.raises(Exception, match="Recursion limit of 5"):
        run_graph(run_of(server, **tight))
    trace = tmp_path / "run.jsonl"
    result = run_graph(run_of(server, catch=True, trace=trace, **tight))
    assert result.status == "failed" and "Recursion limit of 5" in result.error
    assert result.iterations >= 1 and result.tokens  # what the run spent before it failed
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert lines[0]["type"] == "run" and lines[-1]["type"] == "result"
    assert lines[-1]["status"] == "failed"


def test_the_callers_step_limit_wins_else_the_budget_sets_it() -> None:
    settings = Settings(max_iterations=5)
    assert recursion_limit(settings) == run_config(settings)["recursion_limit"] == 30
    assert run_config(settings, {"recursion_limit": 7})["recursion_limit"] == 7


def test_the_primitive_forwards_events_and_returns_the_last_state(stub: Start) -> None:
    server = stub(Script([tool("FINAL(context[::-1])")]))
    settings = Settings(**fast_settings(server))
    events: list[dict[str, Any]] = []
    inputs = {"question": "reversed?", "context": "abc"}
    stream = GraphStream(graph, settings, run_config(settings), on_event=events.append)
    state = asyncio.run(stream.arun(inputs))
    assert (state["status"], state["answer"]) == ("answered", "cba")
    assert [e["event"] for e in events][-1] == "final"


def test_a_synchronous_run_runs_its_nodes_on_the_callers_thread_with_the_same_events(
    stub: Start,
) -> None:
    # Not through LangGraph's custom stream, which ran each node on a pool thread beside
    # a waiter thread: the events go to on_event from the node, on the caller's thread.
    server = stub(Script([tool("x = context[::-1]"), tool("FINAL(x)")]))
    settings = Settings(**fast_settings(server))
    inputs = {"question": "reversed?", "context": "abc"}
    seen: dict[str, list[tuple[str, int]]] = {"run": [], "arun": []}

    def stream(way: str) -> GraphStream:
        def note(event: Event) -> None:
            seen[way].append((event["event"], threading.get_ident()))

        return GraphStream(graph, settings, run_config(settings), on_event=note)

    state = stream("run").run(inputs)
    assert (state["status"], state["answer"]) == ("answered", "cba")
    assert asyncio.run(stream("arun").arun(inputs))["answer"] == "cba"
    assert [kind for kind, _ in seen["run"]] == [kind for kind, _ in seen["arun"]]
    assert {thread for _, thread in seen["run"]} == {threading.get_ident()}


def test_a_servers_caller_cannot_name_the_event_callback(stub: Start) -> None:
    # A server's caller sends JSON: a value that is not callable is not called, and
    # the events still go to the custom stream.
    server = stub(Script([tool("FINAL(1)")]))
    settings = Settings(**fast_settings(server))
    config = run_config(settings, {"configurable": {EVENTS_KEY: "print"}})
    parts = graph.stream(
        {"question": "q", "context": "c"}, config, context=settings, stream_mode="custom"
    )
    assert [part["event"] for part in parts][-1] == "final"


def test_a_result_reads_as_json_and_as_text() -> None:
    result = RLMResult({"n": "é"}, "answered", 1, 0, {}, 0.12345)
    assert result.answer_text() == '{"n": "é"}'
    assert result.to_json()["seconds"] == 0.123 and "error" not in result.to_json()
