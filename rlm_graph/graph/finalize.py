"""The finalize node: the answer, marked with how it was reached.

A run that ran out of iterations asks the model once for its best answer; one stopped
by a cost limit (or a sub-RLM whose tree has nothing left) may not ask again, so it
returns the last output its code produced.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.runtime import Runtime

from rlm_graph.deployment import Deployment
from rlm_graph.graph import prompts
from rlm_graph.graph.plan import WindowFull, ask_fitted, conversation, reply_event, turn_cells
from rlm_graph.graph.runtime import (
    blobs_of,
    emit,
    question_of,
    scope_of,
    settings_of,
    thread_id,
)
from rlm_graph.graph.state import State, TurnRecord
from rlm_graph.models.messages import message_text
from rlm_graph.models.pricing import cost_of
from rlm_graph.models.usage import add_usage
from rlm_graph.observe import events
from rlm_graph.observe.events import FinalStatus
from rlm_graph.offload import offload
from rlm_graph.repl.registry import REGISTRY
from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.records import load_cell
from rlm_graph.subcalls.scope import Scope
from rlm_graph.text import one_line


def best_effort_request(
    state: State, settings: Settings, scope: Scope, blobs: Blobs, tightness: int = 0
) -> list[AnyMessage]:
    """The conversation so far, ending in the request for the best answer it supports."""
    cells = turn_cells(state, blobs)
    messages = conversation(
        state, settings, scope, blobs, cells, tool_calling=False, tightness=tightness
    )
    if len(messages) > 2:
        messages.pop()  # the "continue" nudge; the best-effort request replaces it
    messages.append(HumanMessage(prompts.BEST_EFFORT_PROMPT))
    return messages


async def best_effort(
    state: State, settings: Settings, scope: Scope, blobs: Blobs
) -> tuple[str, dict[str, Any]]:
    """One last model call, without tools, for the best answer the history supports."""
    build = partial(best_effort_request, state, settings, scope, blobs)
    reply, seconds = await ask_fitted(build, settings, scope, tools=False)
    event = reply_event(reply, settings, scope.depth, state.get("iteration", 0), seconds, "")
    event["best_effort"] = True
    emit(event)
    scope.budget.spend(event["usage"])
    return message_text(reply), {"usage": event["usage"]}


def best_so_far(state: State, blobs: Blobs) -> str:
    """The last output the run's code produced (no model may be asked for a summary)."""
    turn = state.get("turn", 1)
    for ref in reversed(state.get("cells") or []):
        if ref["turn"] == turn and ref["kind"] == "model" and ref["preview"].strip():
            return str(load_cell(blobs, state["sandbox_id"], ref)["output"])
    return ""


def release_run_sandbox(state: State, thread: str) -> None:
    """Close the sandbox of a run without a thread: nobody can come back to it."""
    if not thread and state.get("sandbox_id"):
        REGISTRY.release(state["sandbox_id"])
        Blobs.forget(state["sandbox_id"])


async def cut_short(
    state: State, scope: Scope, blobs: Blobs, reason: str
) -> tuple[FinalStatus, Any, dict[str, Any]]:
    """How a run stopped by ``reason`` ends: the root answers with its last output."""
    if scope.answers_partially:
        last = await offload(best_so_far, state, blobs)
        return "budget_exhausted", last, {"stop_reason": reason}
    return "budget_exhausted", "", {"error": f"{reason} before this sub-RLM answered"}


async def outcome(
    state: State, settings: Settings, scope: Scope, blobs: Blobs
) -> tuple[FinalStatus, Any, dict[str, Any]]:
    """How the run ends: its status, its answer, and what else finalize records."""
    if state.get("status") == "answered":
        return "answered", state.get("answer"), {}
    if reason := state.get("stop_reason") or scope.blocked(settings):
        return await cut_short(state, scope, blobs, reason)
    try:
        answer, extra = await best_effort(state, settings, scope, blobs)
    except WindowFull as exc:
        return await cut_short(state, scope, blobs, str(exc))
    except Exception as exc:  # the run's cells stay in state either way
        return "failed", "", {"error": f"best-effort answer failed: {one_line(exc)}"}
    return "budget_exhausted", answer, extra


async def finalize(
    state: State, runtime: Runtime[Settings], *, deployment: Deployment
) -> dict[str, Any]:
    """Return the answer, marking how it was reached; release a run-scoped sandbox."""
    update: dict[str, Any] = {"step": None}
    if state.get("status") == "failed":
        update["messages"] = [AIMessage(content=f"The run failed: {state.get('error', '')}")]
        await offload(release_run_sandbox, state, thread_id())
        return update
    settings = settings_of(runtime, deployment)
    scope = scope_of(settings, state, deployment)
    status, answer, extra = await outcome(state, settings, scope, blobs_of(runtime))
    update.update(extra, answer=answer, status=status)
    usage = add_usage(state.get("usage") or {}, update.get("usage") or {})
    update["cost"] = cost_of(usage, settings.prices)
    emit(
        events.final(
            depth=scope.depth,
            status=status,
            answer=answer,
            stop_reason=update.get("stop_reason", ""),
            usage=usage,
        )
    )
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    update["messages"] = [AIMessage(content=text)]
    update["history"] = [
        *(state.get("history") or []),
        TurnRecord(question=question_of(state), answer=answer, status=status),
    ]
    await offload(release_run_sandbox, state, thread_id())
    return update
