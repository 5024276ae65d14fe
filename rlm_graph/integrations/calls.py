"""One RLM call on an agent's behalf: what the LangChain tool, the subagent and MCP share.

Whoever builds the agent (the operator) fixes the settings, the folders a file may come
from and where traces go (:class:`FixedRLM`); a call brings only a question and a context
reference, so the calling model can neither raise a budget nor choose another model or
folder. The calling model gets the answer and one line on what it cost (the answer is
all it pays for in tokens); the trajectory goes to a trace file the app can open.

May import anything below ``integrations``; used by the modules beside it.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer

from rlm_graph.api import aanswer, answer
from rlm_graph.cli.summary import summary
from rlm_graph.graph.runner import Graph, RLMResult, result_from
from rlm_graph.observe.events import Event
from rlm_graph.observe.progress import Sink
from rlm_graph.settings import Settings
from rlm_graph.storage import context_ids
from rlm_graph.storage.contexts import ContextError, blob_dir, blob_name
from rlm_graph.storage.home import home
from rlm_graph.storage.roots import PathLike, check_roots, confine
from rlm_graph.text import one_line


@dataclass(frozen=True)
class Outcome:
    """A finished call: the result, the context's id, and the trace that holds the rest."""

    result: RLMResult
    trace: Path

    @property
    def context(self) -> str:
        """The ``ctx-...`` id of the context the run read ("" if none is known)."""
        ref = self.result.state.get("context_ref")
        return context_ids.context_id(ref) if ref else ""

    def provenance(self, *more: str) -> str:
        """One line on what the call cost, and ``more`` (how to ask again)."""
        return f"[rlm: {'; '.join([summary(self.result), *more])}]"

    def message(self, *more: str) -> str:
        """What the calling model reads: the answer (or the error) and the provenance line."""
        result = self.result
        if result.status == "failed":
            head = f"The RLM run failed: {result.error or 'no answer'}"
        elif result.status == "budget_exhausted":
            head = f"(best-effort answer, the budget ran out)\n{result.answer_text()}"
        else:
            head = result.answer_text()
        return f"{head}\n{self.provenance(*more)}"

    def artifact(self) -> dict[str, Any]:
        """What the app gets beside the message: the run's summary and its trace file."""
        return {**self.result.to_json(), "trace": str(self.trace), "context": self.context}


class Forward:
    """A sink passing the RLM's progress events on to a caller's stream, marked as ours.

    LangGraph's writer reads the caller's config when it writes, so it is called in the
    context it was made in, not in the RLM run's own (see :meth:`FixedRLM.run`).
    """

    def __init__(self, write: Callable[[Any], None], source: str) -> None:
        self.write = write
        self.source = source
        self.caller = contextvars.copy_context()

    def custom(self, event: Event) -> None:
        """Pass the event on, saying which tool it came from."""
        self.caller.run(self.write, {**event, "source": self.source})

    def values(self, state: dict[str, Any]) -> None:
        """State stays here: the caller's stream gets events only."""

    def close(self) -> None:
        """Nothing to close."""


def fixed_settings(settings: Settings | None, fields: dict[str, Any]) -> Settings:
    """``settings`` with ``fields`` (Settings field names) over them, checked now."""
    return Settings.from_mapping({**(asdict(settings) if settings else {}), **fields})


def forward_progress(source: str) -> Forward | None:
    """Progress to the calling graph's custom stream, when the call runs inside a graph."""
    try:
        return Forward(get_stream_writer(), source)
    # Outside any runnable LangGraph raises RuntimeError; inside a plain runnable (a
    # tool invoked directly) the config has no graph runtime: KeyError.
    except (RuntimeError, KeyError):
        return None


class FixedRLM:
    """RLM calls with settings, allowed folders and a trace folder fixed at creation."""

    def __init__(
        self,
        settings: Settings,
        roots: Sequence[PathLike] = (),
        trace_dir: PathLike | None = None,
    ) -> None:
        self.settings = settings
        self.roots = check_roots(roots)
        self.trace_dir = Path(trace_dir) if trace_dir else home() / "traces"

    def context(
        self, *, path: str | None = None, context_id: str | None = None, text: str | None = None
    ) -> Path | str:
        """What one call names, as :func:`~rlm_graph.api.answer` takes it; exactly one of three.

        A path must lie under the allowed folders. An id names a context stored before;
        its stored file is passed on (re-reading it finds the same content hash).
        """
        given = [value for value in (path, context_id, text) if value is not None]
        if len(given) != 1:
            raise ContextError("give exactly one of path, context_id or text")
        if path is not None:
            return confine(path, self.roots)
        if context_id is not None:
            ref = context_ids.find_context(context_id)
            return blob_dir(ref) / blob_name(ref)
        return str(text)

    def run(
        self,
        question: str,
        context: Any,
        *,
        graph: Graph | None = None,
        config: RunnableConfig | None = None,
        progress: Sink | None = None,
    ) -> Outcome:
        """Answer ``question``; ``graph`` and ``config`` name a durable thread to continue.

        A failure (a model down, a context too large) is a failed outcome, not an
        exception, so the calling model reads what went wrong. The run starts in an
        empty ``contextvars`` context, as a run of its own: inside a calling graph's tool
        it would otherwise inherit that graph's config (measured: the agent's
        checkpointer took the RLM's steps under a ``tools:`` namespace, and its thread id
        kept each sandbox process open for a follow-up no call can make). The caller's
        stream still gets the progress, through the writer ``progress`` holds.
        """
        trace = self._trace_file()
        try:
            result = contextvars.Context().run(
                partial(
                    answer,
                    question,
                    context,
                    graph=graph,
                    config=config,
                    trace=trace,
                    progress=progress,
                    **asdict(self.settings),
                )
            )
        except Exception as exc:
            result = result_from({}, 0.0, self.settings, one_line(exc))
        return Outcome(result, trace)

    async def arun(self, question: str, context: Any, *, progress: Sink | None = None) -> Outcome:
        """Async :meth:`run` (on the default graph: no thread)."""
        trace = self._trace_file()
        run = aanswer(question, context, trace=trace, progress=progress, **asdict(self.settings))
        try:
            result = await asyncio.get_running_loop().create_task(
                run, context=contextvars.Context()
            )
        except Exception as exc:
            result = result_from({}, 0.0, self.settings, one_line(exc))
        return Outcome(result, trace)

    def _trace_file(self) -> Path:
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        return self.trace_dir / f"rlm-{uuid.uuid4().hex[:12]}.jsonl"
