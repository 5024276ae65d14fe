"""The plan node: the root model reads the question and the cells so far, and replies.

Its reply becomes a tagged step (``steps``) that the routing sends on: code to execute,
a final answer or a note to inspect, a stop to finalize.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from rlm_graph.deployment import Deployment
from rlm_graph.graph import prompts
from rlm_graph.graph.replies import TOOL_NAME, parse_reply
from rlm_graph.graph.runtime import (
    blobs_of,
    chat_model,
    emit,
    question_of,
    sandbox_limits,
    scope_of,
    settings_of,
)
from rlm_graph.graph.state import State, Step
from rlm_graph.graph.steps import (
    history_setup,
    note_cell,
    repeat_step,
    repeats,
    step_from,
    stop_step,
)
from rlm_graph.models.endpoints import call_failure, exceeds_window
from rlm_graph.models.loading import ModelConfigError
from rlm_graph.models.messages import message_text, usage_of
from rlm_graph.models.usage import WINDOW_CHARS_PER_TOKEN
from rlm_graph.observe import events
from rlm_graph.observe.events import IterationEvent, ReplyEvent
from rlm_graph.observe.tracing import run_metadata
from rlm_graph.offload import offload
from rlm_graph.repl.registry import REGISTRY
from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.storage.contexts import (
    ContextError,
    check_ref,
    is_lazy,
    share,
    store_path,
    store_value,
)
from rlm_graph.storage.records import Cell, MissingRecord, load_cell, load_cell_views, save_cell
from rlm_graph.subcalls.loop import in_call_pool
from rlm_graph.subcalls.scope import Scope

# Replies with code, none of them through the tool, after which it is no longer offered.
UNUSED_TOOL_REPLIES = 2
TOOL_SWITCH_NOTICE = (
    f"the model sent code in {UNUSED_TOOL_REPLIES} replies and never through the "
    f"{TOOL_NAME} tool: the tool is no longer offered, code travels in fenced blocks "
    "for the rest of this question"
)

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
        "step": None,
    }


def ingest_context(
    state: State, blobs: Blobs, deployment: Deployment, settings: Settings
) -> dict[str, Any]:
    """Move a context given in the input to the blob store, keeping only its reference.

    A path is read only where the deployment allows (on a server: under its operator's
    folders). A new context on a thread starts a new sandbox: its variables described
    the old one.
    """
    if state.get("context") is not None:
        ref = store_value(state["context"])
    elif state.get("context_path"):
        ref = store_path(
            deployment.readable(state["context_path"]),
            settings.lazy_folder_files,
            sandbox_limits(settings).lazy_context_bytes,
        )
    elif state.get("context_ref"):  # a large one only the store holds is read from there
        ref = check_ref(state["context_ref"], blobs, sandbox_limits(settings).lazy_context_bytes)
    else:
        raise ContextError(
            "no context given: send `context` (text or JSON), `context_path` or `context_ref`"
        )
    update: dict[str, Any] = {"context": None, "context_path": "", "context_ref": ref}
    if state.get("bound_hash") != ref["hash"] or not state.get("sandbox_id"):
        share(ref, blobs)
        update.update(sandbox_id=uuid.uuid4().hex, bound_hash=ref["hash"], cells=[])
    return update


def stopped(status: str, **fields: str) -> dict[str, Any]:
    """The update of a plan step that may not go on; the routing sends it to finalize."""
    return {"status": status, "step": stop_step(), **fields}


def root_model(settings: Settings, scope: Scope) -> BaseChatModel:
    """The root model client for these settings, as the scope's deployment allows."""
    return chat_model(settings.model, settings.base_url, settings, scope)


def turn_cells(state: State, blobs: Blobs) -> list[Cell]:
    """The records of this turn's cells, in order, without their journals."""
    turn = state.get("turn", 1)
    refs = [c for c in state.get("cells") or [] if c["turn"] == turn]
    return load_cell_views(blobs, state["sandbox_id"], refs)


def tool_offer(settings: Settings, cells: list[Cell]) -> tuple[bool, str]:
    """Whether the next root call offers the code tool; the notice when that just changed.

    A model that sent code in ``UNUSED_TOOL_REPLIES`` replies and never through the tool
    is not going to use it (issue 18: with llama-cpp-python's own chat templates every
    run fell back to fenced blocks, silently); the tool then goes, and with it the
    prompt's description of it, so what the model reads matches what it does.
    """
    coded = [c for c in cells if c["kind"] == "model" and c["code"]]
    if not settings.tool_calling or any(c["tool_call_id"] for c in coded):
        return settings.tool_calling, ""
    if len(coded) < UNUSED_TOOL_REPLIES:
        return True, ""
    just_now = len(coded) == UNUSED_TOOL_REPLIES and cells[-1] is coded[-1]
    return False, TOOL_SWITCH_NOTICE if just_now else ""


def conversation(
    state: State,
    settings: Settings,
    scope: Scope,
    blobs: Blobs,
    cells: list[Cell],
    tightness: int = 0,
    *,
    tool_calling: bool,
) -> list[AnyMessage]:
    """What the root model reads: instructions, the question, this turn's ``cells``."""
    window = prompts.root_window(settings, tightness)
    system = prompts.system_prompt(
        state["context_ref"],
        max_output_chars=window.output_chars,
        max_iterations=settings.max_iterations,
        max_sub_calls=settings.max_sub_calls,
        sub_window_tokens=settings.sub_window,
        chars_per_token=WINDOW_CHARS_PER_TOKEN,
        recursive=scope.recursive,
        tool_calling=tool_calling,
        history=state.get("history") or [],
        lazy=is_lazy(state["context_ref"], sandbox_limits(settings).lazy_context_bytes, blobs),
    )
    return prompts.build_messages(
        system,
        question_of(state),
        cells,
        iteration=state.get("iteration", 0),
        max_iterations=settings.max_iterations,
        window=window,
    )


class WindowFull(RuntimeError):
    """The root model refused the conversation as too long, even trimmed harder."""


async def ask_fitted(
    build: Callable[[int], list[AnyMessage]],
    settings: Settings,
    scope: Scope,
    *,
    tools: bool,
    config: RunnableConfig | None = None,
    first: Callable[[list[AnyMessage]], None] = lambda messages: None,
) -> tuple[AIMessage, float]:
    """The reply to the conversation ``build`` makes (given a tightness), and its latency.

    A server that refuses the prompt as too long (its tokenizer counts more tokens than
    3 characters each, or a window set by hand is wrong) is asked once more with the
    conversation trimmed to half the room; a second refusal raises :class:`WindowFull`.
    ``first`` sees the first conversation built.
    """

    async def attempt(tightness: int) -> tuple[AIMessage, float]:
        messages = await offload(build, tightness)
        if not tightness:
            first(messages)
        started = time.perf_counter()
        ask = partial(call_root, messages, settings, scope, tools=tools, config=config)
        reply = await in_call_pool(ask)
        return reply, time.perf_counter() - started

    try:
        return await attempt(0)
    except Exception as exc:
        if not exceeds_window(exc):
            raise
    try:
        return await attempt(1)
    except Exception as exc:
        if exceeds_window(exc):
            raise WindowFull(
                f"the root model's window ({settings.root_window:,} tokens) is full: "
                f"{call_failure(exc)}"
            ) from exc
        raise


async def ask_root(
    view: State, settings: Settings, scope: Scope, blobs: Blobs
) -> tuple[AIMessage, float, bool]:
    """One root-model call: the reply, its latency, and whether the tool was offered.

    The notes a reply gets name the tool only when it was offered.
    """
    iteration = view.get("iteration", 0) + 1
    cells = await offload(turn_cells, view, blobs)
    tools, notice = tool_offer(settings, cells)
    reply, seconds = await ask_fitted(
        partial(conversation, view, settings, scope, blobs, cells, tool_calling=tools),
        settings,
        scope,
        tools=tools,
        config={"metadata": run_metadata(scope.depth, iteration, view["sandbox_id"])},
        first=lambda messages: emit(iteration_event(messages, iteration, scope.depth, notice)),
    )
    return reply, seconds, tools


def call_root(
    messages: list[AnyMessage],
    settings: Settings,
    scope: Scope,
    *,
    tools: bool,
    config: RunnableConfig | None = None,
) -> AIMessage:
    """The root model's reply to ``messages``, offered the code tool when ``tools``.

    ``tool_choice`` is named although "auto" is the API's default: llama-cpp-python's
    function-calling template answers with tool calls only when a request names it.
    """
    model = root_model(settings, scope)
    bound = model.bind_tools([EXECUTE_TOOL], tool_choice="auto") if tools else model
    reply = bound.invoke(messages, config=config)
    assert isinstance(reply, AIMessage)
    return reply


def start_step(
    state: State, blobs: Blobs, deployment: Deployment, settings: Settings
) -> tuple[dict[str, Any], State | None]:
    """The turn's update and the state the model is asked from (None: the run stops)."""
    question = question_of(state)
    if not question.strip():
        raise ValueError("no question given: send `question` (or a human message)")
    update = begin_turn(state, question)
    try:  # a missing path, bad JSON: the run ends saying which
        update.update(ingest_context(state, blobs, deployment, settings))
    except ContextError as exc:
        return {**update, **stopped("failed", error=str(exc))}, None
    view: State = {**state, **update}  # type: ignore[typeddict-item]
    return update, view


async def plan(
    state: State, runtime: Runtime[Settings], *, deployment: Deployment
) -> dict[str, Any]:
    """Ask the root model for the next step.

    A coroutine, so that a server holds no thread for it: records are read and written
    on a thread (``offload``), the model is asked on the call pool (``subcalls.loop``).
    """
    settings = await offload(settings_of, runtime, deployment)  # may ask model servers
    blobs = blobs_of(runtime)
    update, view = await offload(start_step, state, blobs, deployment, settings)
    if view is None:
        return update
    scope = scope_of(settings, view, deployment)
    if reason := scope.begin_step(settings):
        return {**update, **stopped("budget_exhausted", stop_reason=reason)}
    if view["sandbox_id"] not in REGISTRY:
        REGISTRY.prepare(view["sandbox_id"], view["context_ref"], sandbox_limits(settings))
    try:
        reply, seconds, tools = await ask_root(view, settings, scope, blobs)
    except (MissingRecord, ModelConfigError) as exc:  # their text says what to do
        return {**update, **stopped("failed", error=str(exc))}
    except WindowFull as exc:  # finalize answers from what the cells showed
        return {**update, **stopped("budget_exhausted", stop_reason=str(exc))}
    except Exception as exc:  # after the client's own retries: stop, keep every cell
        failure = call_failure(exc, settings.timeout_advice())
        return {**update, **stopped("failed", error=f"root model call failed: {failure}")}
    step = await offload(next_step, reply, view, blobs, tools)
    if update.get("turn") and view.get("history") and view.get("cells"):
        step["setup"] = history_setup(view["history"])
    if step["kind"] == "note":
        note = note_cell(step, view.get("turn", 1), step.get("note", ""))
        saved = await offload(save_cell, blobs, view["sandbox_id"], note)
        update["cells"] = [*(view.get("cells") or []), saved]
    iteration = view.get("iteration", 0) + 1
    event = reply_event(reply, settings, scope.depth, iteration, seconds, step["code"])
    if step["kind"] == "note":
        event["note"] = step.get("note", "")
    emit(event)
    scope.budget.spend(event["usage"])  # a sub-RLM's call counts at once toward its tree
    return {**update, "step": step, "usage": event["usage"]}


def next_step(reply: AIMessage, view: State, blobs: Blobs, tools: bool) -> Step:
    """The step a reply asks for; a reply identical to the previous one becomes a nudge.

    ``tools``: whether the code tool was offered for this reply (``tool_offer``).
    """
    step = step_from(parse_reply(reply, tool_calling=tools))
    turn = view.get("turn", 1)
    refs = [c for c in view.get("cells") or [] if c["turn"] == turn and c["kind"] != "system"]
    if refs and repeats(step, previous := load_cell(blobs, view["sandbox_id"], refs[-1])):
        return repeat_step(step, previous, tools)
    return step


def reply_event(
    reply: AIMessage, settings: Settings, depth: int, iteration: int, seconds: float, code: str
) -> ReplyEvent:
    """The root model replied: what it said, the code it gave, what the call cost."""
    return events.reply(
        depth=depth,
        iteration=iteration,
        text=message_text(reply),
        code=code,
        model=settings.model,
        usage=usage_of(reply, settings.model),
        seconds=round(seconds, 4),
    )


def iteration_event(
    messages: list[AnyMessage], iteration: int, depth: int, notice: str = ""
) -> IterationEvent:
    """An iteration starts: how big the prompt is; the first one also says what it was.

    ``notice``: a change the run made on its own from this iteration on (``tool_offer``).
    """
    event = events.iteration(
        depth=depth,
        iteration=iteration,
        prompt_chars=prompts.prompt_chars(messages),
        prompt_messages=len(messages),
    )
    if iteration == 1:
        event["system_prompt"] = str(messages[0].content)
        event["question"] = str(messages[1].content)
    if notice:
        event["notice"] = notice
    return event
