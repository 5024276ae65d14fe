"""Blocking steps of coroutines: inline on a synchronous caller's own loop, else on threads."""

from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor

from rlm_graph.offload import offload, run_owned
from rlm_graph.subcalls.loop import background_loop, in_call_pool, run_blocking


def where() -> int:
    return threading.get_ident()


async def steps() -> dict[str, int]:
    """Where a coroutine's own steps ran, and where those of a task it started ran."""

    async def started() -> int:
        return await offload(where)

    return {
        "loop": where(),
        "own": await offload(where),
        "call": await in_call_pool(where),
        "task": await asyncio.create_task(started()),
    }


def test_a_synchronous_callers_coroutine_runs_its_steps_on_its_thread() -> None:
    ran = run_owned(steps())
    assert ran["loop"] == ran["own"] == ran["call"] == threading.get_ident()
    assert ran["task"] != ran["loop"]  # a task it started never blocks the loop


def test_under_a_shared_loop_every_step_goes_to_a_thread() -> None:
    ran = asyncio.run(steps())
    assert ran["loop"] == threading.get_ident()
    assert ran["own"] != ran["loop"]
    assert ran["call"] != ran["loop"]
    assert ran["task"] != ran["loop"]


def test_run_blocking_inside_a_running_loop_uses_the_background_loop() -> None:
    async def notebook() -> dict[str, int]:  # answer() called where a loop already runs
        return run_blocking(steps())

    ran = asyncio.run(notebook())
    assert ran["loop"] != threading.get_ident()
    assert ran["loop"] == run_blocking_thread()


def run_blocking_thread() -> int:
    async def here() -> int:
        return where()

    return asyncio.run_coroutine_threadsafe(here(), background_loop()).result()


def test_tasks_left_behind_end_before_run_owned_returns() -> None:
    left: list[asyncio.Task[None]] = []

    async def leaves_a_task() -> None:
        left.append(asyncio.create_task(asyncio.sleep(3600)))

    run_owned(leaves_a_task())
    assert left[0].cancelled()


def test_each_thread_has_a_loop_of_its_own() -> None:
    async def loop_id() -> int:
        return id(asyncio.get_running_loop())

    here = run_owned(loop_id())
    assert run_owned(loop_id()) == here  # kept between calls
    elsewhere: list[int] = []
    thread = threading.Thread(target=lambda: elsewhere.append(run_owned(loop_id())))
    thread.start()
    thread.join()
    assert elsewhere[0] != here


def test_a_threads_loop_is_closed_when_the_thread_ends() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def keep() -> None:
        loops.append(asyncio.get_running_loop())

    for _ in range(3):  # as LangGraph runs nodes: on threads of a pool made per run
        with ThreadPoolExecutor(1) as pool:
            pool.submit(run_owned, keep()).result()
    gc.collect()
    assert all(loop.is_closed() for loop in loops)
