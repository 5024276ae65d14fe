"""Running the compiled graph and collecting its result: the one place that does it.

``api.answer``/``aanswer``, ``rlm run`` (a durable thread's resume, the approval loop),
``rlm eval`` and sub-RLMs all run the graph through here, so the stream modes, the
recursion limit, the trace file, resuming and the result are decided once:

- :func:`run_graph` / :func:`arun_graph` run one :class:`Run` to its end and return an
  :class:`RLMResult`;
- :class:`GraphStream` is the primitive under them (and under a sub-RLM): stream the
  graph, pass its events on, return its last state.

The graph is streamed, never invoked: ``invoke`` drops the custom events that say what
a run is doing. The compiled graph is always the caller's, so this module imports
nothing from the nodes (which use it for sub-RLMs).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, Durability, StateSnapshot, StreamMode

from rlm_graph.graph.approval import Approver
from rlm_graph.graph.runtime import EVENTS_KEY
from rlm_graph.models.pricing import CostReport, cost_of
from rlm_graph.observe.events import Event
from rlm_graph.observe.progress import Sink, Tee
from rlm_graph.observe.trajectory import TraceWriter
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import ContextRef
from rlm_graph.text import one_line, valid_text

Graph = CompiledStateGraph[Any, Any, Any, Any]
Input = dict[str, Any] | Command[Any] | None  # None: continue a thread where it stopped
OnEvent = Callable[[Event], None]
OnState = Callable[[dict[str, Any]], None]
STREAM_MODES: list[StreamMode] = ["custom", "values"]


def answer_text(answer: Any) -> str:
    """An answer as text (JSON for structured answers)."""
    if isinstance(answer, str):
        return answer
    return json.dumps(answer, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class RLMResult:
    """The outcome of one question."""

    answer: Any
    status: str
    iterations: int
    sub_calls: int
    tokens: dict[str, dict[str, int]]
    seconds: float
    error: str = ""
    cost: CostReport | None = None
    stop_reason: str = ""
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` object."""
        data = {
            "answer": self.answer,
            "status": self.status,
            "iterations": self.iterations,
            "sub_calls": self.sub_calls,
            "tokens": self.tokens,
            "cost": self.cost,
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            data["error"] = self.error
        if self.stop_reason:
            data["stop_reason"] = self.stop_reason
        return data

    def answer_text(self) -> str:
        """The answer as text (JSON for structured answers)."""
        return answer_text(self.answer)


def result_from(
    state: dict[str, Any], seconds: float, settings: Settings, error: str = ""
) -> RLMResult:
    """The result from a run's last state; ``error`` marks a run that raised."""
    tokens = state.get("usage") or {}
    return RLMResult(
        answer=None if error else state.get("answer"),
        status="failed" if error else state.get("status", "failed"),
        iterations=state.get("iteration", 0),
        sub_calls=state.get("sub_calls", 0),
        tokens=tokens,
        seconds=seconds,
        error=error or state.get("error", ""),
        cost=state.get("cost") or cost_of(tokens, settings.prices),
        stop_reason=state.get("stop_reason", ""),
        state=state,
    )


def recursion_limit(settings: Settings) -> int:
    """LangGraph's step limit for a run, set so that the iteration budget ends it first.

    An iteration is three steps (plan, execute, inspect); four each and ten more leave
    room for finalize and a pause. LangGraph's own default (10,007) would let a runaway
    loop go on; the budget in state is what stops a run.
    """
    return 4 * settings.max_iterations + 10


def run_config(settings: Settings, config: RunnableConfig | None = None) -> RunnableConfig:
    """The caller's config with a recursion limit that fits the iteration budget."""
    merged: RunnableConfig = dict(config or {})  # type: ignore[assignment]
    merged.setdefault("recursion_limit", recursion_limit(settings))
    return merged


@dataclass(frozen=True)
class GraphStream:
    """A compiled graph streamed with one context and config, its output passed on.

    The primitive under every run, a sub-RLM's included: custom events go to
    ``on_event``, each state to ``on_state``, and the last state is returned.
    """

    graph: Graph
    settings: Settings
    config: RunnableConfig
    on_event: OnEvent | None = None
    on_state: OnState | None = None
    options: dict[str, Any] = field(default_factory=dict)  # more for stream(): durability

    def run(self, inputs: Input) -> dict[str, Any]:
        """Stream the graph from ``inputs``; the last state ({} when the stream had none).

        Events reach ``on_event`` through the config (``EVENTS_KEY``), not LangGraph's
        custom stream: with that stream LangGraph runs each node on a pool thread and
        waits on another, and here the caller's thread waits anyway; without it, a step
        of one node runs on this thread (~0.8 ms of host CPU an iteration less).
        """
        state: dict[str, Any] = {}
        arguments = {**self._arguments(), "stream_mode": "values"}
        for chunk in self.graph.stream(inputs, self._with_events(self._write()), **arguments):
            state = self._take("values", chunk, state)
        return state

    async def arun(self, inputs: Input) -> dict[str, Any]:
        """Async :meth:`run`: events through LangGraph's custom stream."""
        state: dict[str, Any] = {}
        config = self._with_events(None)  # not a parent's writer, found through the context
        async for mode, chunk in self.graph.astream(inputs, config, **self._arguments()):
            state = self._take(mode, chunk, state)
        return state

    def _write(self) -> Callable[[Event], None] | None:
        """``on_event`` callable from any thread, one event at a time."""
        if (on_event := self.on_event) is None:
            return None
        lock = threading.Lock()

        def write(event: Event) -> None:
            with lock:  # a node and its sub-call threads emit at once
                on_event(event)

        return write

    def _with_events(self, write: Callable[[Event], None] | None) -> RunnableConfig:
        """The config with the nodes' event callback (``EVENTS_KEY``); None: the stream's."""
        configurable = {**self.config.get("configurable", {}), EVENTS_KEY: write}
        return {**self.config, "configurable": configurable}

    def _arguments(self) -> dict[str, Any]:
        return {"context": self.settings, "stream_mode": STREAM_MODES, **self.options}

    def _take(self, mode: str, chunk: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Pass one ``(mode, chunk)`` on; the latest state."""
        if mode == "values":
            if self.on_state is not None:
                self.on_state(chunk)
            return dict(chunk)
        if self.on_event is not None:
            self.on_event(cast(Event, chunk))
        return state


@dataclass(frozen=True, kw_only=True)
class Run:
    """One question put to a compiled graph, and what to do around it."""

    question: str
    settings: Settings
    graph: Graph
    context_ref: ContextRef | None = None  # None: a follow-up on the thread's context
    # With a ``thread_id`` and a graph compiled with a checkpointer, a run is on a thread:
    # it resumes where the same question was cut off, and it can pause for approval.
    config: RunnableConfig | None = None
    sink: Sink | None = None  # the progress display; closed when the run ends
    trace: str | os.PathLike[str] | None = None  # a trajectory file (docs/trajectory.md)
    approve: Approver | None = None  # answers each approve_code pause; None leaves it paused
    catch: bool = False  # an exception becomes a failed result (the CLI) or is raised (answer)
    durability: Durability | None = None  # "sync": each step saved before the next starts
    on_resume: Callable[[int], None] | None = None  # told the iteration a cut-off run resumes at

    def __post_init__(self) -> None:
        # Every driver's question enters here (argv holds a lone surrogate for each byte
        # that is not UTF-8): the state, checkpoint and trace then hold only valid text.
        object.__setattr__(self, "question", valid_text(self.question))

    def inputs(self) -> dict[str, Any]:
        """The graph input: the question and a reference to the stored context."""
        inputs: dict[str, Any] = {"question": self.question}
        if self.context_ref is not None:
            inputs["context_ref"] = self.context_ref
        return inputs

    @property
    def threaded(self) -> bool:
        """Whether the run is on a checkpointed thread (so it can resume and pause)."""
        thread = (self.config or {}).get("configurable", {}).get("thread_id")
        return thread is not None and isinstance(self.graph.checkpointer, BaseCheckpointSaver)


def cut_off(snapshot: StateSnapshot) -> bool:
    """Whether a thread stopped with work left that no pause explains (a crash, a kill).

    Read from the tasks, not ``snapshot.next``: ``next`` leaves out a task that finished
    (its writes saved) in a step that was not committed, and a kill in that window
    would otherwise look like a run that ended.
    """
    return bool(snapshot.tasks) and not snapshot.interrupts


def resumable(snapshot: StateSnapshot, question: str) -> bool:
    """Whether a thread was cut off part-way through this same question."""
    values = snapshot.values or {}
    asked = values.get("active_question") or values.get("question")
    return cut_off(snapshot) and asked == question


class _Session:
    """What a run does around the graph, the same for both drivers.

    It is the sink the graph streams into (passing events on to the display and the
    trace, keeping the latest state), decides the first input and each answer to a
    pause, and, as a context manager, makes the result however the run ends.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.config = run_config(run.settings, run.config)
        options = {"durability": run.durability} if run.durability else {}
        self.stream = GraphStream(
            run.graph, run.settings, self.config, self.custom, self.values, options
        )
        self.writer = TraceWriter(run.trace) if run.trace is not None else None
        if self.writer is not None:
            self.writer.header(run.question, run.settings, dict(run.context_ref or {}))
        self.sink = Tee(*[s for s in (run.sink, self.writer) if s is not None])
        self.state: dict[str, Any] = {}
        self.result: RLMResult | None = None
        self.started = time.perf_counter()

    def custom(self, event: Event) -> None:
        """A progress event: to the display and the trace."""
        self.sink.custom(event)

    def values(self, state: dict[str, Any]) -> None:
        """A state after a step: passed on, and kept for the result."""
        self.sink.values(state)
        self.state = dict(state)

    def snapshot(self) -> StateSnapshot | None:
        """The thread's state; ``None`` off a thread (nothing to resume or answer)."""
        return self.run.graph.get_state(self.config) if self.run.threaded else None

    async def asnapshot(self) -> StateSnapshot | None:
        """Async :meth:`snapshot`."""
        return await self.run.graph.aget_state(self.config) if self.run.threaded else None

    def first_input(self, snapshot: StateSnapshot | None) -> Input:
        """The question, or ``None`` to continue a thread cut off on this same question."""
        if snapshot is None or not resumable(snapshot, self.run.question):
            return self.run.inputs()
        self.state = dict(snapshot.values)
        if self.run.on_resume is not None:
            self.run.on_resume(self.state.get("iteration", 0))
        return None

    def decision(self, snapshot: StateSnapshot | None) -> Command[Any] | None:
        """The approver's answer to the pause the run stopped at; ``None``: it ended."""
        if self.run.approve is None or snapshot is None or not snapshot.interrupts:
            return None
        return Command(resume=self.run.approve(snapshot.interrupts[0].value))

    def __enter__(self) -> _Session:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Make the result (a failed one for a caught exception) and close every sink."""
        try:
            if error is not None and not (self.run.catch and isinstance(error, Exception)):
                return False
            seconds = time.perf_counter() - self.started
            message = one_line(error) if error is not None else ""
            self.result = result_from(self.state, seconds, self.run.settings, message)
            if self.writer is not None:
                self.writer.result(self.result.to_json())
            return True
        finally:
            self.sink.close()

    def outcome(self) -> RLMResult:
        """The result made when the run ended."""
        assert self.result is not None, "read after the run's `with` block, which makes it"
        return self.result


# The control flow lives in _Session; the two drivers differ only in awaiting, because
# LangGraph's sync and async APIs do not mix (an AsyncSqliteSaver has no sync path, a
# SqliteSaver no async one).


def run_graph(run: Run) -> RLMResult:
    """Run ``run`` to its end: resume a cut-off thread, answer every pause; the result.

    Windows left unset are first asked of the model servers (``models.servers``).

    A graph exception propagates unless ``run.catch``; either way the sink is closed
    and a trace keeps every line written so far.
    """
    run = replace(run, settings=run.settings.with_server_windows())
    with _Session(run) as session:
        session.stream.run(session.first_input(session.snapshot()))
        while run.approve and (decision := session.decision(session.snapshot())):
            session.stream.run(decision)
    return session.outcome()


async def arun_graph(run: Run) -> RLMResult:
    """Async :func:`run_graph`."""
    run = replace(run, settings=await asyncio.to_thread(run.settings.with_server_windows))
    with _Session(run) as session:
        await session.stream.arun(session.first_input(await session.asnapshot()))
        while run.approve and (decision := session.decision(await session.asnapshot())):
            await session.stream.arun(decision)
    return session.outcome()
