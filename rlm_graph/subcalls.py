"""``llm_query`` / ``llm_batch``: the host side of sub-calls made by sandboxed code.

Sandbox callbacks run on eryx worker threads and must block until their answer is
ready, while the model clients are asynchronous (hundreds of concurrent requests on
one connection pool). So every sub-call runs on one background event loop owned by
this module, and a callback waits on it with a deadline shorter than the sandbox's own
callback timeout (a callback that outlives that timeout hangs the process in eryx).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import cache
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from rlm_graph.blobs import Blobs
from rlm_graph.context import Settings
from rlm_graph.models import load_chat_model
from rlm_graph.replies import message_text
from rlm_graph.state import add_usage
from rlm_graph.truncation import one_line

CHARS_PER_TOKEN = 3
# Threads for the synchronous graph nodes of sub-RLMs running on the background loop:
# each blocks one thread while its cell runs, so the pool must exceed the fan-out.
_EXECUTOR_THREADS = 256

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ChildResult:
    """What a sub-RLM run reports back to the sub-call that started it."""

    answer: str
    usage: dict[str, dict[str, int]]


RunChild = Callable[[str, Settings], Awaitable[ChildResult]]


@cache
def background_loop() -> asyncio.AbstractEventLoop:
    """The process's sub-call loop, started on first use in a daemon thread."""
    loop = asyncio.new_event_loop()
    loop.set_default_executor(ThreadPoolExecutor(_EXECUTOR_THREADS, "rlm-subcall"))
    threading.Thread(target=loop.run_forever, name="rlm-subcalls", daemon=True).start()
    return loop


class Budget:
    """Sub-calls left for a whole recursion tree, shared by every run in it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> bool:
        """Reserve ``count`` calls, all or nothing."""
        with self._lock:
            if self.used + count > self.limit:
                return False
            self.used += count
            return True

    @property
    def left(self) -> int:
        """Calls still allowed."""
        with self._lock:
            return self.limit - self.used


_BUDGETS: weakref.WeakValueDictionary[str, Budget] = weakref.WeakValueDictionary()


def open_budget(key: str, limit: int) -> Budget:
    """Start the budget of a root run's cell, findable by its sub-RLMs under ``key``."""
    budget = Budget(limit)
    _BUDGETS[key] = budget
    return budget


def shared_budget(key: str, fallback_limit: int) -> Budget:
    """The budget a sub-RLM draws from: its root's, or a fresh one if the root is gone."""
    budget = _BUDGETS.get(key)
    if budget is None:
        budget = open_budget(key, fallback_limit)
    return budget


class SubCallMemo:
    """Answers to the sub-call prompts of one sandbox, written as each one arrives.

    Identical prompts are answered once per sandbox. Because every answer is stored
    the moment it arrives, a run killed in the middle of a 200-prompt batch pays on
    resume only for the prompts that had not been answered yet. Without ``blobs`` the
    memo lives in memory only (tests, one-off sandboxes).
    """

    def __init__(self, blobs: Blobs | None = None, sandbox_id: str = "") -> None:
        self._blobs = blobs
        self._namespace = ("memo", sandbox_id)
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8", errors="surrogatepass")).hexdigest()

    def get(self, prompt: str) -> str | None:
        """The stored answer to ``prompt``, if it was asked before."""
        with self._lock:
            known = self._known.get(prompt)
        if known is not None or self._blobs is None:
            return known
        record = self._blobs.get(self._namespace, self._key(prompt))
        if record is None:
            return None
        with self._lock:
            self._known[prompt] = record["answer"]
        return str(record["answer"])

    def put(self, prompt: str, answer: str) -> None:
        """Remember an answer, durably when the memo has a store."""
        with self._lock:
            self._known[prompt] = answer
        if self._blobs is not None:
            self._blobs.put(self._namespace, self._key(prompt), {"answer": answer})


class SubCallBroker:
    """Answers the sub-calls of one cell; counts their usage and calls."""

    def __init__(
        self,
        settings: Settings,
        budget: Budget,
        *,
        run_child: RunChild | None = None,
        emit: Emit | None = None,
        memo: SubCallMemo | None = None,
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.memo = memo if memo is not None else SubCallMemo()
        self.usage: dict[str, dict[str, int]] = {}
        self.calls = 0
        self._run_child = run_child
        self._emit = emit
        self._lock = threading.Lock()
        self._in_flight: dict[str, asyncio.Future[str]] = {}
        self._active = 0

    @property
    def recursive(self) -> bool:
        """Whether a sub-call here is a full sub-RLM rather than a plain model call."""
        return self._run_child is not None and self.settings.depth + 1 < self.settings.max_depth

    # -- blocking entry points, called from sandbox callback threads ---------------------

    def query(self, prompt: str) -> dict[str, Any]:
        """Answer one prompt for ``llm_query``."""
        answer: dict[str, Any] = self._wait(self.aquery(prompt))
        return answer

    def batch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Answer prompts for ``llm_batch``, or refuse the batch as a whole."""
        answers: list[dict[str, Any]] | dict[str, Any] = self._wait(self.abatch(prompts))
        return answers

    def _wait(self, coro: Awaitable[Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), background_loop())
        try:
            return future.result(timeout=self.settings.cell_timeout)
        except FutureTimeout:
            future.cancel()
            limit = self.settings.cell_timeout
            return {"ok": False, "error": f"sub-call timed out after {limit:g} s (cell_timeout)"}

    # -- async implementation -------------------------------------------------------------

    async def aquery(self, prompt: str) -> dict[str, Any]:
        """One sub-call with budget, window check, cache and error capture."""
        if refusal := self._refusal(prompt):
            return {"ok": False, "error": refusal}
        if self.memo.get(prompt) is None and not self.budget.take(1):
            return {"ok": False, "error": self._budget_message(1)}
        return await self._answer_cached(prompt)

    async def abatch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Concurrent sub-calls, at most ``max_concurrency`` at once, answers in order.

        Only distinct prompts not answered before count against the budget.
        """
        distinct = {p for p in prompts if not self._refusal(p)}
        fresh = sum(1 for p in distinct if self.memo.get(p) is None)
        if not self.budget.take(fresh):
            return {"ok": False, "error": self._budget_message(fresh)}
        gate = asyncio.Semaphore(self.settings.max_concurrency)

        async def one(prompt: str) -> dict[str, Any]:
            if refusal := self._refusal(prompt):
                return {"ok": False, "error": refusal}
            async with gate:
                return await self._answer_cached(prompt)

        return list(await asyncio.gather(*(one(p) for p in prompts)))

    def _refusal(self, prompt: str) -> str:
        """Why a prompt cannot be sent as a plain call, or "" when it can."""
        if self.recursive:
            return ""
        window = self.settings.sub_model_window_tokens
        estimate = math.ceil(len(prompt) / CHARS_PER_TOKEN)
        if estimate <= window:
            return ""
        return (
            f"prompt of {len(prompt):,} characters (~{estimate:,} tokens) exceeds the sub "
            f"model's window of {window:,} tokens: split it into chunks of at most "
            f"{window * CHARS_PER_TOKEN:,} characters"
        )

    def _budget_message(self, wanted: int) -> str:
        return (
            f"sub-call budget exhausted: {wanted} requested, {self.budget.left} of "
            f"{self.budget.limit} left (max_sub_calls); answer from what you have"
        )

    async def _answer_cached(self, prompt: str) -> dict[str, Any]:
        """Identical prompts in a run are answered once, even while still in flight."""
        if (known := self.memo.get(prompt)) is not None:
            return {"ok": True, "value": known, "cached": True}
        pending = self._in_flight.get(prompt)
        if pending is None:
            pending = asyncio.ensure_future(self._answer(prompt))
            self._in_flight[prompt] = pending
        try:
            value = await asyncio.shield(pending)
        except Exception as exc:
            return {"ok": False, "error": one_line(exc)}
        finally:
            if pending.done():
                self._in_flight.pop(prompt, None)
        self.memo.put(prompt, value)
        return {"ok": True, "value": value}

    async def _answer(self, prompt: str) -> str:
        self._active += 1
        self._notify("sub_call_start")
        try:
            if self.recursive and self._run_child is not None:
                child = await self._run_child(prompt, self.settings)
                self._count(child.usage)
                return child.answer
            model = load_chat_model(
                self.settings.effective_sub_model,
                self.settings.effective_sub_base_url,
                self.settings.model_timeout,
                self.settings.model_max_retries,
            )
            reply = await model.ainvoke([HumanMessage(prompt)])
            self._count(usage_of(reply, self.settings.effective_sub_model))
            return message_text(reply) if isinstance(reply, AIMessage) else str(reply.content)
        finally:
            self._active -= 1
            self._notify("sub_call_end")

    def _count(self, usage: dict[str, dict[str, int]]) -> None:
        with self._lock:
            self.calls += 1
            self.usage = add_usage(self.usage, usage)

    def _notify(self, event: str) -> None:
        if self._emit is None:
            return
        try:
            self._emit(
                {"event": event, "depth": self.settings.depth + 1, "in_flight": self._active}
            )
        except Exception:  # progress display must never break a sub-call
            self._emit = None


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def usage_of(message: Any, model: str) -> dict[str, dict[str, int]]:
    """Token usage of one model reply, keyed by model name."""
    meta = getattr(message, "usage_metadata", None) or {}
    return {
        model: {
            "calls": 1,
            "input_tokens": int(meta.get("input_tokens", 0) or 0),
            "output_tokens": int(meta.get("output_tokens", 0) or 0),
        }
    }
