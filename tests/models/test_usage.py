"""Model names, credentials and token usage."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rlm_graph.models.loading import load_chat_model, missing_credentials, split_model_name
from rlm_graph.models.messages import usage_of
from rlm_graph.models.usage import add_usage
from rlm_graph.offline.local_server import UsageForm
from rlm_graph.offline.stub_server import LocalServer, StubReply, StubServer


def test_model_names_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_model_name("anthropic:claude", "") == ("anthropic", "claude")
    assert split_model_name("qwen2.5-coder:7b", "http://h/v1") == ("openai", "qwen2.5-coder:7b")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    message = missing_credentials("openai:gpt-5", "")
    assert "OPENAI_API_KEY" in message and "--base-url" in message
    assert missing_credentials("gpt-5", "http://localhost:8000/v1") == ""


def test_usage_is_summed_per_model() -> None:
    total = add_usage(
        {"a": {"calls": 1, "input_tokens": 5}}, {"a": {"calls": 2}, "b": {"calls": 1}}
    )
    assert total == {"a": {"calls": 3, "input_tokens": 5}, "b": {"calls": 1}}


@pytest.mark.parametrize(("form", "cached"), [("openai", 40), ("timings", 40), ("bare", 0)])
def test_cached_tokens_are_read_where_each_server_reports_them(
    stub: Callable[..., StubServer], form: UsageForm, cached: int
) -> None:
    # vLLM: prompt_tokens_details; llama.cpp: its own timings.cache_n; others: nothing
    server = stub(lambda body: StubReply("ok", cached_tokens=40), local=LocalServer(usage=form))
    reply = load_chat_model(f"usage-{form}", server.base_url, 5.0, 0).invoke("hi")
    counts = usage_of(reply, "m")["m"]
    assert (counts["cached_tokens"], counts["input_tokens"], counts["output_tokens"]) == (
        cached,
        1,
        1,
    )
