"""Settings: validation, defaults, and the README table."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from rlm_graph.settings import Settings


def test_settings_validation_and_sub_model_defaults() -> None:
    assert Settings().effective_sub_model == "openai:gpt-5-mini"
    assert Settings(model="qwen", base_url="http://x/v1").effective_sub_model == "qwen"
    assert Settings(model="a", sub_model="b").effective_sub_model == "b"
    assert Settings(base_url="u").effective_sub_base_url == "u"
    with pytest.raises(ValueError, match="max_depth=0"):
        Settings(max_depth=0)
    with pytest.raises(ValueError, match="cell_timeout"):
        Settings(cell_timeout=-1)
    with pytest.raises(ValueError, match="4096"):
        Settings(sandbox_memory_mb=8000)
    with pytest.raises(
        ValueError, match="sub_rlm_executor='dask' is unknown: use 'local' or 'ray'"
    ):
        Settings(sub_rlm_executor="dask")


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [f.name for f in fields(Settings) if f"| `{f.name}` |" not in readme]
    assert missing == []


def test_a_local_server_gets_the_local_profile_and_explicit_settings_win() -> None:
    hosted = Settings()
    assert (hosted.max_concurrency, hosted.model_timeout, hosted.model_max_retries) == (16, 180, 2)
    assert hosted.reply_max_tokens == 0 and hosted.prices == {}

    local = Settings(model="qwen", base_url="http://127.0.0.1:8080/v1")
    assert local.is_local
    assert (local.max_concurrency, local.model_timeout, local.model_max_retries) == (2, 600, 0)
    assert local.reply_max_tokens == 2048
    assert local.prices == {"qwen": {"input": 0.0, "output": 0.0, "cached_input": 0.0}}

    given = Settings(
        model="qwen",
        base_url="http://192.168.1.5:8000/v1",
        max_concurrency=16,
        model_max_retries=2,
        prices={"qwen": {"input": 0.1}},
    )
    assert (given.max_concurrency, given.model_max_retries, given.model_timeout) == (16, 2, 600)
    assert given.prices == {"qwen": {"input": 0.1}}


def test_the_profile_can_be_named_whatever_the_url() -> None:
    # a proxy on localhost to a hosted API; a LAN server known by name
    proxy = Settings(model="gpt-5", base_url="http://localhost:4000/v1", server_profile="hosted")
    assert (proxy.is_local, proxy.max_concurrency, proxy.prices) == (False, 16, {})
    named = Settings(model="qwen", base_url="http://gpu-box:8000/v1")
    assert not named.is_local
    assert Settings(model="qwen", base_url="http://gpu-box:8000/v1", server_profile="local").prices
    ollama = Settings(model="openai:gpt-5", sub_model="ollama:qwen2.5-coder")
    assert ollama.is_local and list(ollama.prices) == ["ollama:qwen2.5-coder"]
    with pytest.raises(ValueError, match="server_profile='laptop' is unknown"):
        Settings(server_profile="laptop")


def test_the_reply_cap_leaves_most_of_a_small_window_to_the_prompt() -> None:
    local = Settings(model="qwen", base_url="http://127.0.0.1:8080/v1", root_window_tokens=2048)
    assert local.reply_cap("qwen") == 512  # vLLM refuses prompt + max_tokens past the window
    assert replace(local, root_window_tokens=32_768).reply_cap("qwen") == 2048
    assert Settings().reply_cap("openai:gpt-5") == 0
