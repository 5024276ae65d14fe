"""The RLM as a LangChain tool, for agents built with ``langchain.agents.create_agent``.

``rlm_tool(model=..., roots=[...])`` returns a tool an agent calls with a question and one
context reference: a path under the allowed folders, a ``ctx-`` id of a context stored
before, or text. Everything else (models, budgets, folders, where traces go) is fixed
when the tool is made: the tool's arguments refuse any other key, so the calling model
cannot raise a budget or pick a folder. The model reads the answer and one provenance
line; the app gets the run's summary and trace path as the tool message's ``artifact``.
When the agent is streamed with ``stream_mode="custom"``, the RLM's progress events
(docs/trajectory.md, each with ``"source": <tool name>``) arrive on that stream.

May import anything below ``integrations`` (it goes through ``integrations.calls``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field

from rlm_graph.integrations.calls import FixedRLM, Outcome, fixed_settings, forward_progress
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import ContextError
from rlm_graph.storage.roots import PathLike

DESCRIPTION = (
    "Answer a question about a context too large to read yourself (a big log, a "
    "repository, a folder of reports). The context is read by code in a sandbox, never "
    "by you: you get the answer and one line on what it cost. Give the question and "
    "exactly one of: path (a file or folder{where}), context_id (the ctx-... id an "
    "earlier answer named, to ask about the same context again) or text (short text "
    "you already hold)."
)


class RLMArgs(BaseModel):
    """A call's arguments: the question and one context reference, nothing else."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="The question to answer about the context.")
    path: str | None = Field(default=None, description="A file or folder to read.")
    context_id: str | None = Field(
        default=None, description="A ctx-... id from an earlier answer: the same context."
    )
    text: str | None = Field(default=None, description="The context itself, as text.")


def rlm_tool(
    settings: Settings | None = None,
    *,
    roots: Sequence[PathLike] = (),
    trace_dir: PathLike | None = None,
    name: str = "rlm",
    description: str | None = None,
    **fields: Any,
) -> BaseTool:
    """A tool answering questions with the RLM under settings fixed now.

    ``settings`` and/or ``fields`` (any :class:`~rlm_graph.Settings` field, e.g.
    ``model=``, ``max_sub_calls=``) are checked now. ``roots`` are the folders a path may
    lie under (none: no files, only ids and text). Each call writes its trajectory to
    ``trace_dir`` (default: ``$RLM_GRAPH_HOME/traces``).
    """
    fixed = FixedRLM(fixed_settings(settings, fields), roots, trace_dir)

    def run(question: str, **reference: str | None) -> tuple[str, dict[str, Any]]:
        outcome = fixed.run(question, _context(fixed, reference), progress=forward_progress(name))
        return _reply(outcome)

    async def arun(question: str, **reference: str | None) -> tuple[str, dict[str, Any]]:
        outcome = await fixed.arun(
            question, _context(fixed, reference), progress=forward_progress(name)
        )
        return _reply(outcome)

    folders = ", ".join(str(root) for root in fixed.roots)
    where = f" under {folders}" if folders else ": none may be read here"
    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description or DESCRIPTION.format(where=where),
        args_schema=RLMArgs,
        response_format="content_and_artifact",
        handle_tool_error=True,
    )


def _reply(outcome: Outcome) -> tuple[str, dict[str, Any]]:
    """The message (naming the context's id, to ask again) and the artifact for the app."""
    more = [f"context {outcome.context}"] if outcome.context else []
    return outcome.message(*more), outcome.artifact()


def _context(fixed: FixedRLM, reference: dict[str, str | None]) -> Path | str:
    """The context a call names; a refusal goes back to the calling model as its message."""
    try:
        return fixed.context(**reference)
    except ContextError as exc:
        raise ToolException(str(exc)) from exc
