"""One-call helpers: ``answer(question, context, **settings)`` and its async twin.

They store the context before the graph starts, so only its reference enters the
graph's input (and therefore any checkpoint), and they return a small result object
with the fields the CLI prints.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from rlm_graph.context import Settings
from rlm_graph.context_store import store_path, store_value
from rlm_graph.graph import graph as default_graph
from rlm_graph.state import ContextRef


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
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` object."""
        data = {
            "answer": self.answer,
            "status": self.status,
            "iterations": self.iterations,
            "sub_calls": self.sub_calls,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            data["error"] = self.error
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


def result_from(state: dict[str, Any], seconds: float, error: str = "") -> RLMResult:
    """The result from a run's last state; ``error`` marks a run that raised."""
    return RLMResult(
        answer=None if error else state.get("answer"),
        status="failed" if error else state.get("status", "failed"),
        iterations=state.get("iteration", 0),
        sub_calls=state.get("sub_calls", 0),
        tokens=state.get("usage") or {},
        seconds=seconds,
        error=error or state.get("error", ""),
        state=state,
    )


def run_config(settings: Settings, config: RunnableConfig | None = None) -> RunnableConfig:
    """The caller's config with a recursion limit that fits the iteration budget."""
    merged: RunnableConfig = dict(config or {})  # type: ignore[assignment]
    merged.setdefault("recursion_limit", 4 * settings.max_iterations + 10)
    return merged


def answer(
    question: str,
    context: Any = None,
    *,
    graph: CompiledStateGraph[Any, Any, Any, Any] | None = None,
    config: RunnableConfig | None = None,
    **settings: Any,
) -> RLMResult:
    """Answer ``question`` over ``context`` (text, JSON data, or a path to a file/folder).

    ``context`` may be omitted on a follow-up question of a thread (``config`` with a
    ``thread_id`` and a checkpointer-compiled ``graph``): the thread's sandbox is reused.
    """
    run_settings = Settings.from_mapping(settings)
    started = time.perf_counter()
    state = (graph or default_graph).invoke(
        inputs_for(question, context), config=run_config(run_settings, config), context=run_settings
    )
    return result_from(state, time.perf_counter() - started)


async def aanswer(
    question: str,
    context: Any = None,
    *,
    graph: CompiledStateGraph[Any, Any, Any, Any] | None = None,
    config: RunnableConfig | None = None,
    **settings: Any,
) -> RLMResult:
    """Async :func:`answer`."""
    run_settings = Settings.from_mapping(settings)
    started = time.perf_counter()
    state = await (graph or default_graph).ainvoke(
        inputs_for(question, context), config=run_config(run_settings, config), context=run_settings
    )
    return result_from(state, time.perf_counter() - started)
