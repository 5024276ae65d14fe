"""The RLM as a deepagents subagent: ``create_deep_agent(..., subagents=[rlm_subagent(...)])``.

The main agent delegates with its ``task`` tool: a question, and a last line
``context: <path>`` naming a file or folder of the agent's own filesystem backend. The
subagent reads that file on the host, from the backend (a ``FilesystemBackend``'s file
is streamed from disk under its root; any other backend's, such as the default
``StateBackend``'s files in the agent's state, is downloaded through the backend), so
the file never passes through a model. Settings, folders and traces are fixed when the
subagent is made, as for the LangChain tool; the main agent reads the answer and one
provenance line.

Needs the ``deepagents`` extra. May import anything below ``integrations`` (through
``integrations.calls``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, NotRequired, TypedDict

from deepagents import CompiledSubAgent
from deepagents.backends import FilesystemBackend, StateBackend
from deepagents.backends.protocol import BackendProtocol
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages

from rlm_graph.integrations.calls import FixedRLM, fixed_settings, forward_progress
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import ContextError
from rlm_graph.storage.roots import PathLike, confine

DESCRIPTION = (
    "Answers a question about a file or folder too large to read (a big log, a "
    "repository, a folder of reports) with a Recursive Language Model: code in a sandbox "
    "reads it, never you. Write the question, then a last line `context: <path>` naming "
    "one file or folder of your filesystem. You get the answer and one line on its cost."
)
CONTEXT_LINE = re.compile(r"^[ \t]*context:[ \t]*(\S.*?)[ \t]*$", re.IGNORECASE | re.MULTILINE)


class SubagentState(TypedDict):
    """The task's messages, and the files of a ``StateBackend`` (the parent passes them)."""

    messages: Annotated[list[AnyMessage], add_messages]
    files: NotRequired[dict[str, Any]]


def rlm_subagent(
    settings: Settings | None = None,
    *,
    backend: BackendProtocol | None = None,
    roots: Sequence[PathLike] = (),
    trace_dir: PathLike | None = None,
    name: str = "rlm",
    description: str = DESCRIPTION,
    **fields: Any,
) -> CompiledSubAgent:
    """A subagent that answers with the RLM over a file of the agent's ``backend``.

    ``backend`` is the one given to ``create_deep_agent`` (default: its ``StateBackend``).
    A ``FilesystemBackend``'s paths must lie under ``roots`` (default: its root folder).
    ``settings``/``fields`` and ``trace_dir`` are as for :func:`~.langchain.rlm_tool`.
    """
    backend = backend or StateBackend()
    if isinstance(backend, FilesystemBackend) and not roots:
        roots = [backend.cwd]
    fixed = FixedRLM(fixed_settings(settings, fields), roots, trace_dir)

    def rlm(state: SubagentState) -> dict[str, Any]:
        task = next(m for m in reversed(state["messages"]) if isinstance(m, HumanMessage))
        try:
            question, path = split_task(task.text)
            context = read_from(backend, path, fixed)
        except ContextError as exc:
            return {"messages": [AIMessage(f"Refused: {exc}")]}
        outcome = fixed.run(question, context, progress=forward_progress(name))
        return {"messages": [AIMessage(outcome.message())]}

    graph = StateGraph(SubagentState)
    graph.add_node("rlm", rlm)
    graph.add_edge(START, "rlm")
    return CompiledSubAgent(name=name, description=description, runnable=graph.compile(name=name))


def split_task(task: str) -> tuple[str, str]:
    """The question and the path of a task that ends ``context: <path>``."""
    paths = CONTEXT_LINE.findall(task)
    if len(paths) != 1:
        raise ContextError("end the task with one line `context: <path>` naming what to read")
    return CONTEXT_LINE.sub("", task).strip(), paths[0]


def read_from(backend: BackendProtocol, path: str, fixed: FixedRLM) -> Any:
    """The context at ``path`` of ``backend``: a host path to stream, or its content.

    A folder becomes ``{relative path: text}``, as ``rlm run --context DIR`` reads one.
    """
    if isinstance(backend, FilesystemBackend):
        host = backend.cwd / path.lstrip("/") if backend.virtual_mode else Path(path)
        return confine(host, fixed.roots)
    (found,) = backend.download_files([path])
    if found.content is not None:
        return found.content
    listing = backend.glob("*", path=path).matches or []  # the files of a folder, if it is one
    if not listing:
        raise ContextError(f"cannot read {path!r} from the agent's files: {found.error}")
    files = backend.download_files([info["path"] for info in listing])
    return {
        str(PurePosixPath(f.path).relative_to(path)): f.content.decode("utf-8", "replace")
        for f in files
        if f.content is not None
    }
