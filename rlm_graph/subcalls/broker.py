"""``llm_query`` / ``llm_batch``: the host side of sub-calls made by sandboxed code.

One broker answers the sub-calls of one cell: it refuses what the limits forbid, serves
remembered answers (``memo``), joins identical calls in flight, and asks either the sub
model or, when the run's :class:`~rlm_graph.subcalls.scope.Scope` says so, a whole
sub-RLM (started through ``run_child``, which the graph injects). A sandbox in a worker
process awaits them on the node's event loop (``aquery``/``abatch``); the callback
threads of an in-process one wait on the background loop (``loop``).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langsmith.run_trees import RunTree

from rlm_graph.models.endpoints import call_failure, exceeds_window, is_timeout
from rlm_graph.models.messages import message_text, usage_of
from rlm_graph.models.usage import WINDOW_CHARS_PER_TOKEN, Usage, add_usage
from rlm_graph.observe import events
from rlm_graph.observe.events import Event
from rlm_graph.observe.tracing import under
from rlm_graph.settings import Settings
from rlm_graph.subcalls.loop import background_loop, in_call_pool
from rlm_graph.subcalls.memo import SubCallMemo
from rlm_graph.subcalls.scope import Scope
from rlm_graph.text import preview

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class ChildResult:
    """What a sub-RLM run reports back to the sub-call that started it."""

    answer: str
    usage: dict[str, dict[str, int]]


# Runs ``prompt`` as a sub-RLM with the given settings and scope (one level deeper),
# forwarding its progress events to the emitter.
RunChild = Callable[[str, Settings, Scope, Emit | None], Awaitable[ChildResult]]


# What the model is told to do about failed sub-calls, by cause (the first that applies).
STOP = "do not retry them: no more sub-calls can be made, so answer from what you have"
SMALLER = "a prompt was too long for the sub model: send smaller chunks"
FEWER = "the batch was too large: send fewer prompts per llm_batch"
# A retry of a timed-out call queues behind the abandoned one, which a one-slot server
# is still computing (issue 18).
QUEUED = "they timed out waiting for the model server: send fewer prompts at once"
RETRY = "retry them"
_ADVICE_ORDER = (STOP, SMALLER, FEWER, QUEUED, RETRY)


def failed(error: str, advice: str = RETRY) -> dict[str, Any]:
    """A sub-call's failure for the guest, with what to do about it for the cell's note."""
    return {"ok": False, "error": error, "advice": advice}


def advice_on_failure(exc: BaseException) -> str:
    """What to do about a sub-call whose model call raised ``exc``."""
    if exceeds_window(exc):
        return SMALLER
    return QUEUED if is_timeout(exc) else RETRY


def advice_for(failures: list[dict[str, Any]]) -> str:
    """The advice of the most telling cause among ``failures``."""
    given = {f.get("advice", RETRY) for f in failures}
    return next(advice for advice in _ADVICE_ORDER if advice in given)


class SubCallBroker:
    """Answers the sub-calls of one cell; counts their usage and calls."""

    def __init__(
        self,
        settings: Settings,
        scope: Scope,
        *,
        run_child: RunChild | None = None,
        emit: Emit | None = None,
        memo: SubCallMemo | None = None,
        sub_model: BaseChatModel | None = None,
        trace_parent: RunTree | None = None,
        trace_metadata: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._trace_parent = trace_parent  # the cell's LangSmith run (see tracing.py)
        self._trace_metadata = trace_metadata or {}
        self.scope = scope
        self.budget = scope.budget
        self.memo = memo if memo is not None else SubCallMemo()
        self.usage: dict[str, dict[str, int]] = {}
        self.calls = 0
        self._run_child = run_child
        self._sub_model = sub_model  # else built from the settings when first needed
        self._emit = emit
        self._lock = threading.Lock()
        self._in_flight: dict[str, asyncio.Future[tuple[str, Usage]]] = {}
        # One gate for every sub-call of the cell, however the guest started it: a gate
        # per llm_batch let asyncio.gather of 64 llm_query calls put 64 in flight with
        # max_concurrency=2 (issue 13).
        self._gate = asyncio.Semaphore(settings.max_concurrency)
        self._active = 0
        self._asked = 0
        self._failures: list[dict[str, Any]] = []

    @property
    def recursive(self) -> bool:
        """Whether a sub-call here is a full sub-RLM rather than a plain model call."""
        return self._run_child is not None and self.scope.recursive

    # -- blocking entry points, called from sandbox callback threads ---------------------

    def query(self, prompt: str) -> dict[str, Any]:
        """Answer one prompt for ``llm_query``."""
        answer: dict[str, Any] = self._wait(self.aquery(prompt))
        return answer

    def batch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Answer prompts for ``llm_batch``, or refuse the batch as a whole."""
        answers: list[dict[str, Any]] | dict[str, Any] = self._wait(self.abatch(prompts))
        return answers

    def _tally(self, answers: list[dict[str, Any]]) -> None:
        with self._lock:
            self._asked += len(answers)
            self._failures += [a for a in answers if not a["ok"]]

    def failure_note(self) -> str:
        """A line on this cell's failed sub-calls for the model, or "" when none failed.

        A failed llm_batch item is a string starting "Error:", which a model's own code
        easily filters out: a 1.5B model dropped nine context-length failures this way
        and saw `[]` for nine iterations (issue 18). This line reaches it whatever the
        code printed. Its advice follows the cause: retrying a call a limit refused only
        burns iterations.
        """
        with self._lock:
            failures, asked = list(self._failures), self._asked
        if not failures:
            return ""
        return (
            f"\n[{len(failures)} of {asked} sub-calls in this cell failed (their results are "
            f'strings starting "Error:"): {advice_for(failures)}. The first error: '
            f"{preview(failures[0]['error'], 300)}]"
        )

    def _wait(self, coro: Awaitable[Any]) -> Any:
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), background_loop())
        try:
            return future.result(timeout=self.settings.cell_timeout)
        except FutureTimeout:
            future.cancel()
            limit = self.settings.cell_timeout
            late = failed(f"sub-call timed out after {limit:g} s (cell_timeout)")
            self._tally([late])
            return late

    # -- async implementation -------------------------------------------------------------

    async def aquery(self, prompt: str) -> dict[str, Any]:
        """Answer one prompt for ``llm_query`` (a sandbox's process awaits this)."""
        answer = await self._query(prompt)
        self._tally([answer])
        return answer

    async def abatch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Answer prompts for ``llm_batch``, or refuse the batch as a whole."""
        answers = await self._batch(prompts)
        self._tally([answers] if isinstance(answers, dict) else answers)
        return answers

    async def _query(self, prompt: str) -> dict[str, Any]:
        """One sub-call with budget, window check, cache and error capture."""
        if refusal := self._refusal(prompt):
            return failed(refusal, SMALLER)
        if await asyncio.to_thread(self.memo.get, prompt) is None:  # a store may be remote
            if stop := self._cost_stop():
                return failed(stop, STOP)
            if not self.budget.take(1):
                return failed(self._budget_message(1), STOP)
        refused: set[str] = set()
        answer = await self._gated(prompt, refused)
        self.budget.give_back(len(refused))
        return answer

    async def _batch(self, prompts: list[str]) -> list[dict[str, Any]] | dict[str, Any]:
        """Concurrent sub-calls, at most ``max_concurrency`` at once, answers in order.

        Only distinct prompts not answered before count against the budget. A cost
        limit reached while the batch runs refuses the calls not yet sent, each with its
        own error, and gives their reservations back to the budget.
        """
        if len(prompts) > self.settings.max_batch_size:
            return failed(self._batch_message(len(prompts)), FEWER)
        distinct = {p for p in prompts if not self._refusal(p)}
        await asyncio.to_thread(self.memo.prefetch, distinct)
        fresh = sum(1 for p in distinct if self.memo.get(p) is None)
        if fresh and (stop := self._cost_stop()):
            return failed(stop, STOP)
        if not self.budget.take(fresh):
            return failed(self._budget_message(fresh), STOP)
        refused: set[str] = set()

        async def one(prompt: str) -> dict[str, Any]:
            if refusal := self._refusal(prompt):
                return failed(refusal, SMALLER)
            return await self._gated(prompt, refused)

        answers = list(await asyncio.gather(*(one(p) for p in prompts)))
        self.budget.give_back(len(refused))
        return answers

    async def _gated(self, prompt: str, refused: set[str]) -> dict[str, Any]:
        """The answer once one of the cell's ``max_concurrency`` slots is free.

        A cost limit reached while it waited refuses it instead (noted in ``refused``,
        so its reservation goes back to the budget).
        """
        async with self._gate:
            if stop := self._unsent_cost_stop(prompt):
                refused.add(prompt)
                return failed(stop, STOP)
            return await self._answer_cached(prompt)

    def _refusal(self, prompt: str) -> str:
        """Why a prompt cannot be sent, or "" when it can."""
        if len(prompt) > self.settings.max_prompt_chars:
            return (
                f"prompt of {len(prompt):,} characters exceeds max_prompt_chars="
                f"{self.settings.max_prompt_chars:,}: pass a slice of the data, not all of it"
            )
        if self.recursive:
            return ""
        window = self.settings.sub_window
        estimate = math.ceil(len(prompt) / WINDOW_CHARS_PER_TOKEN)
        if estimate <= window:
            return ""
        return (
            f"prompt of {len(prompt):,} characters (~{estimate:,} tokens) exceeds the sub "
            f"model's window of {window:,} tokens: split it into chunks of at most "
            f"{window * WINDOW_CHARS_PER_TOKEN:,} characters"
        )

    def _cost_stop(self) -> str:
        """The message for a sub-call refused because a cost limit is reached, or ""."""
        reason = self.settings.over_budget(self.budget.spent)
        return f"{reason}; no more sub-calls: answer from what you have" if reason else ""

    def _unsent_cost_stop(self, prompt: str) -> str:
        """The cost stop for a batch's prompt that would need a new call, or "".

        The tree's spend only grows, so once a limit is reached every later call of the
        batch is refused; answers remembered or already in flight cost nothing more.
        """
        if self.memo.get(prompt) is not None or prompt in self._in_flight:
            return ""
        return self._cost_stop()

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
            failure = failed(
                call_failure(exc, self.settings.timeout_advice()), advice_on_failure(exc)
            )
            self._ended(call_id, started, failure, cached=joined)
            return failure
        finally:
            if pending.done():
                self._in_flight.pop(prompt, None)
        await asyncio.to_thread(self.memo.put, prompt, value)  # a file or a store write
        answer = {"ok": True, "value": value}
        self._ended(call_id, started, answer, cached=joined, usage={} if joined else usage)
        return answer

    async def _answer(self, prompt: str, call_id: str) -> tuple[str, Usage]:
        """The answer and what it cost: from a sub-RLM when the scope says so, else the model.

        A sub-RLM's cost is its whole tree's, which it spent into the budget as it went.
        """
        with under(self._trace_parent):
            if self.recursive and self._run_child is not None:
                child = await self._run_child(
                    prompt, self.settings, self.scope.child(), self._forward(call_id)
                )
                self._count(child.usage, spent_live=False)
                return child.answer, child.usage
            reply = await self._ask_model(prompt)
        usage = usage_of(reply, self.settings.effective_sub_model)
        self._count(usage, spent_live=True)
        return message_text(reply) if isinstance(reply, AIMessage) else str(reply.content), usage

    async def _ask_model(self, prompt: str) -> BaseMessage:
        """One plain sub-model call, on the call pool (see ``loop``)."""
        model = self._sub_model or self.scope.deployment.chat_model(
            self.settings.effective_sub_model, self.settings.effective_sub_base_url, self.settings
        )
        metadata = {**self._trace_metadata, "rlm_depth": self.scope.depth + 1}
        config: RunnableConfig = {"run_name": "llm_query", "metadata": metadata}
        return await in_call_pool(lambda: model.invoke([HumanMessage(prompt)], config))

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
        if self._emit is not None:
            self._notify(
                events.sub_call_start(
                    depth=self.scope.depth + 1,
                    in_flight=self._active,
                    id=call_id,
                    model="rlm" if self.recursive else self.settings.effective_sub_model,
                    recursive=self.recursive,
                    prompt=preview(prompt, self.settings.trace_text_chars),
                    prompt_chars=len(prompt),
                )
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
        if self._emit is not None:
            self._notify(
                events.sub_call_end(
                    depth=self.scope.depth + 1,
                    in_flight=self._active,
                    id=call_id,
                    ok=answer["ok"],
                    answer=preview(str(answer.get("value", "")), self.settings.trace_text_chars),
                    error=answer.get("error", ""),
                    seconds=round(time.perf_counter() - started, 4),
                    cached=cached,
                    usage=usage or {},
                )
            )

    def _forward(self, call_id: str) -> Emit | None:
        """An emitter for a sub-RLM's own events, tagged with the path down to it."""
        emit = self._emit
        if emit is None:
            return None
        return lambda event: emit(events.nested(event, call_id))

    def _notify(self, event: Event) -> None:
        try:
            if self._emit is not None:
                self._emit(event)
        except Exception:  # progress display must never break a sub-call
            self._emit = None


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
