"""Asking a self-hosted server its window: llama.cpp, vLLM and Ollama, played by the stub."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rlm_graph.models.servers import PROBES, is_local_url, server_window
from rlm_graph.offline.stub_server import LocalServer, StubServer
from rlm_graph.settings import Settings

Serve = Callable[..., StubServer]


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.__name__)
def test_each_kind_of_server_says_its_window(stub: Serve, probe: Callable[..., int]) -> None:
    server = stub(lambda body: "ok", local=LocalServer(window_tokens=8192))
    assert probe(server.base_url.removesuffix("/v1"), "stub-model") == 8192


def test_a_server_that_says_nothing_has_no_window(stub: Serve) -> None:
    server = stub(lambda body: "ok")
    assert server_window(server.base_url, "stub-model") is None
    assert server_window("http://127.0.0.1:9/v1", "stub-model") is None  # nothing listens
    assert server.requests == []  # probes are not model calls


def test_unset_windows_are_filled_from_the_server_and_set_ones_kept(stub: Serve) -> None:
    server = stub(lambda body: "ok", local=LocalServer(window_tokens=8192))
    asked = Settings(model="stub-root", base_url=server.base_url).with_server_windows()
    assert (asked.root_window, asked.sub_window) == (8192, 8192)

    kept = Settings(model="stub-root", base_url=server.base_url, sub_model_window_tokens=4000)
    assert kept.with_server_windows().sub_window == 4000
    assert Settings().with_server_windows().sub_window == 128_000  # a hosted API: the default


def test_local_urls_are_told_from_the_url_alone() -> None:
    local = ["http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://10.0.0.7/v1"]
    local += ["http://192.168.1.5:8000", "http://[::1]:8080/v1", "http://[fd00::5]/v1"]
    hosted = ["https://api.openai.com/v1", "http://8.8.8.8/v1", "http://gpu-box:8000/v1", ""]
    assert [is_local_url(url) for url in local] == [True] * len(local)
    assert [is_local_url(url) for url in hosted] == [False] * len(hosted)
