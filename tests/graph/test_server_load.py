"""A server holds many runs at once: no thread is held while a cell waits (issue 20).

`langgraph dev` runs coroutine nodes on its event loop; before, synchronous nodes ran
on its default thread pool, six threads on 2 cores, and runs went through in waves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from devserver import RUN_TIMEOUT, DevServer, prebuild_sandbox_factory, start_dev_server

from rlm_graph.offline.stub_server import StubReply, StubServer, is_root_request, last_user_text
from rlm_graph.offline.stub_server import tool_reply as tool

RUNS = 24
SUB_CALL_SECONDS = 2.0
CELL = "r = await llm_query('shout: ' + context)\nFINAL(r)"


class Waiting:
    """Root: one cell; sub-calls: answered after a pause, counting those in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        if is_root_request(body):
            return tool(CELL)
        self.in_flight += 1  # the stub answers each request on a thread of its own
        self.most = max(self.most, self.in_flight)
        time.sleep(SUB_CALL_SECONDS)
        self.in_flight -= 1
        return last_user_text(body).removeprefix("shout: ").upper()


@pytest.fixture
def busy_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevServer]:
    """`langgraph dev` allowed more concurrent runs than the test starts."""
    home = tmp_path / "rlm-home"
    prebuild_sandbox_factory(home, monkeypatch)
    server = start_dev_server(tmp_path, home, options=["--n-jobs-per-worker", str(2 * RUNS)])
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_concurrent_runs_wait_together_and_the_server_stays_responsive(
    busy_server: DevServer,
) -> None:
    from langgraph_sdk import get_client

    model = Waiting()
    with StubServer(model, port=busy_server.model_port) as stub:
        settings = {"model": "stub-root", "sub_model": "stub-sub", "base_url": stub.base_url}

        async def one(client: Any, i: int) -> dict[str, Any]:
            thread = await client.threads.create()
            state: dict[str, Any] = await client.runs.wait(
                thread["thread_id"],
                "rlm",
                input={"question": "q", "context": f"r{i}"},
                context=settings,
            )
            return state

        async def timed(count: int) -> tuple[float, list[dict[str, Any]], list[int]]:
            async with get_client(url=busy_server.url, api_key=None, timeout=RUN_TIMEOUT) as client:
                started = time.perf_counter()
                runs = asyncio.gather(*(one(client, i) for i in range(count)))
                pings = asyncio.create_task(ping_while_waiting(busy_server.url, model, count))
                states = await asyncio.wait_for(runs, 3 * RUN_TIMEOUT)
                return time.perf_counter() - started, states, await pings

        single, _, _ = asyncio.run(timed(1))
        model.most = 0
        together, states, pings = asyncio.run(timed(RUNS))
    where = f"\n--- server log ---\n{busy_server.log()}"
    assert [s.get("answer") for s in states] == [f"R{i}" for i in range(RUNS)], where
    assert model.most == RUNS, where  # every run's cell waited at the same time
    assert together < 2 * single, (together, single)  # not in waves of six
    assert pings and all(status == 200 for status in pings), pings


async def ping_while_waiting(url: str, model: Waiting, runs: int) -> list[int]:
    """``/ok`` asked while every run's sub-call is waiting, with less time than that wait."""
    while model.most < runs:
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(timeout=SUB_CALL_SECONDS / 2) as client:
        return [(await client.get(f"{url}/ok")).status_code for _ in range(3)]
