"""Outside callers of `langgraph dev`: no key, no file, no other caller's thread.

One real server (deploy/langgraph.json: the project's graph with the example auth)
with the operator's key in its environment, one folder allowed for contexts, a model
stub at its one allowed base URL, and two users. A caller is an SDK client that may
send any settings and any input.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devserver import (
    PROJECT_ROOT,
    RUN_TIMEOUT,
    DevServer,
    prebuild_sandbox_factory,
    start_dev_server,
)
from support import Script, tool

from rlm_graph.offline.stub_server import StubReply, StubServer, all_text, is_root_request

KEY = "sk-operator-key-that-must-never-leave-0123456789"
SECRET_LINE = "THE-SERVER-SECRET-FILE"
SCRIPT = Script([tool("print(context[:80])\nFINAL(context.strip())")])
ALICE, BOB = "token-of-alice-0123456789", "token-of-bob-9876543210"


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
        env = {
            "OPENAI_API_KEY": KEY,
            "RLM_CONTEXT_ROOTS": str(allowed),
            "RLM_AUTH_TOKENS": f"alice={ALICE},bob={BOB}",
        }
        dev = start_dev_server(tmp, tmp / "home", env, PROJECT_ROOT / "deploy" / "langgraph.json")
    try:
        yield dev, allowed
    finally:
        dev.stop()


def client_of(dev: DevServer, token: str) -> Any:
    """An SDK client presenting ``token``."""
    from langgraph_sdk import get_client

    bearer = {"Authorization": f"Bearer {token}"}
    return get_client(url=dev.url, api_key=None, timeout=RUN_TIMEOUT, headers=bearer)


def run(dev: DevServer, graph_input: dict[str, Any], settings: dict[str, Any]) -> Any:
    """One run on a new thread, as any caller may start it: its final values or error."""

    async def go() -> Any:
        async with client_of(dev, ALICE) as client:
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


@pytest.mark.slow
def test_a_user_cannot_see_or_use_another_users_thread(server: tuple[DevServer, Path]) -> None:
    from langgraph_sdk.errors import NotFoundError

    dev, _ = server

    async def go() -> dict[str, Any]:
        async with client_of(dev, ALICE) as alice, client_of(dev, BOB) as bob:
            thread = (await alice.threads.create(metadata={"topic": "private"}))["thread_id"]
            seen = {"alice sees it": [t["thread_id"] for t in await alice.threads.search()]}
            seen["bob's search"] = [t["thread_id"] for t in await bob.threads.search()]
            for name, attempt in {
                "get": lambda: bob.threads.get(thread),
                "state": lambda: bob.threads.get_state(thread),
                "runs": lambda: bob.runs.list(thread),
                "run": lambda: bob.runs.create(thread, "rlm", input={"question": "q"}),
                "delete": lambda: bob.threads.delete(thread),
            }.items():
                with pytest.raises(NotFoundError):
                    await attempt()
                seen[name] = "404"
            seen["thread"] = thread
            return seen

    seen = asyncio.run(asyncio.wait_for(go(), 2 * RUN_TIMEOUT))
    assert seen["thread"] in seen["alice sees it"]
    assert seen["thread"] not in seen["bob's search"]


@pytest.mark.slow
def test_no_token_no_store_no_assistant_changes(server: tuple[DevServer, Path]) -> None:
    from langgraph_sdk import get_client
    from langgraph_sdk.errors import AuthenticationError, PermissionDeniedError

    dev, _ = server

    async def go() -> None:
        async with get_client(url=dev.url, api_key=None, timeout=RUN_TIMEOUT) as anonymous:
            with pytest.raises(AuthenticationError):
                await anonymous.threads.search()
        async with client_of(dev, "not-a-token") as stranger:
            with pytest.raises(AuthenticationError):
                await stranger.threads.create()
        async with client_of(dev, BOB) as bob:
            with pytest.raises(PermissionDeniedError):  # the runs' contexts live there
                await bob.store.search_items(("contexts",))
            assistant = (await bob.assistants.search(graph_id="rlm"))[0]["assistant_id"]
            with pytest.raises(PermissionDeniedError):
                await bob.assistants.update(assistant, context={"max_iterations": 1})

    asyncio.run(asyncio.wait_for(go(), 2 * RUN_TIMEOUT))


@pytest.mark.slow
def test_a_second_run_on_a_busy_thread_is_rejected_or_queued(
    server: tuple[DevServer, Path],
) -> None:
    """LangGraph's ``multitask_strategy``: ``reject`` is a 409, ``enqueue`` (the default) waits."""
    from langgraph_sdk.errors import ConflictError

    dev, _ = server
    busy, gate = threading.Event(), threading.Event()
    asked: list[str] = []  # the context of each run's model call, in order

    def gated(body: dict[str, Any]) -> StubReply | str:
        if is_root_request(body):
            # the second run's prompt shows the first's answer too, as history
            asked.append("context-two" if "context-two" in all_text(body) else "context-one")
            busy.set()
            gate.wait(RUN_TIMEOUT)
        return SCRIPT(body)

    async def go(model: StubServer) -> dict[str, Any]:
        settings = {"model": "stub", "base_url": model.base_url, "max_iterations": 3}
        async with client_of(dev, ALICE) as alice:
            thread = (await alice.threads.create())["thread_id"]

            async def start(context: str, strategy: str) -> str:
                run_input = {"question": "q", "context": context}
                created = await alice.runs.create(
                    thread, "rlm", input=run_input, context=settings, multitask_strategy=strategy
                )
                return str(created["run_id"])

            first = await start("context-one", "reject")
            assert await asyncio.to_thread(busy.wait, RUN_TIMEOUT)  # the first run is running
            with pytest.raises(ConflictError):
                await start("context-rejected", "reject")
            queued = await start("context-two", "enqueue")
            seen = {"queued while busy": (await alice.runs.get(thread, queued))["status"]}
            gate.set()
            for run in (first, queued):
                await alice.runs.join(thread, run)
            seen["ended"] = [
                (await alice.runs.get(thread, run))["status"] for run in (first, queued)
            ]
            seen["answer"] = (await alice.threads.get_state(thread))["values"].get("answer")
            return seen

    with StubServer(gated, port=dev.model_port) as model:
        try:
            seen = asyncio.run(asyncio.wait_for(go(model), 3 * RUN_TIMEOUT))
        finally:
            gate.set()
    assert seen == {
        "queued while busy": "pending",
        "ended": ["success", "success"],
        "answer": "context-two",
    }
    assert asked == ["context-one", "context-two"]  # one after the other; the rejected never ran
