"""Where sub-calls run: one background event loop per process, and a pool for model calls.

The graph's nodes are coroutines: under a server (``astream``) they run on its event
loop, and a cell waiting on sub-calls holds no thread. Synchronous callers (``answer``,
``invoke``) and the callbacks of an in-process sandbox, which run on eryx worker threads,
block until their coroutine is done on one background event loop instead, with a
deadline shorter than the sandbox's own callback timeout (a callback that outlives that
timeout hangs the process in eryx). These are process-wide on purpose: model clients
and their connection pools are shared by every run of the process.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import cache, partial
from queue import SimpleQueue
from typing import Any

from rlm_graph.offload import OFFLOAD_THREADS, owns_loop, run_owned

_CALL_THREADS = 512
_LOOP_LOCK = threading.Lock()


class CallPool(Executor):
    """Up to ``size`` threads for blocking calls, a new one only when every one is busy.

    Not a ``ThreadPoolExecutor``: Python 3.12's counts a thread idle only when it finds
    no call queued after its last one, so when a finishing thread takes the call an idle
    one was counted for, that idle thread is never counted again (CPython gh-88354, made
    worse by gh-102024). The pool grew with the run, never with the load: 505 threads
    after 2,600 sub-calls of 16 at a time (`rlm eval --offline --task oolong --size
    100m`), each keeping its stack and its share of malloc's arenas. Here a thread counts
    itself idle before it hands its result over, so the caller it wakes, which may send
    the next call at once, finds it counted.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size, self._name = size, name
        self._calls: SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = SimpleQueue()
        self._lock = threading.Lock()
        self.threads = 0
        self._idle = 0

    def submit[T](self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)``; start a thread for it only if none is idle."""
        future: Future[T] = Future()
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self.threads < self._size:
                self.threads += 1
                name = f"{self._name}_{self.threads}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
        self._calls.put((future, partial(fn, *args, **kwargs)))
        return future

    def _serve(self) -> None:
        while True:
            self._run(*self._calls.get())

    def _run(self, future: Future[Any], call: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():
            self._count_idle()
            return
        try:
            result = call()
        except BaseException as exc:
            self._count_idle()
            future.set_exception(exc)
        else:
            self._count_idle()
            future.set_result(result)

    def _count_idle(self) -> None:
        with self._lock:
            self._idle += 1


# Threads for plain sub-calls, which use the model's synchronous client. On a shared
# 2-core machine the client's CPU per request, not the model's latency, paced a batch of
# 128 concurrent calls, and the asynchronous stack (LangChain, openai, httpx, anyio on
# one event loop) spends about twice the CPU per request of the synchronous one: 200
# calls of 0.3 s at concurrency 128 took 1.4-1.9 s with ``ainvoke`` and 0.8-1.0 s on
# threads (docs/benchmarks.md). The pool is apart from the loop's default executor, on
# which nodes do their file work, so neither can starve the other; beyond its size,
# calls queue. Threads start only when needed. A sub-call cancelled by a cell timeout
# leaves its thread to finish within ``model_timeout``.
CALL_POOL = CallPool(_CALL_THREADS, "rlm-call")


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's sub-call loop, started on first use in a daemon thread.

    Locked, because ``functools.cache`` is not: 32 runs starting at once each made a
    loop of their own, and the model clients they share, bound to one loop, then
    failed on the others ("Event ... is bound to a different event loop").
    """
    with _LOOP_LOCK:
        return _start_loop()


@cache
def _start_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(OFFLOAD_THREADS, "rlm-subcall"))
    threading.Thread(target=loop.run_forever, name="rlm-subcalls", daemon=True).start()
    return loop


def run_blocking[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from synchronous code (a node under ``invoke``).

    It runs in a copy of the caller's context (LangGraph's config and stream writer
    travel in context variables): on the thread's own loop (``offload.run_owned``),
    or on the background loop when the thread already runs one (``answer()`` called
    in a notebook). The caller must not be on the background loop: it would wait on
    itself.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_owned(coroutine)
    return asyncio.run_coroutine_threadsafe(coroutine, background_loop()).result()


async def in_call_pool[T](call: Callable[[], T]) -> T:
    """A blocking model call on the call pool, awaited without holding the loop.

    Made inline when the loop is the caller's own (``offload``): its thread waits anyway.
    """
    if owns_loop():
        return call()
    context = contextvars.copy_context()  # tracing and config follow the call
    return await asyncio.get_running_loop().run_in_executor(CALL_POOL, context.run, call)
