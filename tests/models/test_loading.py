"""The lean OpenAI client sends exactly what the stock one sends (only faster)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from rlm_graph.models.loading import ModelConfigError, lean_chat_openai, load_chat_model
from rlm_graph.offline.stub_server import StubServer

CONVERSATION = [
    SystemMessage("system prompt"),
    HumanMessage("Question: q"),
    AIMessage(
        "",
        tool_calls=[{"name": "execute_python", "args": {"code": "x = 1"}, "id": "call_1"}],
    ),
    ToolMessage("(no output)", tool_call_id="call_1"),
    HumanMessage([{"type": "text", "text": "a block"}]),
]


def _bodies(server: StubServer, model: Any) -> list[dict[str, Any]]:
    server.reset_log()
    model.invoke(CONVERSATION)
    return [r.body for r in server.requests]


def test_lean_client_sends_the_stock_request(stub: Callable[..., StubServer]) -> None:
    server = stub(lambda body: "ok")
    options: dict[str, Any] = {
        "model": "m",
        "base_url": server.base_url,
        "api_key": SecretStr("x"),
        "max_retries": 0,
        "extra_body": {"top_k": 3},
    }
    stock = _bodies(server, ChatOpenAI(**options))
    lean = _bodies(server, lean_chat_openai()(**options))
    assert lean == stock
    assert lean[0]["top_k"] == 3
    assert [m["role"] for m in lean[0]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
    ]


def test_openai_compatible_models_use_the_lean_client(stub: Callable[..., StubServer]) -> None:
    server = stub(lambda body: "hello")
    model = load_chat_model("stub-lean", server.base_url, 5.0, 0)
    assert isinstance(model, lean_chat_openai())
    assert model.invoke("hi").content == "hello"
    assert server.requests[-1].body["messages"] == [{"role": "user", "content": "hi"}]


def test_a_provider_without_its_package_says_which_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "langchain_ollama", None)  # as if not installed
    with pytest.raises(ModelConfigError, match="pip install langchain-ollama"):
        load_chat_model("ollama:qwen2.5-coder", "", 10.0, 0)
