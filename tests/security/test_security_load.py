"""Load: many runs at once, each in its own sandbox, nothing shared, nothing left behind."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from devserver import RUN_TIMEOUT, DevServer
from support import Script, fast_settings, python_probe, tool

from rlm_graph import RLMResult, aanswer, answer
from rlm_graph.offline.stub_server import Responder, StubServer
from rlm_graph.repl.process import sandbox_processes
from rlm_graph.repl.registry import REGISTRY

Start = Callable[[Responder], StubServer]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNS = 32

# Two cells, so each run's variables must survive between iterations of its own sandbox;
# the answer lists every `secret_*` the sandbox can see, which must be its own only.
CELL_1 = (
    "tag = context.split(':')[0]\n"
    "globals()['secret_' + tag] = context\n"
    "reply = await llm_query('echo ' + tag)"
)
CELL_2 = "FINAL([sorted(k for k in globals() if k.startswith('secret_')), reply, len(context)])"
SCRIPT = Script([tool(CELL_1), tool(CELL_2)], sub=str.upper)


def context_of(i: int) -> str:
    return f"run{i}:" + "x" * (1_000 + i)


def expected(i: int) -> list[Any]:
    return [[f"secret_run{i}"], f"ECHO RUN{i}", len(context_of(i))]


def live_sandboxes() -> int:
    """Sandboxes still open, counted as processes (each sandbox has its own, plus a spare).

    Waits for builds still running in the background, and for closed children to exit
    (a child ends when its socket closes, a moment after).
    """
    for thread in threading.enumerate():
        if thread.name.startswith("rlm-prepare"):
            thread.join(timeout=60)
    gc.collect()
    deadline, count = time.monotonic() + 30, -1
    while count != (count := len(sandbox_processes())) and time.monotonic() < deadline:
        time.sleep(0.25)  # children still exiting: wait until the count holds still
    return count


def check(results: list[RLMResult]) -> None:
    assert [r.status for r in results] == ["answered"] * RUNS
    assert [r.answer for r in results] == [expected(i) for i in range(RUNS)]


@pytest.mark.slow
def test_32_concurrent_runs_in_threads_each_have_their_own_sandbox(stub: Start) -> None:
    settings = fast_settings(stub(SCRIPT))
    before, registered = live_sandboxes(), len(REGISTRY)
    with ThreadPoolExecutor(RUNS) as pool:
        results = list(pool.map(lambda i: answer("q", context_of(i), **settings), range(RUNS)))
    check(results)
    assert len(REGISTRY) <= registered  # every run released its sandbox (idle ones may go)
    assert live_sandboxes() <= before + 1  # at most a new warm spare (no sandbox leak)


@pytest.mark.slow
def test_32_concurrent_runs_under_asyncio_each_have_their_own_sandbox(stub: Start) -> None:
    settings = fast_settings(stub(SCRIPT))
    before, registered = live_sandboxes(), len(REGISTRY)

    async def all_runs() -> list[RLMResult]:
        runs = (aanswer("q", context_of(i), **settings) for i in range(RUNS))
        return list(await asyncio.gather(*runs))

    check(asyncio.run(all_runs()))
    assert len(REGISTRY) <= registered
    assert live_sandboxes() <= before + 1


LOOP_PROBE = """
import threading
import time
from rlm_graph.subcalls.broker import background_loop
barrier, loops = threading.Barrier(32), []
def first_use():
    barrier.wait()
    loops.append(id(background_loop()))
threads = [threading.Thread(target=first_use) for _ in range(32)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(len(set(loops)))
"""


def test_runs_starting_at_once_share_one_sub_call_loop() -> None:
    """In a fresh process: the first sub-calls of concurrent runs must not race."""
    done = python_probe(LOOP_PROBE, timeout=60)
    assert done.stdout.strip() == "1", done.stderr[-1_000:]


MEMORY_PROBE = """
import asyncio, ctypes, gc, json, os, sys
from concurrent.futures import ThreadPoolExecutor
sys.path[:0] = {paths!r}
import test_security_load as load
from rlm_graph import aanswer, answer
from rlm_graph.offline.stub_server import StubServer

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def settled():
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back to the OS
    return rss_mb()

with StubServer(load.SCRIPT) as server:
    settings = load.fast_settings(server)
    for i in range(2):  # load the runtime, the clients and the graph once
        answer("q", load.context_of(i), **settings)
    baseline = settled()
    with ThreadPoolExecutor(load.RUNS) as pool:
        list(pool.map(lambda i: answer("q", load.context_of(i), **settings), range(load.RUNS)))
    async def all_runs():
        return await asyncio.gather(*(aanswer("q", load.context_of(i), **settings)
                                      for i in range(load.RUNS)))
    asyncio.run(all_runs())
    print(json.dumps({{"baseline": baseline, "after": settled()}}))
"""


@pytest.mark.slow
def test_memory_returns_to_baseline_after_64_runs() -> None:
    """Measured in a fresh process, so other tests' sessions and caches do not count.

    Sandboxes live in child processes, whose memory the system takes back when they
    end (the load tests above check that they do); this checks the host itself.
    """
    here = Path(__file__).parent
    probe = MEMORY_PROBE.format(paths=[str(here), str(here.parent)])
    done = python_probe(probe, timeout=300)
    assert done.returncode == 0, done.stderr[-2_000:]
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    assert memory["after"] <= 1.10 * memory["baseline"], memory


@pytest.mark.slow
def test_8_concurrent_runs_through_langgraph_dev(dev_server: DevServer) -> None:
    from langgraph_sdk import get_client

    count = 8
    with StubServer(SCRIPT, port=dev_server.model_port) as model:
        settings = {
            "model": "stub-root",
            "sub_model": "stub-sub",
            "base_url": model.base_url,
            "max_iterations": 6,
        }

        async def one(client: Any, i: int) -> Any:
            thread = await client.threads.create()
            return await client.runs.wait(
                thread["thread_id"],
                "rlm",
                input={"question": "q", "context": context_of(i)},
                context=settings,
            )

        async def all_runs() -> list[Any]:
            async with get_client(url=dev_server.url, api_key=None, timeout=RUN_TIMEOUT) as client:
                runs = asyncio.gather(*(one(client, i) for i in range(count)))
                return list(await asyncio.wait_for(runs, 3 * RUN_TIMEOUT))

        results = asyncio.run(all_runs())
    where = f"\n--- server log ---\n{dev_server.log()}"
    assert [r.get("status") for r in results] == ["answered"] * count, f"{results}{where}"
    assert [r.get("answer") for r in results] == [expected(i) for i in range(count)], where
