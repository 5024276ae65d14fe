"""The call pool: threads for blocking model calls."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor

import pytest

from rlm_graph.subcalls.loop import CallPool


async def _gated_rounds(pool: Executor, in_flight: int, rounds: int, calls: int) -> None:
    """``rounds`` batches of ``calls`` short calls, at most ``in_flight`` at once (a broker)."""
    gate = asyncio.Semaphore(in_flight)
    loop = asyncio.get_running_loop()

    async def one() -> None:
        async with gate:
            await loop.run_in_executor(pool, time.sleep, 0.0005)

    for _ in range(rounds):
        await asyncio.gather(*(one() for _ in range(calls)))


def test_the_pool_has_as_many_threads_as_calls_in_flight_however_long_the_run() -> None:
    # Python 3.12's ThreadPoolExecutor grew to ~130 threads here (4 in flight), and to
    # 505 in a 100m-token oolong eval: threads are counted idle only on an empty queue.
    pool = CallPool(64, "test-call")
    asyncio.run(_gated_rounds(pool, in_flight=4, rounds=30, calls=32))
    assert pool.threads <= 4
    assert sum(t.name.startswith("test-call_") for t in threading.enumerate()) == pool.threads


def test_a_call_s_result_and_error_reach_the_caller() -> None:
    pool = CallPool(2, "test-result")
    assert pool.submit(lambda a, b: a + b, 2, b=3).result(timeout=5) == 5
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=5)
    assert pool.submit(str.upper, "again").result(timeout=5) == "AGAIN"
    assert pool.threads == 1
