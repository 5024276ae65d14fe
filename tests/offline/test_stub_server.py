"""The stub server driven by the real ChatOpenAI client, fully offline."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from rlm_graph.offline.stub_server import (
    ScriptedResponder,
    StubReply,
    StubServer,
    all_text,
    last_user_text,
)

Serve = Callable[..., StubServer]


@pytest.fixture
def serve(stub: Serve) -> Serve:
    """The shared ``stub`` fixture under this module's name."""
    return stub


def client(server: StubServer, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("timeout", 10)
    kwargs.setdefault("max_retries", 0)
    return ChatOpenAI(model="stub-model", base_url=server.base_url, api_key="sk-test", **kwargs)


@tool
def execute_python(code: str) -> str:
    """Run Python code in the sandbox."""
    return code


def collect(chunks: Iterator[BaseMessage]) -> AIMessageChunk:
    merged: AIMessageChunk | None = None
    for chunk in chunks:
        assert isinstance(chunk, AIMessageChunk)
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    return merged


def test_plain_reply_usage_and_log(serve: Serve) -> None:
    server = serve(lambda body: f"you said: {last_user_text(body)}")
    reply = client(server).invoke("hello there")

    assert reply.content == "you said: hello there"
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "stub-model"
    # Estimates: ceil(11 chars / 4) prompt, ceil(21 chars / 4) completion.
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == 3
    assert reply.usage_metadata["output_tokens"] == 6
    assert reply.usage_metadata["total_tokens"] == 9

    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["messages"] == [{"role": "user", "content": "hello there"}]
    assert request.raw_size == len(json.dumps(request.body, separators=(",", ":")))
    assert request.reply == StubReply(content="you said: hello there")
    server.reset_log()
    assert server.requests == []


def test_explicit_usage_overrides_estimate(serve: Serve) -> None:
    server = serve(lambda body: StubReply("x", prompt_tokens=1000, completion_tokens=7))
    usage = client(server).invoke("hi").usage_metadata
    assert usage is not None
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (1000, 7, 1007)


def test_tool_call_parsed_with_dict_args(serve: Serve) -> None:
    call = {"name": "execute_python", "arguments": {"code": "print(1)"}, "id": "call_a"}
    server = serve(lambda body: StubReply(content=None, tool_calls=[call]))
    reply = client(server).bind_tools([execute_python]).invoke("run it")

    assert reply.tool_calls == [
        {
            "name": "execute_python",
            "args": {"code": "print(1)"},
            "id": "call_a",
            "type": "tool_call",
        }
    ]
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert server.requests[0].body["tools"][0]["function"]["name"] == "execute_python"


def test_invalid_json_arguments_become_invalid_tool_calls(serve: Serve) -> None:
    server = serve(
        lambda body: StubReply(tool_calls=[{"name": "execute_python", "arguments": "{not json"}])
    )
    reply = client(server).bind_tools([execute_python]).invoke("run it")

    assert reply.tool_calls == []
    (invalid,) = reply.invalid_tool_calls
    assert invalid["name"] == "execute_python"
    assert invalid["args"] == "{not json"
    assert invalid["id"] == "call_1"  # generated ids are unique per server


def test_streaming_matches_non_streaming(serve: Serve) -> None:
    server = serve(lambda body: "The quick brown fox jumps over the lazy dog.")
    llm = client(server, stream_usage=True)
    plain = llm.invoke("go")
    streamed = collect(llm.stream("go"))

    assert streamed.content == plain.content
    assert streamed.usage_metadata == plain.usage_metadata
    assert streamed.response_metadata["finish_reason"] == "stop"
    assert server.requests[1].body["stream_options"] == {"include_usage": True}


def test_streamed_tool_calls_assemble(serve: Serve) -> None:
    calls = [
        {"name": "execute_python", "arguments": {"code": "x = 1\nprint(x)"}},
        {"name": "execute_python", "arguments": {"code": "print(2)"}, "id": "call_b"},
    ]
    server = serve(lambda body: StubReply(content="thinking", tool_calls=calls))
    merged = collect(client(server).bind_tools([execute_python]).stream("go"))

    assert merged.content == "thinking"
    assert [(c["args"], c["id"]) for c in merged.tool_calls] == [
        ({"code": "x = 1\nprint(x)"}, "call_1"),
        ({"code": "print(2)"}, "call_b"),
    ]
    assert merged.response_metadata["finish_reason"] == "tool_calls"


def test_rate_limit_is_retried_by_client(serve: Serve) -> None:
    server = serve(
        ScriptedResponder(
            [StubReply(status=429, error="slow down", headers={"retry-after": "0"}), "ok"]
        )
    )
    assert client(server, max_retries=2).invoke("hi").content == "ok"

    replies = [request.reply for request in server.requests]
    assert [reply.status for reply in replies if reply] == [429, 200]


def test_server_error_raises_without_retries(serve: Serve) -> None:
    server = serve(lambda body: StubReply(status=500, error="boom"))
    with pytest.raises(openai.InternalServerError, match="boom"):
        client(server).invoke("hi")
    assert len(server.requests) == 1


def test_raising_responder_becomes_500_with_message(serve: Serve) -> None:
    def responder(body: dict[str, Any]) -> str:
        raise ValueError("bad script")

    server = serve(responder)
    with pytest.raises(openai.InternalServerError, match="ValueError: bad script"):
        client(server).invoke("hi")


def test_client_timeout(serve: Serve) -> None:
    server = serve(lambda body: StubReply("late", delay=2.0))
    with pytest.raises(openai.APITimeoutError):
        client(server, timeout=0.5).invoke("hi")


def test_dropped_connection(serve: Serve) -> None:
    server = serve(lambda body: StubReply(drop_connection=True))
    with pytest.raises(openai.APIConnectionError):
        client(server).invoke("hi")


def test_truncated_stream_yields_incomplete_message(serve: Serve) -> None:
    # The SSE body is delimited by connection close, so the real client cannot
    # tell a truncated stream from a finished one: no error, just a partial
    # message without finish_reason or usage.
    server = serve(lambda body: StubReply("abcdefghijklmnopqrstuvwxyz", truncate_stream=True))
    merged = collect(client(server, stream_usage=True).stream("go"))

    assert isinstance(merged.content, str)
    assert "abcdefghijklmnopqrstuvwxyz".startswith(merged.content)
    assert len(merged.content) < 26
    assert "finish_reason" not in merged.response_metadata
    assert merged.usage_metadata is None


def test_scripted_responder_order_exhaustion_and_fallback(serve: Serve) -> None:
    script = ScriptedResponder(["one", StubReply("two")])
    assert script({}) == "one"
    assert script({}) == StubReply("two")
    assert script({}) == StubReply(status=500, error="stub script exhausted")

    server = serve(ScriptedResponder(["first"], fallback=lambda body: "fallback"))
    llm = client(server)
    assert [llm.invoke("a").content, llm.invoke("b").content] == ["first", "fallback"]

    exhausted = serve(ScriptedResponder([]))
    with pytest.raises(openai.InternalServerError, match="stub script exhausted"):
        client(exhausted).invoke("hi")


def test_concurrent_requests_are_served_in_parallel(serve: Serve) -> None:
    n = 50
    # Every handler must be inside the responder at the same time for the barrier
    # to open; a serialising server breaks it (-> 500) instead of passing slowly.
    barrier = threading.Barrier(n, timeout=5)

    def responder(body: dict[str, Any]) -> str:
        barrier.wait()
        return last_user_text(body)

    server = serve(responder, delay=0.2)
    llm = client(server)

    async def burst() -> list[str]:
        replies = await asyncio.gather(*(llm.ainvoke(f"q{i}") for i in range(n)))
        return [str(reply.content) for reply in replies]

    assert sorted(asyncio.run(burst())) == sorted(f"q{i}" for i in range(n))
    assert len(server.requests) == n


def test_models_unknown_paths_and_unprefixed_route(serve: Serve) -> None:
    server = serve(lambda body: "plain", models=("my-model",))
    with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
        assert [model["id"] for model in json.load(response)["data"]] == ["my-model"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.base_url}/nope", timeout=5)
    assert info.value.code == 404
    assert "error" in json.load(info.value)
    assert server.probes == ["/v1/models", "/v1/nope"]
    assert server.requests == []
    unlisted = serve(lambda body: "plain")
    with urllib.request.urlopen(f"{unlisted.base_url}/models", timeout=5) as response:
        assert json.load(response)["data"] == []  # lists none unless told: any name passes

    root = server.base_url.removesuffix("/v1")
    llm = ChatOpenAI(model="stub-model", base_url=root, api_key="sk-test", max_retries=0)
    assert llm.invoke("hi").content == "plain"
    assert server.requests[-1].path == "/chat/completions"


def test_text_helpers_handle_parts() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None},
            {"role": "tool", "content": "result"},
        ]
    }
    assert last_user_text(body) == "ab"
    assert all_text(body) == "sys\nab\n\nresult"
    assert last_user_text({"messages": []}) == ""


def test_stop_is_prompt_and_closes_socket() -> None:
    server = StubServer(lambda body: StubReply("late", delay=30)).start()
    port = urlsplit(server.base_url).port
    assert port is not None
    errors: list[openai.APIConnectionError] = []

    def call() -> None:
        try:
            client(server).invoke("hi")
        except openai.APIConnectionError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)

    server.stop()  # must wake the 30 s delay and hang up, not wait for it
    worker.join(timeout=15)
    assert not worker.is_alive()  # the client got its answer long before the 30 s delay
    assert len(errors) == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
