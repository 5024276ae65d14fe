"""The stub playing a self-hosted server (llama.cpp, vLLM, Ollama), through the real client."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI

from rlm_graph.offline.stub_server import LocalServer, StubReply, StubServer

Serve = Callable[..., StubServer]
CALL = StubReply(tool_calls=[{"name": "execute_python", "arguments": {"code": "print(1)"}}])
TOOL = {
    "type": "function",
    "function": {"name": "execute_python", "parameters": {"type": "object", "properties": {}}},
}


def client(server: StubServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="stub-model", base_url=server.base_url, api_key="sk-test", max_retries=0, **kwargs
    )


def fetch(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(url, data=data, timeout=5) as response:
        return json.loads(response.read())


def test_a_request_past_the_window_gets_the_servers_400(stub: Serve) -> None:
    server = stub(lambda body: "ok", local=LocalServer(window_tokens=100))

    assert client(server).invoke("x" * 396).content == "ok"  # 99 tokens of 4 characters
    with pytest.raises(openai.BadRequestError, match="maximum context length is 100 tokens"):
        client(server).invoke("x" * 404)
    with pytest.raises(openai.BadRequestError, match=r"\(25 in the messages, 80 in the comp"):
        client(server, max_tokens=80).invoke("x" * 100)  # the reply's room counts too
    assert [r.reply.status for r in server.requests] == [200, 400, 400]


def test_the_window_can_be_asked_without_a_key(stub: Serve) -> None:
    server = stub(lambda body: "ok", local=LocalServer(window_tokens=8192, slots=1))
    root = server.base_url.removesuffix("/v1")

    props = fetch(f"{root}/props")
    assert props["default_generation_settings"]["n_ctx"] == 8192
    assert props["total_slots"] == 1
    assert fetch(f"{server.base_url}/models")["data"][0]["max_model_len"] == 8192
    assert "num_ctx 8192" in fetch(f"{root}/api/show", {"model": "stub-model"})["parameters"]


def test_a_hosted_api_has_no_window_probes(stub: Serve) -> None:
    server = stub(lambda body: "ok")
    with pytest.raises(urllib.error.HTTPError, match="404"):
        fetch(server.base_url.removesuffix("/v1") + "/props")
    assert fetch(f"{server.base_url}/models")["data"] == []  # lists no models, so no window


def test_tool_calls_written_as_text(stub: Serve) -> None:
    server = stub(lambda body: CALL, local=LocalServer(tool_calls="text"))
    reply = client(server).bind_tools([TOOL]).invoke("run it")

    assert isinstance(reply, AIMessage) and reply.tool_calls == []
    written = str(reply.content).removeprefix("```json\n").removesuffix("\n```")
    assert json.loads(written) == {"name": "execute_python", "arguments": {"code": "print(1)"}}


def test_tool_calls_only_when_the_request_names_a_tool_choice(stub: Serve) -> None:
    server = stub(lambda body: CALL, local=LocalServer(tool_calls="with_choice"))

    without = client(server).bind_tools([TOOL]).invoke("run it")
    chosen = client(server).bind_tools([TOOL], tool_choice="auto").invoke("run it")

    assert isinstance(without, AIMessage) and without.tool_calls == []
    assert "```json" in str(without.content)
    assert isinstance(chosen, AIMessage)
    assert [c["name"] for c in chosen.tool_calls] == ["execute_python"]


def test_one_slot_computes_one_request_at_a_time(stub: Serve) -> None:
    active, most = [0], [0]
    lock = threading.Lock()

    def responder(body: dict[str, Any]) -> str:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
        with lock:
            active[0] -= 1
        return "ok"

    server = stub(responder, local=LocalServer(slots=1))
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: client(server).invoke("hi").content, range(4)))

    assert replies == ["ok"] * 4
    assert most == [1]
