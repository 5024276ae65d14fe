"""Shared fixtures: an isolated cache home, a stub model server, fast settings."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# A cache home of the tests' own, kept between runs: the sandbox factory takes ~15 s
# to build and is then loaded in milliseconds. Set before rlm_graph reads it.
os.environ.setdefault("RLM_GRAPH_HOME", os.path.join(tempfile.gettempdir(), "rlm-graph-tests"))
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGSMITH_TEST_TRACKING"] = "false"

from rlm_graph.offline.stub_server import Responder, StubServer


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
