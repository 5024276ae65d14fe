"""Model names, credentials and token usage."""

from __future__ import annotations

import pytest

from rlm_graph.models.loading import missing_credentials, split_model_name
from rlm_graph.models.usage import add_usage


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
