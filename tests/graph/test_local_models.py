"""Runs against a self-hosted server's traits (issue 18), through the real client."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import Script, fast_settings, fenced, tool

from rlm_graph import answer
from rlm_graph.deployment import Deployment
from rlm_graph.graph import build_graph
from rlm_graph.graph.plan import TOOL_SWITCH_NOTICE
from rlm_graph.graph.replies import no_code_note
from rlm_graph.observe.trajectory import read_trajectory
from rlm_graph.observe.viewer import render_html
from rlm_graph.offline.stub_server import LocalServer, StubServer, all_text

Serve = Callable[..., StubServer]
LLAMA_CPP_8K = LocalServer(window_tokens=8192)


def test_the_prompt_states_the_window_the_server_reports(stub: Serve) -> None:
    code = "r = await llm_query('x' * 30_000)"  # ~10,000 tokens: past the 8k window
    server = stub(Script([tool(code), "FINAL(done)"]), local=LLAMA_CPP_8K)
    result = answer("q", "ctx", **fast_settings(server))

    system = all_text(server.requests[0].body)
    assert "whose window is 8,192 tokens" in system
    assert "Keep each prompt under 12,288 characters" in system
    assert "128,000" not in system and "384,000" not in system
    assert result.sub_calls == 0  # refused by the broker, never sent to the server
    assert "exceeds the sub model's window of 8,192 tokens" in all_text(server.requests[-1].body)


def test_tool_calls_work_with_a_server_that_needs_tool_choice(stub: Serve) -> None:
    server = stub(Script([tool("FINAL(6 * 7)")]), local=LocalServer(tool_calls="with_choice"))
    result = answer("q", "ctx", **fast_settings(server))
    assert result.answer == 42
    assert server.requests[0].body["tool_choice"] == "auto"


def test_tool_calls_written_as_text_still_run(stub: Serve) -> None:
    server = stub(Script([tool("FINAL(6 * 7)")]), local=LocalServer(tool_calls="text"))
    result = answer("q", "ctx", **fast_settings(server))
    assert (result.answer, result.status) == (42, "answered")


def _root_requests(server: StubServer) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.body["messages"][0]["role"] == "system"]


def test_the_root_prompt_stays_inside_a_small_window(stub: Serve) -> None:
    # Two cells printing 20,000 characters each took the next request past 8,192 tokens
    # and the run failed (issue 18); now the output is scaled to the window, and older
    # outputs shrink once six of them would not fit.
    prints = [tool(f"print('{letter}' * 20_000)") for letter in "abcdef"]
    server = stub(Script([*prints, "FINAL(done)"]), local=LLAMA_CPP_8K)
    result = answer("q", "ctx", **fast_settings(server, max_iterations=8))

    assert (result.status, result.answer) == ("answered", "done")
    assert all(r.reply.status == 200 for r in server.requests if r.path.endswith("/completions"))
    system = all_text(server.requests[0].body)
    assert "at most 3,072 characters per cell" in system
    last = all_text(_root_requests(server)[-1])
    assert "a" * 1_000 not in last and "a" * 200 in last  # older output: head and tail
    assert "shortened to fit the model's window" in last
    assert "f" * 2_000 in last  # the newest is shown as the window allows


def test_a_prompt_the_server_refuses_is_sent_again_trimmed(stub: Serve) -> None:
    # A window set by hand larger than the server's (20,000 vs 8,192 tokens): the
    # request after the fifth cell is refused, the retry with half the room fits.
    prints = [tool(f"print('{letter}' * 7_000)") for letter in "abcde"]
    server = stub(Script([*prints, "FINAL(done)"]), local=LLAMA_CPP_8K)
    settings = fast_settings(server, root_window_tokens=20_000, max_iterations=8)
    result = answer("q", "ctx", **settings)

    assert (result.status, result.answer) == ("answered", "done")
    refused = [r for r in server.requests if r.reply.status == 400]
    assert len(refused) == 1
    assert "shortened to fit the model's window" in all_text(_root_requests(server)[-1])


def test_a_root_that_cannot_fit_answers_best_effort_instead_of_failing(stub: Serve) -> None:
    # A window set by hand far too large (100,000 tokens): even trimmed, the request
    # is refused; the run ends with what its cells printed, saying why.
    prints = [tool(f"print('{letter}' * 20_000)") for letter in "ab"]
    server = stub(Script([*prints, "FINAL(done)"]), local=LLAMA_CPP_8K)
    result = answer("q", "ctx", **fast_settings(server, root_window_tokens=100_000))

    assert result.status == "budget_exhausted"
    assert "root model's window (100,000 tokens) is full" in result.stop_reason
    assert "maximum context length is 8192 tokens" in result.stop_reason
    assert result.answer == "b" * 20_000
    assert [r.reply.status for r in server.requests if r.reply.status != 200] == [400, 400]


def test_a_local_server_gets_capped_replies_and_costs_nothing(stub: Serve) -> None:
    server = stub(Script([tool("FINAL(await llm_query('x'))")]), local=LLAMA_CPP_8K)
    result = answer("q", "ctx", **fast_settings(server, server_profile="auto"))

    assert result.answer == "echo:x"
    bodies = [r.body for r in server.requests]
    # max_tokens, which every local server reads, not the client's max_completion_tokens
    assert [b.get("max_tokens") for b in bodies] == [2048, 2048]
    assert not any("max_completion_tokens" in b for b in bodies)
    assert result.cost == {
        "dollars": 0.0,
        "models": {"stub-root": 0.0, "stub-sub": 0.0},
        "unpriced": [],
    }


def test_a_hosted_api_gets_no_reply_cap(stub: Serve) -> None:
    server = stub(Script([tool("FINAL(1)")]), local=LLAMA_CPP_8K)
    answer("q", "ctx", **fast_settings(server))  # server_profile="hosted"
    assert "max_tokens" not in server.requests[0].body


def test_a_server_deployment_asks_its_model_server_the_window_once(stub: Serve) -> None:
    # Studio and langgraph dev run the graph without the runner, which asks for the CLI
    server = stub(Script([tool("FINAL(1)")]), local=LLAMA_CPP_8K)
    deployment = Deployment(base_urls=((server.base_url, ""),))
    rlm = build_graph(deployment=deployment)
    probes = []
    for _ in range(2):
        out = rlm.invoke({"question": "q", "context": "ctx"}, context=fast_settings(server))
        assert out["answer"] == 1
        assert "whose window is 8,192 tokens" in all_text(server.requests[-1].body)
        probes.append(server.probes.count("/props"))

    assert probes == [2, 2]  # once per model (root and sub), kept for the process
    assert deployment.windows == {
        (server.base_url, "stub-root"): 8192,
        (server.base_url, "stub-sub"): 8192,
    }


def test_a_model_that_never_uses_the_tool_gets_fenced_blocks_and_the_trace_says_so(
    stub: Serve, tmp_path: Path
) -> None:
    fences = [fenced("x = 1"), fenced("x += 1"), "thinking", fenced("FINAL(x + 1)")]
    server = stub(Script(fences))
    trace = tmp_path / "run.jsonl"
    result = answer("q", "ctx", trace=str(trace), **fast_settings(server))

    assert result.answer == 3
    offered = ["tools" in r.body for r in server.requests]
    assert offered == [True, True, False, False]
    assert "```repl" in all_text(server.requests[2].body)  # the prompt says the fence way
    iterations = read_trajectory(trace)["root"]["iterations"]
    assert [i.get("notice", "") for i in iterations] == ["", "", TOOL_SWITCH_NOTICE, ""]
    assert iterations[2]["note"] == no_code_note(False, skipped=False)  # no tool named
    assert html.escape(TOOL_SWITCH_NOTICE) in render_html(read_trajectory(trace))


def test_a_model_that_used_the_tool_keeps_it(stub: Serve) -> None:
    steps = [tool("x = 1"), fenced("x += 1"), fenced("x += 1  # again"), tool("FINAL(x)")]
    server = stub(Script(steps))
    assert answer("q", "ctx", **fast_settings(server)).answer == 3
    assert all("tools" in r.body for r in server.requests)


def test_a_repeated_reply_is_not_run_again_and_gets_a_specific_nudge(
    stub: Serve, tmp_path: Path
) -> None:
    # A 1.5B model sent one reply until the budget ran out (issue 18).
    failing = fenced("print(1 / 0)")
    script = Script(["384,000", "384,000", failing, failing, "FINAL(done)"])
    server = stub(script)
    trace = tmp_path / "run.jsonl"
    result = answer("q", "ctx", trace=trace, **fast_settings(server, tool_calling=False))

    assert result.answer == "done"
    seen = all_text(_root_requests(server)[-1])
    assert "It still holds no code: write Python code in a ```repl block" in seen
    assert "Its code failed with ZeroDivisionError: division by zero" in seen
    assert seen.count("ZeroDivisionError: division by zero\n") == 1  # run once, not twice
    notes = [i["note"] for i in read_trajectory(trace)["root"]["iterations"]]
    assert notes[0].startswith("no code and no final answer found")
    assert notes[1].startswith("Your reply is identical") and notes[2] == ""
    assert "note to the model" in render_html(read_trajectory(trace))
