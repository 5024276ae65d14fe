"""``llm_query`` / ``llm_batch``: the host side of sub-calls made by sandboxed code.

Sandbox callbacks run on eryx worker threads and must block until their answer is
ready, while the model clients are asynchronous (hundreds of concurrent requests on
one connection pool). So every sub-call runs on one background event loop owned by
this module, and a callback waits on it with a deadline shorter than the sandbox's own
callback timeout (a callback that outlives that timeout hangs the process in eryx).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import math
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import cache
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langsmith.run_trees import RunTree

from rlm_graph.models.loading import load_chat_model
from rlm_graph.models.messages import message_text, usage_of
from rlm_graph.models.usage import Usage, add_usage
from rlm_graph.observe.tracing import under
from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.text import one_line, preview

CHARS_PER_TOKEN = 3
# Threads for the synchronous graph nodes of sub-RLMs running on the background loop:
# each blocks one thread while its cell runs, so the pool must exceed the fan-out.
_EXECUTOR_THREADS = 256
_CALL_THREADS = 512

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ChildResult:
    """What a sub-RLM run reports back to the sub-call that started it."""

    answer: str
    usage: dict[str, dict[str, int]]


RunChild = Callable[[str, Settings, Emit | None], Awaitable[ChildResult]]


_LOOP_LOCK = threading.Lock()

# Threads for plain sub-calls, which use the model's synchronous client. On a shared
# 2-core machine the client's CPU per request, not the model's latency, paced a batch of
# 128 concurrent calls, and the asynchronous stack (LangChain, openai, httpx, anyio on
# one event loop) spends about twice the CPU per request of the synchronous one: 200
# calls of 0.3 s at concurrency 128 took 1.4-1.9 s with ``ainvoke`` and 0.8-1.0 s on
# threads (docs/benchmarks.md). The pool is apart from the loop's default executor, on
# which sub-RLM graph nodes block, so neither can starve the other; beyond its size,
# calls queue. Threads start only when needed. A sub-call cancelled by a cell timeout
# leaves its thread to finish within ``model_timeout``.
CALL_POOL = ThreadPoolExecutor(_CALL_THREADS, "rlm-call")


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
    loop.set_default_executor(ThreadPoolExecutor(_EXECUTOR_THREADS, "rlm-subcall"))
    threading.Thread(target=loop.run_forever, name="rlm-subcalls", daemon=True).start()
    return loop


class Budget:
    """Sub-calls left for a whole recursion tree, and its spend, shared by every run in it.

    ``spent`` starts at what the root had spent before the cell and grows with every
    model call anywhere in the tree as it happens, so a cost limit stops a fan-out
    midway rather than after it.
    """

    def __init__(self, limit: int, spent: Usage | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.spent: Usage = dict(spent or {})
        self._lock = threading.Lock()

    def spend(self, usage: Usage) -> None:
        """Add one model call's usage to the tree's spend."""
        with self._lock:
            self.spent = add_usage(self.spent, usage)

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


def open_budget(key: str, limit: int, spent: Usage | None = None) -> Budget:
    """Start the budget of a root run's cell, findable by its sub-RLMs under ``key``."""
    budget = Budget(limit, spent)
    _BUDGETS[key] = budget
    return budget


def shared_budget(key: str, fallback_limit: int) -> Budget:
    """The budget a sub-RLM draws from: its root's, or a fresh one if the root is gone."""
    budget = _BUDGETS.get(key)
    if budget is None:
        budget = open_budget(key, fallback_limit)
    return budget


def memo_scope(settings: Settings) -> str:
    """What answers this run's sub-calls: the same prompt to another model is another question.

    A follow-up question on a thread may change the sub model (or the depth); answers
    remembered for the old one must not be served for the new one.
    """
    answerer: list[Any] = [settings.effective_sub_model, settings.effective_sub_base_url]
    if settings.depth + 1 < settings.max_depth:  # sub-RLMs: the root model answers too
        answerer += [settings.model, settings.base_url, settings.max_depth - settings.depth]
    payload = json.dumps(answerer).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


class SubCallMemo:
    """Answers to the sub-call prompts of one sandbox, written as each one arrives.

    Identical prompts are answered once per sandbox. Because every answer is stored
    the moment it arrives, a run killed in the middle of a 200-prompt batch pays on
    resume only for the prompts that had not been answered yet. Without ``blobs`` the
    memo lives in memory only (tests, one-off sandboxes).
    """

    def __init__(self, blobs: Blobs | None = None, sandbox_id: str = "", scope: str = "") -> None:
        self._blobs = blobs
        self._namespace = ("memo", sandbox_id, scope) if scope else ("memo", sandbox_id)
        self._known: dict[str, str] = {}
        # Prompts looked up and not found. A sandbox runs one cell at a time and this memo
        # serves one cell, so only its own ``put`` can answer them later.
        self._missing: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _key(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8", errors="surrogatepass")).hexdigest()

    def prefetch(self, prompts: set[str]) -> None:
        """Look up many prompts in one round trip (a batch of 200 on a database store)."""
        with self._lock:
            unknown = [p for p in prompts if p not in self._known and p not in self._missing]
        if self._blobs is None or not unknown:
            return
        keys = [self._key(p) for p in unknown]
        found = self._blobs.get_many(self._namespace, keys)
        with self._lock:
            for prompt, key in zip(unknown, keys, strict=True):
                if key in found:
                    self._known[prompt] = str(found[key]["answer"])
                else:
                    self._missing.add(prompt)

    def get(self, prompt: str) -> str | None:
        """The stored answer to ``prompt``, if it was asked before."""
        self.prefetch({prompt})
        with self._lock:
            return self._known.get(prompt)

    def put(self, prompt: str, answer: str) -> None:
        """Remember an answer, durably when the memo has a store."""
        with self._lock:
            self._known[prompt] = answer
            self._missing.discard(prompt)
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
        trace_parent: RunTree | None = None,
        trace_metadata: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._trace_parent = trace_parent  # the cell's LangSmith run (see tracing.py)
        self._trace_metadata = trace_metadata or {}
        self.budget = budget
        self.memo = memo if memo is not None else SubCallMemo()
        self.usage: dict[str, dict[str, int]] = {}
        self.calls = 0
        self._run_child = run_child
        self._emit = emit
        self._lock = threading.Lock()
        self._in_flight: dict[str, asyncio.Future[tuple[str, Usage]]] = {}
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
        if self.memo.get(prompt) is None:
            if stop := self._cost_stop():
                return {"ok": False, "error": stop}
            if not self.budget.take(1):
                return {"ok": False, "error": self._budget_message(1)}
        return await self._answer_cached(prompt)

    async def abatch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Concurrent sub-calls, at most ``max_concurrency`` at once, answers in order.

        Only distinct prompts not answered before count against the budget.
        """
        if len(prompts) > self.settings.max_batch_size:
            return {"ok": False, "error": self._batch_message(len(prompts))}
        distinct = {p for p in prompts if not self._refusal(p)}
        self.memo.prefetch(distinct)
        fresh = sum(1 for p in distinct if self.memo.get(p) is None)
        if fresh and (stop := self._cost_stop()):
            return {"ok": False, "error": stop}
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
        """Why a prompt cannot be sent, or "" when it can."""
        if len(prompt) > self.settings.max_prompt_chars:
            return (
                f"prompt of {len(prompt):,} characters exceeds max_prompt_chars="
                f"{self.settings.max_prompt_chars:,}: pass a slice of the data, not all of it"
            )
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

    def _cost_stop(self) -> str:
        """The message for a sub-call refused because a cost limit is reached, or ""."""
        reason = self.settings.over_budget(self.budget.spent)
        return f"{reason}; no more sub-calls: answer from what you have" if reason else ""

    def _batch_message(self, size: int) -> str:
        limit = self.settings.max_batch_size
        return (
            f"llm_batch of {size:,} prompts exceeds max_batch_size={limit:,}: send at most "
            f"{limit:,} prompts per call (and mind the sub-call budget, {self.budget.left:,} left)"
        )

    def _budget_message(self, wanted: int) -> str:
        return (
            f"sub-call budget exhausted: {wanted} requested, {self.budget.left} of "
            f"{self.budget.limit} left (max_sub_calls); answer from what you have"
        )

    async def _answer_cached(self, prompt: str) -> dict[str, Any]:
        """Identical prompts in a run are answered once, even while still in flight."""
        call_id = uuid.uuid4().hex[:12]
        started = time.perf_counter()
        self._started(call_id, prompt)
        if (known := self.memo.get(prompt)) is not None:
            self._ended(call_id, started, {"ok": True, "value": known}, cached=True)
            return {"ok": True, "value": known, "cached": True}
        pending = self._in_flight.get(prompt)
        joined = pending is not None
        if pending is None:
            pending = asyncio.ensure_future(self._answer(prompt, call_id))
            self._in_flight[prompt] = pending
        try:
            value, usage = await asyncio.shield(pending)
        except Exception as exc:
            failure = {"ok": False, "error": one_line(exc)}
            self._ended(call_id, started, failure, cached=joined)
            return failure
        finally:
            if pending.done():
                self._in_flight.pop(prompt, None)
        self.memo.put(prompt, value)
        answer = {"ok": True, "value": value}
        self._ended(call_id, started, answer, cached=joined, usage={} if joined else usage)
        return answer

    async def _answer(self, prompt: str, call_id: str) -> tuple[str, Usage]:
        """The answer and what it cost (a sub-RLM's cost is its whole tree's)."""
        with under(self._trace_parent):
            if self.recursive and self._run_child is not None:
                child = await self._run_child(prompt, self.settings, self._forward(call_id))
                self._count(child.usage, spent_live=False)
                return child.answer, child.usage
            model = load_chat_model(
                self.settings.effective_sub_model,
                self.settings.effective_sub_base_url,
                self.settings.model_timeout,
                self.settings.model_max_retries,
            )
            metadata = {**self._trace_metadata, "rlm_depth": self.settings.depth + 1}
            config: RunnableConfig = {"run_name": "llm_query", "metadata": metadata}
            context = contextvars.copy_context()  # tracing follows the call to its thread
            messages = [HumanMessage(prompt)]
            reply = await asyncio.get_running_loop().run_in_executor(
                CALL_POOL, lambda: context.run(model.invoke, messages, config)
            )
        usage = usage_of(reply, self.settings.effective_sub_model)
        self._count(usage, spent_live=True)
        return message_text(reply) if isinstance(reply, AIMessage) else str(reply.content), usage

    def _count(self, usage: Usage, *, spent_live: bool) -> None:
        """Add a call's usage; a sub-RLM already reported its spend to the tree as it went."""
        with self._lock:
            self.calls += 1
            self.usage = add_usage(self.usage, usage)
        if spent_live:
            self.budget.spend(usage)

    # -- progress events (see docs/trajectory.md) --------------------------------------------

    def _started(self, call_id: str, prompt: str) -> None:
        self._active += 1
        self._notify(
            {
                "event": "sub_call_start",
                "id": call_id,
                "model": "rlm" if self.recursive else self.settings.effective_sub_model,
                "recursive": self.recursive,
                "prompt": preview(prompt, self.settings.trace_text_chars),
                "prompt_chars": len(prompt),
            }
        )

    def _ended(
        self,
        call_id: str,
        started: float,
        answer: dict[str, Any],
        *,
        cached: bool,
        usage: Usage | None = None,
    ) -> None:
        self._active -= 1
        text = str(answer.get("value", ""))
        self._notify(
            {
                "event": "sub_call_end",
                "id": call_id,
                "ok": answer["ok"],
                "answer": preview(text, self.settings.trace_text_chars),
                "error": answer.get("error", ""),
                "seconds": round(time.perf_counter() - started, 4),
                "cached": cached,
                "usage": usage or {},
            }
        )

    def _forward(self, call_id: str) -> Emit | None:
        """An emitter for a sub-RLM's own events, tagged with the path down to it."""
        emit = self._emit
        if emit is None:
            return None

        def forward(event: dict[str, Any]) -> None:
            emit({**event, "path": [call_id, *event.get("path", [])]})

        return forward

    def _notify(self, event: dict[str, Any]) -> None:
        if self._emit is None:
            return
        try:
            self._emit(
                {
                    **event,
                    "depth": self.settings.depth + 1,
                    "in_flight": self._active,
                    "ts": time.time(),
                }
            )
        except Exception:  # progress display must never break a sub-call
            self._emit = None


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
