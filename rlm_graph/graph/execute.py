"""The execute node: the step's code runs in the thread's sandbox and becomes cells.

With ``approve_code`` the node first stops (``interrupt``) until a person accepts,
edits or rejects the code; nothing before that point has effects, so the node can
safely start over when the run resumes, in this process or another.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from rlm_graph.deployment import Deployment
from rlm_graph.graph.approval import review
from rlm_graph.graph.prompts import root_window
from rlm_graph.graph.recursion import executor_for
from rlm_graph.graph.runtime import (
    blobs_of,
    emit,
    given_models,
    sandbox_limits,
    scope_of,
    settings_of,
    thread_safe_writer,
)
from rlm_graph.graph.state import State, Step
from rlm_graph.graph.steps import note_cell
from rlm_graph.observe import events
from rlm_graph.observe.events import CellEndEvent
from rlm_graph.observe.tracing import cell_span, run_metadata
from rlm_graph.offload import offload
from rlm_graph.repl.cell import CellMeta, Workbench, aworkbench
from rlm_graph.repl.registry import REGISTRY, Checkout
from rlm_graph.repl.session import SandboxError
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import ContextError, check_ref
from rlm_graph.storage.records import Cell, CellRef, MissingRecord, save_cell
from rlm_graph.subcalls.broker import SubCallBroker
from rlm_graph.subcalls.memo import SubCallMemo, memo_scope

UNCONFIRMED_FINAL = (
    "\n[Your FINAL(...) was not accepted: it was written before this output existed. "
    "If it still holds, reply with FINAL again.]"
)


def reviewed(step: Step, settings: Settings) -> Step:
    """The step as a person decided it, when code needs approval; else as planned."""
    if settings.approve_code and step["code"] and not step.get("generated"):
        return review(step, interrupt({"code": step["code"], "reply": step["reply"]}))
    return step


async def execute(
    state: State, runtime: Runtime[Settings], *, deployment: Deployment
) -> dict[str, Any]:
    """Run the step's code in the sandbox (set-up code first) and record the cells.

    A coroutine: while a cell runs and waits on its sub-calls, no thread is held (the
    sandbox's process answers on its socket); records are written on a thread
    (``offload``).
    """
    settings = settings_of(runtime, deployment)
    step = reviewed(
        state["step"] or Step(kind="note", reply="", tool_call_id="", code=""), settings
    )
    cells, blobs, turn = list(state.get("cells") or []), blobs_of(runtime), state.get("turn", 1)
    sandbox_id = state["sandbox_id"]
    if step["kind"] == "note":  # rejected by the person: the model is told why
        rejected = note_cell(step, turn, step.get("note", ""))
        note = await offload(save_cell, blobs, sandbox_id, rejected)
        return {"cells": [*cells, note], "step": step}
    models = given_models()
    executor = executor_for(settings, models)
    # A cluster budget is an actor, and the first one connects to Ray: off the loop.
    scope = await offload(scope_of, settings, state, deployment, executor.open_budget)
    iteration = state.get("iteration", 0) + 1
    metadata = run_metadata(scope.depth, iteration, sandbox_id)
    emit(events.cell(depth=scope.depth, iteration=iteration, code=step["code"]))
    async with AsyncExitStack() as stack:
        broker = SubCallBroker(
            settings,
            scope,
            run_child=executor.run_child,
            emit=thread_safe_writer(),
            memo=SubCallMemo(blobs, sandbox_id, memo_scope(scope, settings)),
            sub_model=models.get(settings.effective_sub_model),
            trace_parent=stack.enter_context(cell_span(step["code"], metadata)),
            trace_metadata=metadata,
        )
        try:
            limits = sandbox_limits(settings)
            context = await offload(
                check_ref, state["context_ref"], blobs, limits.lazy_context_bytes
            )
            want = Checkout(sandbox_id, context, cells, limits, broker)
            bench = await stack.enter_async_context(aworkbench(REGISTRY, want, blobs))
        except (SandboxError, MissingRecord, ContextError) as exc:  # stop, keep every cell
            return {"status": "failed", "error": str(exc)}
        new_cells = await run_step(bench, step, turn, settings, broker, (iteration, scope.depth))
    return {
        "cells": [*cells, *new_cells],
        "step": step,
        "usage": broker.usage,
        "sub_calls": state.get("sub_calls", 0) + scope.counted(broker.calls),
    }


async def run_step(
    bench: Workbench,
    step: Step,
    turn: int,
    settings: Settings,
    broker: SubCallBroker,
    where: tuple[int, int],
) -> list[CellRef]:
    """The step's cells: its set-up code (a follow-up's ``history``), then its code.

    A halted cell ends the step: the session is rebuilt by replay at the next checkout.
    """
    setups = [("system", step["setup"])] if step.get("setup") else []
    recorded = []
    for kind, code in [*setups, ("model", step["code"])]:
        meta = CellMeta(
            kind="system" if kind == "system" else "model",
            turn=turn,
            reply=step["reply"],
            tool_call_id=step["tool_call_id"],
        )
        outcome, cell = await bench.arun(code, meta, root_window(settings).output_chars)
        if kind == "model":
            cell["sub_calls"] = broker.calls
            if note := broker.failure_note():
                cell["host_note"] = note
            if "final_text" in step and outcome.final is None:
                cell["output"] += UNCONFIRMED_FINAL
        emit(cell_end_event(cell, outcome.output, *where))
        recorded.append(await bench.arecord(cell))
        if outcome.halted:
            break
    return recorded


def cell_end_event(cell: Cell, full_output: str, iteration: int, depth: int) -> CellEndEvent:
    """A cell finished: its whole output (the model saw a truncated view) and its outcome."""
    event = events.cell_end(
        depth=depth,
        iteration=iteration,
        kind=cell["kind"],
        code=cell["code"],
        output=full_output,
        error=cell["error"],
        halted=cell["halted"],
        seconds=cell["seconds"],
        sub_calls=cell["sub_calls"],
    )
    if "final" in cell:
        event["final"] = cell["final"]
    return event
