"""An outside caller of `langgraph dev`: no key, no file of the server reaches them.

One real server (the project's langgraph.json) with the operator's key in its
environment, one folder allowed for contexts, and a model stub at its one allowed base
URL. The caller is an SDK client that may send any settings and any input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devserver import RUN_TIMEOUT, DevServer, prebuild_sandbox_factory, start_dev_server
from support import Script, tool

from rlm_graph.offline.stub_server import StubServer

KEY = "sk-operator-key-that-must-never-leave-0123456789"
SECRET_LINE = "THE-SERVER-SECRET-FILE"
SCRIPT = Script([tool("print(context[:80])\nFINAL(context.strip())")])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, Path]]:
    """The server, and the one folder its operator allows contexts from."""
    pytest.importorskip("langgraph_api")
    tmp = tmp_path_factory.mktemp("server")
    allowed = tmp / "allowed"
    allowed.mkdir()
    (allowed / "notes.txt").write_text("allowed notes\n")
    (allowed / "escape").symlink_to(tmp / "secret.txt")
    (tmp / "secret.txt").write_text(SECRET_LINE)
    with pytest.MonkeyPatch.context() as patch:
        prebuild_sandbox_factory(tmp / "home", patch)
        env = {"OPENAI_API_KEY": KEY, "RLM_CONTEXT_ROOTS": str(allowed)}
        dev = start_dev_server(tmp, tmp / "home", env)
    try:
        yield dev, allowed
    finally:
        dev.stop()


def run(dev: DevServer, graph_input: dict[str, Any], settings: dict[str, Any]) -> Any:
    """One run on a new thread, as any caller may start it: its final values or error."""
    from langgraph_sdk import get_client

    async def go() -> Any:
        async with get_client(url=dev.url, api_key=None, timeout=RUN_TIMEOUT) as client:
            thread = await client.threads.create()
            return await client.runs.wait(
                thread["thread_id"], "rlm", input=graph_input, context=settings, raise_error=False
            )

    return asyncio.run(asyncio.wait_for(go(), 2 * RUN_TIMEOUT))


@pytest.mark.slow
def test_a_base_url_of_the_callers_choice_gets_no_key(server: tuple[DevServer, Path]) -> None:
    dev, _ = server
    with StubServer(SCRIPT) as capture:  # the caller's own server
        result = run(dev, {"question": "q", "context": "c"}, {"base_url": capture.base_url})
        assert capture.requests == [], [r.headers for r in capture.requests]
    assert "not allowed on this server" in str(result), result
    assert KEY not in str(result)


@pytest.mark.slow
def test_context_paths_outside_the_allowed_folder_are_refused(
    server: tuple[DevServer, Path],
) -> None:
    dev, allowed = server
    with StubServer(SCRIPT, port=dev.model_port) as model:
        settings = {"model": "stub", "base_url": model.base_url, "max_iterations": 3}
        escapes = [
            "/etc/passwd",
            "/proc/self/environ",
            str(allowed / "escape"),  # a symlink out of the folder
            str(allowed / ".." / "secret.txt"),
            "../secret.txt",  # relative to the allowed folder
        ]
        for path in escapes:
            result = run(dev, {"question": "q", "context_path": path}, settings)
            assert result.get("status") == "failed", (path, result)
            assert "outside the allowed folders" in result.get("error", ""), (path, result)
            assert SECRET_LINE not in str(result) and "root:" not in str(result)
            assert KEY not in str(result)
        assert model.requests == []  # nothing was read, so the model never saw a preview
        result = run(dev, {"question": "q", "context_path": str(allowed / "notes.txt")}, settings)
    assert (result.get("status"), result.get("answer")) == ("answered", "allowed notes"), result
