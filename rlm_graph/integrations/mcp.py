"""The RLM as an MCP server (``rlm mcp``), on the official ``mcp`` SDK.

Two tools: ``rlm_answer(question, path)`` starts a thread over a file or folder under
the folders the server was started with, and ``rlm_followup(thread, question)`` asks
again on that thread, whose sandbox keeps its variables. Threads live in a checkpoint
(by default the SQLite file :func:`~rlm_graph.storage.persistence.default_checkpoint`),
so they outlive the server. A follow-up is taken only on a thread that was started over
a path under this server's folders, so a thread of another server (or of ``rlm run``)
reads nothing these folders would not let it read. A thread runs one question at a
time, whoever asks: this server's other calls wait, and a call while ``rlm run`` or
another ``rlm mcp`` on the same checkpoint runs the thread is refused (the checkpoint's
thread lock). Settings and folders are fixed by
the operator at start; a client sends only questions, paths and thread ids. The client
reads the answer and one provenance line; each call's trajectory is a trace file, named
on the server's stderr (the host's log). Progress goes out as MCP progress notifications
(one per iteration) when the client asks for them.

Needs the ``mcp`` extra. May import anything below ``integrations`` (through
``integrations.calls``); ``cli.mcp`` imports it when ``rlm mcp`` runs.
"""

from __future__ import annotations

import sys
import threading
import uuid
from pathlib import Path
from typing import Annotated, Any

import anyio.from_thread
from langchain_core.runnables import RunnableConfig
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from rlm_graph.graph import build_graph
from rlm_graph.integrations.calls import FixedRLM, Outcome
from rlm_graph.observe.events import Event
from rlm_graph.repl.process import warm_up
from rlm_graph.storage.contexts import ContextError
from rlm_graph.storage.persistence import Persistence, open_persistence
from rlm_graph.storage.roots import confine, within
from rlm_graph.storage.thread_lock import ThreadBusy, thread_lock

# Store namespace of the threads this server started: thread id -> the path it read.
THREADS = ("mcp-threads",)
INSTRUCTIONS = (
    "Answers questions about files and folders too large to read (logs, repositories, "
    "folders of reports) with a Recursive Language Model: code in a sandbox reads them, "
    "never you. rlm_answer starts a thread over a path; rlm_followup asks again on it."
)
# Module-level: the SDK reads the tools' annotations (strings here) in this namespace.
Question = Annotated[str, Field(description="The question to answer.")]
FileOrFolder = Annotated[str, Field(description="A file or folder under the server's folders.")]
ThreadId = Annotated[str, Field(description="The thread id an earlier answer named.")]


class ProgressNotes:
    """A sink turning the root's iterations into MCP progress notifications.

    The run streams in a worker thread; the notification is sent on the server's loop.
    """

    def __init__(self, ctx: Context, total: int) -> None:
        self.ctx = ctx
        self.total = total

    def custom(self, event: Event) -> None:
        """Report a root iteration (progress must only grow, so nothing deeper)."""
        if event["event"] == "iteration" and event["depth"] == 0:
            step = event["iteration"]
            note = f"iteration {step} of at most {self.total}"
            anyio.from_thread.run(self.ctx.report_progress, step, self.total, note)

    def values(self, state: dict[str, Any]) -> None:
        """Nothing to report."""

    def close(self) -> None:
        """Nothing to close."""


class RLMServer:
    """The tools' work, on a durable graph; one question at a time per thread."""

    def __init__(self, fixed: FixedRLM, persistence: Persistence, checkpoint: str) -> None:
        self.fixed = fixed
        self.checkpoint = checkpoint
        self.store = persistence.store
        self.graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        self.busy: dict[str, threading.Lock] = {}

    def answer(self, question: str, path: str, ctx: Context) -> str:
        """Start a thread over ``path`` and answer ``question``."""
        try:
            real = confine(path, self.fixed.roots)
        except ContextError as exc:
            raise ToolError(str(exc)) from exc
        thread = uuid.uuid4().hex[:12]
        self.store.put(THREADS, thread, {"path": str(real)})
        return self._ask(thread, question, real, ctx)

    def followup(self, thread: str, question: str, ctx: Context) -> str:
        """Ask ``question`` on a thread this server's folders allow."""
        started = self.store.get(THREADS, thread)
        if started is None:
            raise ToolError(f"no thread {thread!r} was started here: start one with rlm_answer")
        if not within(Path(started.value["path"]), self.fixed.roots):
            raise ToolError(f"thread {thread!r} read a path outside this server's folders")
        return self._ask(thread, question, None, ctx)

    def _ask(self, thread: str, question: str, context: Path | None, ctx: Context) -> str:
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        notes = ProgressNotes(ctx, self.fixed.settings.max_iterations)
        # Both locks: the checkpoint's is a byte-range lock, which POSIX grants to every
        # thread of the process that holds it, so this server's own calls queue on the
        # first. Another process's run is refused, not waited for: a client's call
        # should not hang on a run it cannot see.
        try:
            with (
                self.busy.setdefault(thread, threading.Lock()),  # setdefault is atomic
                thread_lock(self.checkpoint, thread),
            ):
                outcome: Outcome = self.fixed.run(
                    question, context, graph=self.graph, config=config, progress=notes
                )
        except ThreadBusy as exc:
            raise ToolError(f"{exc}: ask again when it ends") from exc
        print(f"rlm mcp: thread {thread}: trace {outcome.trace}", file=sys.stderr, flush=True)
        return outcome.message(f"thread {thread}")


def build_server(server: RLMServer) -> MCPServer:
    """The MCP server offering ``rlm_answer`` and ``rlm_followup``."""
    # WARNING: at INFO the SDK logs every model request of the run on stderr.
    mcp = MCPServer("rlm-graph", instructions=INSTRUCTIONS, log_level="WARNING")
    where = ", ".join(str(root) for root in server.fixed.roots)

    # Unstructured: a structured copy of the answer would reach the model twice.
    @mcp.tool(
        description="Answer a question about a file or folder too large to read (a log, a "
        f"repository, reports) under {where}: code in a sandbox reads it, never you. Starts "
        "a thread that rlm_followup can ask again.",
        structured_output=False,
    )
    def rlm_answer(
        question: Question,
        path: FileOrFolder,
        ctx: Context,
    ) -> str:
        return server.answer(question, path, ctx)

    @mcp.tool(
        description="Ask another question on a thread rlm_answer started: the sandbox keeps "
        "its variables and the earlier answers.",
        structured_output=False,
    )
    def rlm_followup(
        thread: ThreadId,
        question: Question,
        ctx: Context,
    ) -> str:
        return server.followup(thread, question, ctx)

    return mcp


def serve(fixed: FixedRLM, checkpoint: str, port: int | None = None) -> None:
    """Serve until the client hangs up: stdio, or streamable HTTP on 127.0.0.1:``port``."""
    warm_up()  # the first sandbox then opens at once
    with open_persistence(checkpoint) as persistence:
        mcp = build_server(RLMServer(fixed, persistence, checkpoint))
        if port is None:
            mcp.run("stdio")
        else:
            mcp.run("streamable-http", host="127.0.0.1", port=port)
