"""Opt-in runs against a real model; skipped unless one is configured.

Set RLM_TEST_BASE_URL (an OpenAI-compatible server) and/or RLM_TEST_API_KEY, and
RLM_TEST_MODEL (default openai:gpt-5-mini), optionally RLM_TEST_SUB_MODEL.
"""

from __future__ import annotations

import os
import random

import pytest

from rlm_graph import answer

BASE_URL = os.environ.get("RLM_TEST_BASE_URL", "")
API_KEY = os.environ.get("RLM_TEST_API_KEY", "")

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(
        not (BASE_URL or API_KEY), reason="no real model: set RLM_TEST_BASE_URL or RLM_TEST_API_KEY"
    ),
]


def test_real_model_finds_a_needle(monkeypatch: pytest.MonkeyPatch) -> None:
    if API_KEY:
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    rng = random.Random(3)
    words = ["north", "south", "amber", "willow", "copper", "meadow"]
    lines = [" ".join(rng.choice(words) for _ in range(10)) + "." for _ in range(40_000)]
    lines.insert(27_000, "One of the special magic numbers for falcon is: 5550231.")
    result = answer(
        "What is the special magic number for falcon? Answer with the number only.",
        "\n".join(lines),
        model=os.environ.get("RLM_TEST_MODEL", "openai:gpt-5-mini"),
        sub_model=os.environ.get("RLM_TEST_SUB_MODEL", ""),
        base_url=BASE_URL,
        max_iterations=10,
    )
    assert "5550231" in result.answer_text()
