"""Failing models: every failure is retried, reported to the model, or ends the run marked.

Runs go through the real ChatOpenAI client against the stub, so retries, timeouts and
stream assembly are the client's own. No test waits longer than a few seconds: every
wait in a run has a bound (model_timeout, cell_timeout, max_iterations).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from support import Script, fast_settings, replies_so_far, tool

from rlm_graph import answer, build_graph
from rlm_graph.offline.stub_server import Responder, StubReply, StubServer, is_root_request
from rlm_graph.settings import Settings

Start = Callable[[Responder], StubServer]


class FailFirst:
    """Answer the first ``times`` root requests with ``failure``, then follow the script."""

    def __init__(self, failure: StubReply, script: Script, times: int = 1) -> None:
        self.failure = failure
        self.script = script
        self.left = times
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        with self._lock:
            if is_root_request(body) and self.left > 0:
                self.left -= 1
                return self.failure
        return self.script(body)


FINAL_42 = Script([tool("FINAL(6 * 7)")])


def shown_to_model(server: StubServer, index: int) -> str:
    return json.dumps(server.requests[index].body)


# -- retried with backoff -------------------------------------------------------------------


def test_429_with_retry_after_is_retried_after_the_wait_it_asks(stub: Start) -> None:
    limited = StubReply(status=429, error="slow down", headers={"retry-after": "2"})
    server = stub(FailFirst(limited, FINAL_42))
    result = answer("q", "ctx", **fast_settings(server, model_max_retries=2))
    assert (result.answer, result.status) == (42, "answered")
    assert len(server.requests) == 2
    # A lower bound only (a wait is never shorter): the client's own first backoff is
    # under a second, so the retry waited because the server asked it to.
    assert server.requests[1].timestamp - server.requests[0].timestamp >= 2.0


def test_500_and_connection_resets_are_retried(stub: Start) -> None:
    for failure in (StubReply(status=500, error="boom"), StubReply(drop_connection=True)):
        server = stub(FailFirst(failure, FINAL_42))
        result = answer("q", "ctx", **fast_settings(server, model_max_retries=1))
        assert (result.answer, result.status) == (42, "answered")
        assert len(server.requests) == 2


# -- a root model that keeps failing: the run ends failed, nothing is lost ----------------------


def test_a_root_model_that_times_out_fails_the_run_and_asking_again_resumes_it(
    stub: Start,
) -> None:
    healthy = Script([tool("keep = 41"), tool("FINAL(keep + 1)")])
    down = {"on": False}

    def responder(body: dict[str, Any]) -> StubReply | str:
        if down["on"] and replies_so_far(body) == 1:
            return StubReply(delay=20.0, content="too late")
        return healthy(body)

    server = stub(responder)
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "timeouts"}, "recursion_limit": 50}
    # The first reply is healthy under the same timeout: 2 s leaves a loaded machine room
    settings = Settings(**fast_settings(server, model_timeout=2.0, model_max_retries=1))
    down["on"] = True
    state = graph.invoke({"question": "q", "context": "ctx"}, config, context=settings)
    assert state["status"] == "failed"
    assert state["error"].startswith("root model call failed: OpenAITimeoutError")
    assert "\n" not in state["error"]
    cells = graph.get_state(config).values["cells"]
    assert [(c["kind"], c["halted"]) for c in cells] == [("model", False)]  # kept

    down["on"] = False
    state = graph.invoke({"question": "q"}, config, context=settings)
    assert (state["status"], state["answer"]) == ("answered", 42)


def test_a_failing_best_effort_call_ends_the_run_failed_not_hung(stub: Start) -> None:
    def responder(body: dict[str, Any]) -> StubReply | str:
        if "tools" not in body:  # the best-effort request is sent without tools
            return StubReply(status=500, error="down for good")
        return tool("print('still looking')")

    server = stub(responder)
    result = answer("q", "ctx", **fast_settings(server, max_iterations=2))
    assert result.status == "failed"
    assert (
        result.error == "best-effort answer failed: OpenAIAPIError: Error code: 500 - down for good"
    )
    assert result.iterations == 2


# -- replies that cannot be acted on: the model is told, the run goes on ------------------------


def test_invalid_json_in_tool_arguments_is_reported_to_the_model(stub: Start) -> None:
    broken = StubReply(tool_calls=[{"name": "execute_python", "arguments": '{"code": "x = '}])
    server = stub(Script([broken, tool("FINAL(1)")]))
    result = answer("q", "ctx", **fast_settings(server))
    assert (result.answer, result.iterations) == (1, 2)
    assert "were not valid JSON" in shown_to_model(server, 1)


def test_an_unknown_tool_is_reported_to_the_model(stub: Start) -> None:
    wrong = StubReply(tool_calls=[{"name": "run_shell", "arguments": {"cmd": "id"}}])
    server = stub(Script([wrong, tool("FINAL(1)")]))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == 1
    assert "unknown tool 'run_shell'" in shown_to_model(server, 1)


def test_empty_replies_and_replies_without_code_or_final_are_reported(stub: Start) -> None:
    server = stub(Script(["", "I am thinking about it.", tool("FINAL(3)")]))
    result = answer("q", "ctx", **fast_settings(server))
    assert (result.answer, result.iterations) == (3, 3)
    for index in (1, 2):
        assert "no code and no final answer found" in shown_to_model(server, index)


def test_a_reply_cut_at_the_token_limit_is_not_run(stub: Start) -> None:
    half = tool("print('ran the half')\nFINAL('premature')")
    half.finish_reason = "length"
    server = stub(Script([half, tool("FINAL(2)")]))
    result = answer("q", "ctx", **fast_settings(server))
    assert (result.answer, result.iterations) == (2, 2)
    told = shown_to_model(server, 1)
    assert "your reply was cut off (it reached the output token limit)" in told
    assert "ran the half" not in told


def test_a_model_that_never_says_final_ends_with_a_marked_best_effort(stub: Start) -> None:
    def responder(body: dict[str, Any]) -> StubReply | str:
        return "my best guess" if "tools" not in body else tool("print(1)")

    server = stub(responder)
    result = answer("q", "ctx", **fast_settings(server, max_iterations=4))
    assert (result.status, result.answer, result.iterations) == (
        "budget_exhausted",
        "my best guess",
        4,
    )


def test_a_truncated_stream_is_reported_to_the_model(stub: Start) -> None:
    """Under stream_mode="messages" the client streams; the stub cuts the stream short."""
    cut = tool("value = 'complete code that never fully arrives'\nprint(value)")
    cut.truncate_stream = True
    server = stub(Script([cut, tool("FINAL('recovered')")]))
    graph = build_graph()
    settings = Settings(**fast_settings(server))
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream(
        {"question": "q", "context": "ctx"},
        context=settings,
        stream_mode=["messages", "values"],
    ):
        if mode == "values":
            final = chunk
    assert all(r.body.get("stream") for r in server.requests)
    assert (final["status"], final["answer"]) == ("answered", "recovered")
    told = shown_to_model(server, 1)
    assert "your reply was cut off (the connection ended before the reply was complete)" in told
    assert "SyntaxError" not in told  # the half that arrived was not run


# -- failing sub models: the code gets an error it can handle ----------------------------------


def test_failing_sub_calls_become_errors_the_code_can_read(stub: Start) -> None:
    def sub(prompt: str) -> StubReply | str:
        if prompt == "slow":
            return StubReply(delay=20.0, content="late")
        if prompt == "broken":
            return StubReply(status=500, error="sub model down")
        return "fine"

    code = (
        "r = await llm_batch(['ok', 'broken', 'slow'])\n"
        "print([str(x)[:60] for x in r])\n"
        "try:\n    await llm_query('broken')\n"
        "except SubCallFailed as exc:\n    print('caught', str(exc)[:40])"
    )
    server = stub(Script([tool(code), tool("FINAL('done')")], sub=sub))
    # the root's replies and the healthy sub-calls have the same 2 s: room on a loaded machine
    result = answer("q", "ctx", **fast_settings(server, model_timeout=2.0))
    assert result.answer == "done"
    output = shown_to_model(server, -1)
    assert "'fine'" in output
    assert "Error: OpenAIAPIError: Error code: 500" in output
    assert "Error: OpenAITimeoutError" in output
    assert "caught OpenAIAPIError" in output


def test_a_sub_call_that_outlives_the_cell_is_cut_off_at_cell_timeout(stub: Start) -> None:
    never = StubReply(delay=30.0, content="never in time")
    server = stub(
        Script(
            [tool("r = await llm_query('wait')"), tool("FINAL('moved on')")],
            sub=lambda prompt: never,
        )
    )
    result = answer("q", "ctx", **fast_settings(server, cell_timeout=1.5, model_timeout=20.0))
    assert result.answer == "moved on"
    shown = shown_to_model(server, 2)
    assert "cell_timeout" in shown
