"""Runs against a self-hosted server's traits (issue 18), through the real client."""

from __future__ import annotations

from collections.abc import Callable

from support import Script, fast_settings, tool

from rlm_graph import answer
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
