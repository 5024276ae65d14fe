"""Where a coroutine's blocking steps run: on a thread, unless its caller's thread waits anyway.

The graph's nodes are coroutines (issue 20). Under a server's event loop each blocking
step (reading or writing a record, checking a sandbox out, asking the root model) goes
to a thread, so the loop never waits. A synchronous caller (``answer``, ``invoke``)
blocks its own thread until the node is done: there the node runs on a loop of that
thread's own (:func:`run_owned`) and its blocking steps run inline, as the synchronous
nodes did. Sending them to threads and back, and the node to a shared loop, cost ~1-2 ms
per iteration of a 50-iteration run (docs/benchmarks.md). Only the node's own task runs
them inline: tasks it starts (a cell's sub-calls, sub-RLMs) share its loop and still
use threads, so they never wait on one another.

Imports nothing of the package: every part may use it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from functools import partial
from typing import Any

# Threads for the short blocking steps of coroutines (records, sandbox checkouts), per
# loop: none waits on a model or a cell. Threads start only when needed.
OFFLOAD_THREADS = 32

_OWNER: ContextVar[asyncio.Task[Any] | None] = ContextVar("rlm_loop_owner", default=None)
_LOOPS = threading.local()


def owns_loop() -> bool:
    """Whether the running task may block its loop: its synchronous caller waits on it."""
    return _OWNER.get() is asyncio.current_task()


async def offload[**P, T](call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``call``'s result, inline when the loop is its caller's own, else from a thread."""
    if owns_loop():
        return call(*args, **kwargs)
    return await asyncio.to_thread(call, *args, **kwargs)


def run_owned[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end on this thread's own loop (the thread must run none).

    Tasks it started and left behind (a cancelled sub-call's answer) end before this
    returns, so none waits on a loop that may never run again.
    """
    own = _thread_loop()
    loop = own.loop
    try:
        return loop.run_until_complete(loop.create_task(_as_owner(coroutine)))
    finally:
        left = [task for task in own.started if not task.done()]
        own.started.clear()
        if left:
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))


async def _as_owner[T](coroutine: Coroutine[Any, Any, T]) -> T:
    _OWNER.set(asyncio.current_task())
    return await coroutine


def _thread_loop() -> _OwnLoop:
    """The calling thread's loop, made on first use.

    Kept, not made per call: a new loop costs ~40 us, and a run makes three calls an
    iteration.
    """
    own: _OwnLoop | None = getattr(_LOOPS, "own", None)
    if own is None:
        own = _LOOPS.own = _OwnLoop()
    return own


class _OwnLoop:
    """A thread's loop, closed when the thread ends and drops its locals.

    Tied to the thread's locals, which go when it ends. Tied to the ``Thread`` object
    instead, the loops of LangGraph's executor threads were never closed: ~5 file
    descriptors more per run (``tests/test_offload.py``).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(OFFLOAD_THREADS, "rlm-offload"))
        # The tasks started on it, for run_owned to end those left behind. Not
        # asyncio.all_tasks: it walks every task of the process, of every loop (~250
        # calls an iteration in the overhead bench, docs/benchmarks.md).
        self.started: set[asyncio.Task[Any]] = set()
        self.loop.set_task_factory(partial(_tracked, self.started))
        weakref.finalize(self, self.loop.close)


def _tracked[T](
    started: set[asyncio.Task[Any]],
    loop: asyncio.AbstractEventLoop,
    coroutine: Coroutine[Any, Any, T],
    **options: Any,
) -> asyncio.Task[T]:
    """A task of an owned loop, noted in ``started``.

    A set of its own, not the ``_OwnLoop``'s attribute through ``self``: the loop would
    then hold its owner, a cycle that kept it open past its thread until a collection.
    """
    task = asyncio.Task(coroutine, loop=loop, **options)
    started.add(task)
    return task
