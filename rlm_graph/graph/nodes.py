"""The RLM as a LangGraph graph: plan → execute → inspect → (plan | finalize).

- plan: the root model reads the question and the cells so far and replies with code
  (or a final answer).
- execute: the code runs in the thread's eryx sandbox; sub-calls made by the code are
  answered by the broker (plain model calls, or sub-RLMs: this same graph, one level
  deeper).
- inspect: counts the budget, finds a final answer, routes.
- finalize: returns the answer, or asks once for a best effort when the budget ran out.

All nodes are synchronous on purpose: a sandbox cell blocks its thread, and LangGraph
runs sync nodes in worker threads under ``ainvoke`` and ``langgraph dev`` alike.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import replace
from functools import cache
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from rlm_graph.graph import prompts
from rlm_graph.graph.approval import review
from rlm_graph.graph.replies import TOOL_NAME, ParsedReply, parse_reply
from rlm_graph.graph.state import (
    InputState,
    OutputState,
    Pending,
    State,
    Status,
    TurnRecord,
)
from rlm_graph.models.loading import load_chat_model
from rlm_graph.models.messages import message_text, usage_of
from rlm_graph.models.pricing import cost_of
from rlm_graph.models.usage import add_usage, usage_since
from rlm_graph.observe.tracing import cell_span, run_metadata
from rlm_graph.repl.registry import REGISTRY
from rlm_graph.repl.session import Limits, SandboxError
from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import ContextError, check_ref, share, store_path, store_value
from rlm_graph.storage.records import Cell, MissingRecord, load_cell, load_cells, save_cell
from rlm_graph.subcalls.broker import (
    CHARS_PER_TOKEN,
    ChildResult,
    Emit,
    SubCallBroker,
    SubCallMemo,
    memo_scope,
    open_budget,
    shared_budget,
)
from rlm_graph.text import one_line, truncate

EXECUTE_TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Run Python code in the persistent REPL that holds `context`. "
        "Returns what the code printed.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python source to run."}},
            "required": ["code"],
        },
    },
}


def settings_of(runtime: Runtime[Settings]) -> Settings:
    """The run's settings; a server may send none, or a plain dict."""
    context: Any = runtime.context
    if context is None:
        return Settings()
    if isinstance(context, dict):
        return Settings.from_mapping(context)
    return context  # type: ignore[no-any-return]


def sandbox_limits(settings: Settings) -> Limits:
    """The fields of the settings that shape a sandbox session."""
    return Limits(settings.cell_timeout, settings.cell_cpu_instructions, settings.sandbox_memory_mb)


def thread_id() -> str:
    """The run's thread, or "" for a run that cannot be resumed."""
    with suppress(RuntimeError):
        return str(get_config().get("configurable", {}).get("thread_id") or "")
    return ""


def blobs_of(runtime: Runtime[Settings]) -> Blobs:
    """Where this run keeps cell records and sub-call answers (see ``blobs``)."""
    return Blobs.for_run(runtime.store, resumable=bool(thread_id()))


def question_of(state: State) -> str:
    """The question: the ``question`` field, or the last human message (Studio chat)."""
    if question := state.get("question"):
        return question
    for message in reversed(state.get("messages") or []):
        if isinstance(message, HumanMessage):
            return message_text(message)  # type: ignore[arg-type]
    return ""


def _emit(event: dict[str, Any]) -> None:
    """Send a progress event to ``stream_mode="custom"`` listeners, if any.

    Events are the trajectory's raw material (docs/trajectory.md), so they carry what a
    trace needs (full cell output, timings, tokens) rather than pointing into state.
    """
    with suppress(RuntimeError):  # outside a runnable context (direct node calls)
        get_stream_writer()({**event, "ts": time.time()})


def thread_safe_writer() -> Callable[[dict[str, Any]], None] | None:
    """The node's stream writer, callable from the sub-call thread.

    The writer needs LangGraph's context variables, which the background sub-call loop
    does not have; running it in a copy of this node's context (one thread at a time)
    carries them over.
    """
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return None
    node_context = contextvars.copy_context()
    lock = threading.Lock()

    def write(event: dict[str, Any]) -> None:
        with lock:
            node_context.run(writer, event)

    return write


# -- plan -------------------------------------------------------------------------------


def begin_turn(state: State, question: str) -> dict[str, Any]:
    """Reset the per-question counters when a new question starts on this thread.

    A question continues (after a crash, an interrupt, or a root-model failure: asking
    it again resumes it) while its status is running or failed; any other status means
    the previous question ended and this one is new.
    """
    if state.get("active_question") == question:
        if state.get("status") == "running":
            return {}
        if state.get("status") == "failed":
            return {"status": "running", "error": ""}
    return {
        "active_question": question,
        "turn": state.get("turn", 0) + 1,
        "iteration": 0,
        "status": "running",
        "answer": None,
        "error": "",
        "stop_reason": "",
        "turn_usage": state.get("usage") or {},
        "pending": None,
    }


def ingest_context(state: State, blobs: Blobs) -> dict[str, Any]:
    """Move a context given in the input to the blob store, keeping only its reference.

    A new context on a thread starts a new sandbox: its variables described the old one.
    """
    if state.get("context") is not None:
        ref = store_value(state["context"])
    elif state.get("context_path"):
        ref = store_path(state["context_path"])
    elif state.get("context_ref"):
        ref = check_ref(state["context_ref"], blobs)
    else:
        raise ContextError(
            "no context given: send `context` (text or JSON), `context_path` or `context_ref`"
        )
    update: dict[str, Any] = {"context": None, "context_path": "", "context_ref": ref}
    if state.get("bound_hash") != ref["hash"] or not state.get("sandbox_id"):
        share(ref, blobs)
        update.update(sandbox_id=uuid.uuid4().hex, bound_hash=ref["hash"], cells=[])
    return update


def pending_from(parsed: ParsedReply) -> Pending:
    """Turn a parsed reply into the work for execute.

    ``FINAL_VAR(name)`` outside code runs after the reply's code, in the sandbox, so it
    names a value the code really computed.
    """
    code = parsed.code
    if parsed.final_var is not None:
        code = (
            f"{code}\nFINAL_VAR({parsed.final_var!r})"
            if code
            else f"FINAL_VAR({parsed.final_var!r})"
        )
    pending = Pending(code=code, reply=parsed.text, tool_call_id=parsed.tool_call_id)
    if not parsed.code and parsed.final_var is not None:
        pending["generated"] = True  # a lookup of ours: nothing for a person to review
    if parsed.final_text is not None:
        pending["final_text"] = parsed.final_text
    if parsed.problem:
        pending["note"] = parsed.problem
    return pending


def history_setup(history: list[TurnRecord]) -> str:
    """Code that defines ``history`` in the sandbox for a follow-up question."""
    return f"history = _rlm_json.loads({json.dumps(history, default=str)!r})"


def root_model(settings: Settings) -> BaseChatModel:
    """The root model client for these settings."""
    return load_chat_model(
        settings.model, settings.base_url, settings.model_timeout, settings.model_max_retries
    )


def conversation(
    state: State, settings: Settings, blobs: Blobs, *, tool_calling: bool
) -> list[AnyMessage]:
    """What the root model reads: instructions, the question, this turn's cells."""
    turn = state.get("turn", 1)
    refs = [c for c in state.get("cells") or [] if c["turn"] == turn]
    system = prompts.system_prompt(
        state["context_ref"],
        max_output_chars=settings.max_output_chars,
        max_iterations=settings.max_iterations,
        max_sub_calls=settings.max_sub_calls,
        sub_window_tokens=settings.sub_model_window_tokens,
        chars_per_token=CHARS_PER_TOKEN,
        recursive=settings.depth + 1 < settings.max_depth,
        tool_calling=tool_calling,
        history=state.get("history") or [],
    )
    return prompts.build_messages(
        system,
        question_of(state),
        load_cells(blobs, state["sandbox_id"], refs),
        iteration=state.get("iteration", 0),
        max_iterations=settings.max_iterations,
        max_output_chars=settings.max_output_chars,
    )


def step_allowed(settings: Settings) -> bool:
    """A sub-RLM's every step is a sub-call of its tree, drawn from the shared budget."""
    if settings.depth == 0:
        return True
    budget = shared_budget(settings.budget_key, settings.max_sub_calls)
    return not settings.over_budget(budget.spent) and budget.take(1)


def spend_in_tree(settings: Settings, usage: dict[str, dict[str, int]]) -> None:
    """A sub-RLM's model call counts at once toward its tree's cost limits."""
    if settings.depth > 0:
        shared_budget(settings.budget_key, settings.max_sub_calls).spend(usage)


def turn_spend(state: State) -> dict[str, dict[str, int]]:
    """What the current question has used so far (a thread's usage spans questions)."""
    return usage_since(state.get("usage") or {}, state.get("turn_usage") or {})


def plan(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Ask the root model for the next cell."""
    settings = settings_of(runtime)
    question = question_of(state)
    if not question.strip():
        raise ValueError("no question given: send `question` (or a human message)")
    blobs = blobs_of(runtime)
    update = begin_turn(state, question)
    try:
        update.update(ingest_context(state, blobs))
    except ContextError as exc:  # a missing path, bad JSON: the run ends saying which
        update.update(
            status="failed",
            error=str(exc),
            pending=Pending(code="", reply="", tool_call_id="", stop=True),
        )
        return update
    view: State = {**state, **update}  # type: ignore[typeddict-item]
    if not step_allowed(settings):
        update["pending"] = Pending(code="", reply="", tool_call_id="", stop=True)
        return update
    if view["sandbox_id"] not in REGISTRY:
        REGISTRY.prepare(view["sandbox_id"], view["context_ref"], sandbox_limits(settings))
    iteration = view.get("iteration", 0)
    try:
        messages = conversation(view, settings, blobs, tool_calling=settings.tool_calling)
        _emit(iteration_event(messages, iteration + 1, settings))
        started = time.perf_counter()
        model = root_model(settings)
        reply = (model.bind_tools([EXECUTE_TOOL]) if settings.tool_calling else model).invoke(
            messages,
            config={"metadata": run_metadata(settings.depth, iteration + 1, view["sandbox_id"])},
        )
    except MissingRecord as exc:
        update.update(
            status="failed",
            error=str(exc),
            pending=Pending(code="", reply="", tool_call_id="", stop=True),
        )
        return update
    except Exception as exc:  # after the client's own retries: stop, keep every cell
        update.update(
            status="failed",
            error=f"root model call failed: {one_line(exc)}",
            pending=Pending(code="", reply="", tool_call_id="", stop=True),
        )
        return update
    assert isinstance(reply, AIMessage)
    pending = pending_from(parse_reply(reply))
    if update.get("turn") and view.get("history") and view.get("cells"):
        pending["setup"] = history_setup(view["history"])
    update["pending"] = pending
    update["usage"] = usage_of(reply, settings.model)
    spend_in_tree(settings, update["usage"])
    _emit(reply_event(reply, settings, iteration + 1, pending["code"], started))
    return update


def reply_event(
    reply: AIMessage, settings: Settings, iteration: int, code: str, started: float
) -> dict[str, Any]:
    """The root model replied: what it said, the code it gave, what the call cost."""
    return {
        "event": "reply",
        "depth": settings.depth,
        "iteration": iteration,
        "text": message_text(reply),
        "code": code,
        "model": settings.model,
        "usage": usage_of(reply, settings.model),
        "seconds": round(time.perf_counter() - started, 4),
    }


def iteration_event(
    messages: list[AnyMessage], iteration: int, settings: Settings
) -> dict[str, Any]:
    """An iteration starts: how big the prompt is; the first one also says what it was."""
    event: dict[str, Any] = {
        "event": "iteration",
        "iteration": iteration,
        "depth": settings.depth,
        "prompt_chars": sum(len(str(m.content)) for m in messages),
        "prompt_messages": len(messages),
    }
    if iteration == 1:
        event.update(system_prompt=str(messages[0].content), question=str(messages[1].content))
    return event


# -- execute ----------------------------------------------------------------------------


async def run_child(prompt: str, settings: Settings, emit: Emit | None = None) -> ChildResult:
    """A sub-call as a full sub-RLM: the same graph, one level deeper, same budget.

    Its progress events go to ``emit``, so the root's stream shows the whole tree.
    """
    child = replace(settings, depth=settings.depth + 1)
    result: dict[str, Any] = {}
    async for mode, chunk in child_graph().astream(
        {"question": prompts.CHILD_QUESTION, "context": prompt},
        config={
            "recursion_limit": 4 * child.max_iterations + 10,
            "metadata": {"rlm_depth": child.depth},
        },
        context=child,
        stream_mode=["custom", "values"],
    ):
        if mode == "values":
            result = cast(dict[str, Any], chunk)
        elif emit is not None:
            emit(cast(dict[str, Any], chunk))
    if result.get("status") == "failed":
        raise RuntimeError(result.get("error") or "sub-RLM failed")
    answer = result.get("answer")
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    return ChildResult(answer=text, usage=result.get("usage") or {})


def _cell(pending: Pending, turn: int, **fields: Any) -> Cell:
    base = Cell(
        kind="model",
        turn=turn,
        code=pending["code"],
        reply=pending["reply"],
        tool_call_id=pending["tool_call_id"],
        output="",
        error="",
        halted=False,
        journal=[],
        sub_calls=0,
        seconds=0.0,
    )
    base.update(fields)  # type: ignore[typeddict-item]
    return base


def execute(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Run the planned code in the sandbox and record it as a cell.

    With ``approve_code`` the node first stops (``interrupt``) until a person accepts,
    edits or rejects the code; nothing before that point has effects, so the node can
    safely start over when the run resumes, in this process or another.
    """
    settings = settings_of(runtime)
    pending = state.get("pending")
    if pending is None or pending.get("stop"):
        return {}
    if settings.approve_code and pending["code"] and not pending.get("generated"):
        pending = review(pending, interrupt({"code": pending["code"], "reply": pending["reply"]}))
    turn = state.get("turn", 1)
    cells = list(state.get("cells") or [])
    sandbox_id = state["sandbox_id"]
    blobs = blobs_of(runtime)
    if not pending["code"]:
        if "final_text" in pending:
            return {}
        note = _cell(pending, turn, kind="note", output=pending.get("note", ""))
        return {"cells": [*cells, save_cell(blobs, sandbox_id, note)], "pending": pending}
    key = settings.budget_key or sandbox_id
    if settings.depth == 0:
        budget = open_budget(
            key, settings.max_sub_calls - state.get("sub_calls", 0), turn_spend(state)
        )
    else:
        budget = shared_budget(key, settings.max_sub_calls)
    limits = sandbox_limits(settings)
    first_line = pending["code"].strip().splitlines()[0] if pending["code"].strip() else ""
    iteration = state.get("iteration", 0) + 1
    metadata = run_metadata(settings.depth, iteration, sandbox_id)
    _emit(
        {
            "event": "cell",
            "depth": settings.depth,
            "iteration": iteration,
            "code_line": first_line[:120],
            "code": pending["code"],
        }
    )
    new_cells = []
    with ExitStack() as stack:
        broker = SubCallBroker(
            replace(settings, budget_key=key),
            budget,
            run_child=run_child,
            emit=thread_safe_writer(),
            trace_parent=stack.enter_context(cell_span(pending["code"], metadata)),
            trace_metadata=metadata,
        )
        try:
            ref = check_ref(state["context_ref"], blobs)  # another worker may lack the file
            sandbox = stack.enter_context(
                REGISTRY.checkout(
                    sandbox_id,
                    ref,
                    cells,
                    limits,
                    broker,
                    lambda refs: load_cells(blobs, sandbox_id, refs),
                )
            )
        except (SandboxError, MissingRecord, ContextError) as exc:  # stop, keep every cell
            return {"status": "failed", "error": str(exc)}
        broker.memo = SubCallMemo(blobs, sandbox_id, memo_scope(settings))
        setups = [("system", pending["setup"])] if pending.get("setup") else []
        for kind, code in [*setups, ("model", pending["code"])]:
            outcome = sandbox.run(code)
            output = truncate(outcome.output, settings.max_output_chars)
            if kind == "model" and "final_text" in pending and outcome.final is None:
                output += (
                    "\n[Your FINAL(...) was not accepted: it was written before this output "
                    "existed. If it still holds, reply with FINAL again.]"
                )
            cell = _cell(
                pending,
                turn,
                kind=kind,
                code=code,
                output=output,
                error=outcome.error,
                halted=outcome.halted,
                journal=outcome.journal,
                sub_calls=broker.calls if kind == "model" else 0,
                seconds=round(outcome.seconds, 4),
            )
            if outcome.final is not None:
                cell["final"] = outcome.final["value"]
            _emit(cell_end_event(cell, outcome.output, iteration, settings.depth))
            saved = save_cell(blobs, sandbox_id, cell)
            REGISTRY.record(sandbox_id, saved)
            new_cells.append(saved)
            if outcome.halted:  # the session is rebuilt by replay at the next checkout
                break
    used = budget.used if settings.depth == 0 else broker.calls
    return {
        "cells": [*cells, *new_cells],
        "pending": pending,
        "usage": broker.usage,
        "sub_calls": state.get("sub_calls", 0) + used,
    }


def cell_end_event(cell: Cell, full_output: str, iteration: int, depth: int) -> dict[str, Any]:
    """A cell finished: its whole output (the model saw a truncated view) and its outcome."""
    event: dict[str, Any] = {
        "event": "cell_end",
        "depth": depth,
        "iteration": iteration,
        "kind": cell["kind"],
        "code": cell["code"],
        "output": full_output,
        "error": cell["error"],
        "halted": cell["halted"],
        "seconds": cell["seconds"],
        "sub_calls": cell["sub_calls"],
    }
    if "final" in cell:
        event["final"] = cell["final"]
    return event


# -- inspect ----------------------------------------------------------------------------


def inspect(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Count the iteration, look for a final answer, stop at a cost limit."""
    settings = settings_of(runtime)
    pending = state.get("pending") or Pending(code="", reply="", tool_call_id="")
    if state.get("status") == "failed":  # the model never replied: no iteration spent
        return {"pending": None}
    iteration = state.get("iteration", 0) + 1
    update: dict[str, Any] = {"iteration": iteration, "pending": None}
    if pending.get("stop"):
        update["status"] = "budget_exhausted"
        return update
    if not pending["code"] and "final_text" in pending:
        update.update(answer=pending["final_text"], status="answered")
        return update
    cells = state.get("cells") or []
    last = cells[-1] if cells else None
    if pending["code"] and last is not None and "final" in last:
        update.update(answer=last["final"], status="answered")
    elif settings.depth == 0 and (reason := settings.over_budget(turn_spend(state))):
        update.update(status="budget_exhausted", stop_reason=reason)
    return update


def route_after_inspect(state: State, runtime: Runtime[Settings]) -> Literal["plan", "finalize"]:
    """Loop while there is no answer and budget is left."""
    settings = settings_of(runtime)
    if state.get("status") != "running" or state.get("iteration", 0) >= settings.max_iterations:
        return "finalize"
    return "plan"


# -- finalize ---------------------------------------------------------------------------


def best_effort(state: State, settings: Settings, blobs: Blobs) -> tuple[Any, dict[str, Any]]:
    """One last model call, without tools, for the best answer the history supports."""
    messages = conversation(state, settings, blobs, tool_calling=False)
    if len(messages) > 2:
        messages.pop()  # the "continue" nudge; the best-effort request replaces it
    messages.append(HumanMessage(prompts.BEST_EFFORT_PROMPT))
    started = time.perf_counter()
    reply = root_model(settings).invoke(messages)
    assert isinstance(reply, AIMessage)
    event = reply_event(reply, settings, state.get("iteration", 0), "", started)
    _emit({**event, "best_effort": True})
    return message_text(reply), {"usage": event["usage"]}


def best_so_far(state: State, blobs: Blobs) -> str:
    """The answer of a run stopped by a cost limit: the last output its code produced.

    No model may be asked for a summary (that would spend past the limit), and the last
    cell's output is what the run had computed when it stopped.
    """
    turn = state.get("turn", 1)
    for ref in reversed(state.get("cells") or []):
        if ref["turn"] == turn and ref["kind"] == "model" and ref["preview"].strip():
            return str(load_cell(blobs, state["sandbox_id"], ref)["output"])
    return ""


def tree_exhausted(settings: Settings) -> str:
    """Why a sub-RLM's tree may not make another model call, or ""."""
    budget = shared_budget(settings.budget_key, settings.max_sub_calls)
    if budget.left <= 0:
        return "sub-call budget exhausted"
    return settings.over_budget(budget.spent)


def release_run_sandbox(state: State) -> None:
    """Close the sandbox of a run without a thread: nobody can come back to it."""
    if not thread_id() and state.get("sandbox_id"):
        REGISTRY.release(state["sandbox_id"])
        Blobs.forget(state["sandbox_id"])


def finalize(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
    """Return the answer, marking how it was reached; release a run-scoped sandbox."""
    settings = settings_of(runtime)
    update: dict[str, Any] = {"pending": None}
    answer = state.get("answer")
    status: Status
    if state.get("status") == "failed":
        update["messages"] = [AIMessage(content=f"The run failed: {state.get('error', '')}")]
        release_run_sandbox(state)
        return update
    if state.get("status") == "answered":
        status = "answered"
    elif state.get("stop_reason"):  # a cost limit: no further model call may be made
        status, answer = "budget_exhausted", best_so_far(state, blobs_of(runtime))
    elif settings.depth > 0 and (reason := tree_exhausted(settings)):
        status, answer = "budget_exhausted", ""
        update["error"] = f"{reason} before this sub-RLM answered"
    else:
        status = "budget_exhausted"
        try:
            answer, extra = best_effort(state, settings, blobs_of(runtime))
            update.update(extra)
        except Exception as exc:  # the run's cells stay in state either way
            answer = ""
            status = "failed"
            update["error"] = f"best-effort answer failed: {one_line(exc)}"
    update.update(answer=answer, status=status)
    usage = add_usage(state.get("usage") or {}, update.get("usage") or {})
    spend_in_tree(settings, update.get("usage") or {})
    update["cost"] = cost_of(usage, settings.prices)
    _emit(
        {
            "event": "final",
            "depth": settings.depth,
            "status": status,
            "answer": answer,
            "stop_reason": state.get("stop_reason", ""),
            "usage": usage,
        }
    )
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    update["messages"] = [AIMessage(content=text)]
    update["history"] = [
        *(state.get("history") or []),
        TurnRecord(question=question_of(state), answer=answer, status=status),
    ]
    release_run_sandbox(state)
    return update


# -- assembly ---------------------------------------------------------------------------


def build_graph(**compile_kwargs: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A compiled RLM graph; ``compile_kwargs`` go to ``compile`` (e.g. a checkpointer)."""
    builder = StateGraph(
        State, context_schema=Settings, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("plan", plan)
    builder.add_node("execute", execute)
    builder.add_node("inspect", inspect)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "execute")
    builder.add_edge("execute", "inspect")
    builder.add_conditional_edges("inspect", route_after_inspect, ["plan", "finalize"])
    builder.add_edge("finalize", END)
    compile_kwargs.setdefault("name", "rlm")
    return builder.compile(**compile_kwargs)


@cache
def child_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph sub-RLMs run: no checkpointer, since the parent's journal records them."""
    return build_graph(name="rlm-sub")


graph = build_graph()
