"""One-call helpers: ``answer(question, context, **settings)`` and its async twin.

They store the context before the graph starts, so only its reference enters the
graph's input (and therefore any checkpoint), and they return a small result object
with the fields the CLI prints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StreamMode

from rlm_graph.graph import graph as default_graph
from rlm_graph.models.pricing import CostReport, cost_of
from rlm_graph.observe.progress import Sink, Tee
from rlm_graph.observe.trajectory import TraceWriter
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import ContextRef, store_path, store_value

Graph = CompiledStateGraph[Any, Any, Any, Any]
STREAM_MODES: list[StreamMode] = ["custom", "values"]


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
        if isinstance(self.answer, str):
            return self.answer
        return json.dumps(self.answer, ensure_ascii=False, default=str)


def reference(context: Any) -> ContextRef:
    """Store a context given as a value or a path, returning its reference."""
    if isinstance(context, os.PathLike):
        return store_path(Path(context))
    return store_value(context)


def inputs_for(question: str, context: Any) -> dict[str, Any]:
    """The graph input: the question and a reference to the stored context."""
    inputs: dict[str, Any] = {"question": question}
    if context is not None:
        inputs["context_ref"] = reference(context)
    return inputs


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


def feed(sink: Sink, mode: str, chunk: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Pass one ``(mode, chunk)`` of a ``["custom", "values"]`` stream on; the latest state."""
    if mode == "values":
        sink.values(chunk)
        return dict(chunk)
    sink.custom(chunk)
    return state


def stream_into(chunks: Iterator[Any], sink: Sink) -> dict[str, Any]:
    """Feed a graph's stream to ``sink``; the last state."""
    state: dict[str, Any] = {}
    for mode, chunk in chunks:
        state = feed(sink, mode, chunk, state)
    return state


async def astream_into(chunks: AsyncIterator[Any], sink: Sink) -> dict[str, Any]:
    """Async :func:`stream_into`."""
    state: dict[str, Any] = {}
    async for mode, chunk in chunks:
        state = feed(sink, mode, chunk, state)
    return state


def open_trace(
    path: str | os.PathLike[str], question: str, settings: Settings, inputs: dict[str, Any]
) -> TraceWriter:
    """A trace file with its header written."""
    writer = TraceWriter(path)
    writer.header(question, settings, inputs.get("context_ref") or {})
    return writer


def run_config(settings: Settings, config: RunnableConfig | None = None) -> RunnableConfig:
    """The caller's config with a recursion limit that fits the iteration budget."""
    merged: RunnableConfig = dict(config or {})  # type: ignore[assignment]
    merged.setdefault("recursion_limit", 4 * settings.max_iterations + 10)
    return merged


@contextmanager
def traced(
    path: str | os.PathLike[str], question: str, settings: Settings, inputs: dict[str, Any]
) -> Iterator[TraceWriter]:
    """A trace file open for one run; closed (every line already on disk) however it ends."""
    writer = open_trace(path, question, settings, inputs)
    try:
        yield writer
    finally:
        writer.close()


def traced_result(
    writer: TraceWriter, state: dict[str, Any], started: float, settings: Settings
) -> RLMResult:
    """The result of a traced run, written as the trace's last line."""
    result = result_from(state, time.perf_counter() - started, settings)
    writer.result(result.to_json())
    return result


def answer(
    question: str,
    context: Any = None,
    *,
    graph: Graph | None = None,
    config: RunnableConfig | None = None,
    trace: str | os.PathLike[str] | None = None,
    progress: Sink | None = None,
    **settings: Any,
) -> RLMResult:
    """Answer ``question`` over ``context`` (text, JSON data, or a path to a file/folder).

    ``context`` may be omitted on a follow-up question of a thread (``config`` with a
    ``thread_id`` and a checkpointer-compiled ``graph``): the thread's sandbox is reused.
    ``trace`` names a file to write the run's trajectory to (docs/trajectory.md);
    ``progress``, with ``trace``, gets the same events as they happen (e.g. to pass them
    on to a calling agent's stream).
    """
    run_settings = Settings.from_mapping(settings)
    started = time.perf_counter()
    inputs = inputs_for(question, context)
    run, run_cfg = graph or default_graph, run_config(run_settings, config)
    if trace is None:
        state = run.invoke(inputs, config=run_cfg, context=run_settings)
        return result_from(state, time.perf_counter() - started, run_settings)
    with traced(trace, question, run_settings, inputs) as writer:
        chunks = run.stream(inputs, run_cfg, context=run_settings, stream_mode=STREAM_MODES)
        sink = Tee(writer, progress) if progress else writer
        state = stream_into(cast(Iterator[Any], chunks), sink)
        return traced_result(writer, state, started, run_settings)


async def aanswer(
    question: str,
    context: Any = None,
    *,
    graph: Graph | None = None,
    config: RunnableConfig | None = None,
    trace: str | os.PathLike[str] | None = None,
    progress: Sink | None = None,
    **settings: Any,
) -> RLMResult:
    """Async :func:`answer`."""
    run_settings = Settings.from_mapping(settings)
    started = time.perf_counter()
    inputs = inputs_for(question, context)
    run, run_cfg = graph or default_graph, run_config(run_settings, config)
    if trace is None:
        state = await run.ainvoke(inputs, config=run_cfg, context=run_settings)
        return result_from(state, time.perf_counter() - started, run_settings)
    with traced(trace, question, run_settings, inputs) as writer:
        chunks = run.astream(inputs, run_cfg, context=run_settings, stream_mode=STREAM_MODES)
        sink = Tee(writer, progress) if progress else writer
        state = await astream_into(cast(AsyncIterator[Any], chunks), sink)
        return traced_result(writer, state, started, run_settings)
