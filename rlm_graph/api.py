"""One-call helpers: ``answer(question, context, **settings)`` and its async twin.

They store the context before the graph starts, so only its reference enters the
graph's input (and therefore any checkpoint), and run it with the graph's runner
(``graph/runner.py``), which returns the :class:`RLMResult` the CLI prints too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from rlm_graph.graph import graph as default_graph
from rlm_graph.graph.runner import Graph, RLMResult, Run, arun_graph, run_graph
from rlm_graph.observe.progress import Sink
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import (
    LAZY_CONTEXT_BYTES,
    LAZY_FOLDER_FILES,
    ContextRef,
    store_path,
    store_value,
)

__all__ = ["RLMResult", "aanswer", "answer", "reference"]


def reference(
    context: Any,
    lazy_folder_files: int = LAZY_FOLDER_FILES,
    lazy_text_bytes: int = LAZY_CONTEXT_BYTES,
) -> ContextRef:
    """Store a context given as a value or a path, returning its reference.

    Send it to a graph as ``{"context_ref": ...}``: the input, and so the first
    checkpoint of a thread, then holds a few hundred bytes instead of the whole text.
    A folder of more than ``lazy_folder_files`` files, and a text file of more than
    ``lazy_text_bytes``, are read in place (docs/huge.md).
    """
    if isinstance(context, os.PathLike):
        return store_path(Path(context), lazy_folder_files, lazy_text_bytes)
    return store_value(context)


def run_of(
    question: str,
    context: Any,
    graph: Graph | None,
    config: RunnableConfig | None,
    trace: str | os.PathLike[str] | None,
    progress: Sink | None,
    settings: dict[str, Any],
) -> Run:
    """What :func:`answer` and :func:`aanswer` run; a graph exception is raised to the caller."""
    parsed = Settings.from_mapping(settings)
    return Run(
        question=question,
        settings=parsed,
        graph=graph or default_graph,
        context_ref=None
        if context is None
        else reference(context, parsed.lazy_folder_files, parsed.lazy_context_mb << 20),
        config=config,
        trace=trace,
        sink=progress,
    )


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
    ``thread_id`` and a checkpointer-compiled ``graph``): the thread's sandbox is reused,
    and a run of the same question that was cut off continues from its last step.
    ``trace`` names a file to write the run's trajectory to (docs/trajectory.md);
    ``progress`` gets the run's events as they happen (e.g. to pass them on to a calling
    agent's stream) and is closed when the run ends.
    """
    return run_graph(run_of(question, context, graph, config, trace, progress, settings))


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
    return await arun_graph(run_of(question, context, graph, config, trace, progress, settings))
