"""Shared fixtures: an isolated cache home, a stub model server, fast settings."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# A cache home of the tests' own, kept between runs: the sandbox factory takes ~15 s
# to build and is then loaded in milliseconds. Set before rlm_graph reads it.
os.environ.setdefault("RLM_GRAPH_HOME", os.path.join(tempfile.gettempdir(), "rlm-graph-tests"))
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGSMITH_TEST_TRACKING"] = "false"

from devserver import DevServer, prebuild_sandbox_factory, start_dev_server

from rlm_graph.offline.stub_server import Responder, StubModel, StubServer


@pytest.fixture
def stub() -> Iterator[Callable[[Responder], StubServer]]:
    """Start stub servers for a test; all are stopped afterwards."""
    servers: list[StubServer] = []

    def start(responder: Responder, **kwargs: Any) -> StubServer:
        server = StubServer(responder, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def dev_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevServer]:
    pytest.importorskip("langgraph_sdk")
    pytest.importorskip("langgraph_api")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    home = tmp_path / "rlm-home"
    prebuild_sandbox_factory(home, monkeypatch)
    server = start_dev_server(tmp_path, home)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def in_process() -> Callable[[Responder], tuple[StubModel, dict[str, Any]]]:
    """Scripted models answered in this process (no socket): the model and the run config.

    The graph uses the clients the config supplies (``rlm_models``) for the names
    ``stub-root`` and ``stub-sub``; pass ``IN_PROCESS_SETTINGS`` as the run's settings.
    """

    def make(responder: Responder) -> tuple[StubModel, dict[str, Any]]:
        model = StubModel(responder)
        clients = {name: model.chat_model(name) for name in ("stub-root", "stub-sub")}
        return model, {"configurable": {"rlm_models": clients}}

    return make
