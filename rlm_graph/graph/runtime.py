"""What a node reads besides its state: settings, thread, store, stream, recursion scope.

Every node gets these the same way, so each is written once here.
"""

from __future__ import annotations

import contextvars
import threading
from contextlib import suppress
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.config import get_config, get_stream_writer
from langgraph.runtime import Runtime

from rlm_graph.deployment import Deployment
from rlm_graph.graph.state import State
from rlm_graph.models.messages import message_text
from rlm_graph.models.usage import Usage, usage_since
from rlm_graph.observe.events import Event
from rlm_graph.repl.session import Limits
from rlm_graph.settings import Settings
from rlm_graph.storage.blobs import Blobs
from rlm_graph.subcalls.broker import Emit
from rlm_graph.subcalls.scope import LocalBudget, OpenBudget, Scope

# The configurable key under which a parent hands its sub-RLM the recursion scope. A
# scope holds the tree's live budget, so it travels in the config, never in state.
SCOPE_KEY = "rlm_scope"
# The configurable key of ready model clients by name ({"my-model": chat_model}): an
# embedding application (or a test) supplies clients it built itself, in-process ones
# included; names not there are built from the settings. Only live objects count, so a
# caller of a server, who can send JSON only, cannot use it to reach anything.
MODELS_KEY = "rlm_models"
# The configurable key of a synchronous run's event callback (``GraphStream.run``):
# events go straight to it, not through LangGraph's custom stream, whose concurrent
# streaming ran every node on a pool thread beside a waiter thread (~0.8 ms of host CPU
# an iteration, docs/benchmarks.md). Only a callable counts: a server's caller sends JSON.
EVENTS_KEY = "rlm_events"


def settings_of(runtime: Runtime[Settings], deployment: Deployment) -> Settings:
    """The run's settings as the deployment admits them; a server may send none, or a dict.

    Windows left unset are filled in from what a server deployment's model servers
    report: blocking HTTP the first time, so the first node of a step (plan) calls this
    in a thread. Raises ``SettingsRefused`` for a base URL or model the deployment does
    not allow.
    """
    context: Any = runtime.context
    if context is None:
        context = Settings()
    elif isinstance(context, dict):
        context = Settings.from_mapping(context)
    return deployment.with_server_windows(deployment.admit(context))


def configurable(key: str) -> Any:
    """A value the run's config carries under ``configurable`` (None outside a run)."""
    with suppress(RuntimeError):  # outside a runnable context (direct node calls)
        return get_config().get("configurable", {}).get(key)
    return None


def given_models() -> dict[str, BaseChatModel]:
    """The ready model clients the run's config supplies, by model name."""
    given = configurable(MODELS_KEY)
    if not isinstance(given, dict):
        return {}
    return {name: m for name, m in given.items() if isinstance(m, BaseChatModel)}


def chat_model(name: str, base_url: str, settings: Settings, scope: Scope) -> BaseChatModel:
    """The client for a model name: one the config supplies, else one the deployment allows."""
    return given_models().get(name) or scope.deployment.chat_model(name, base_url, settings)


def scope_of(
    settings: Settings,
    state: State,
    deployment: Deployment,
    open_budget: OpenBudget = LocalBudget,
) -> Scope:
    """The run's place in its recursion tree: given by a parent, else the root's.

    The root's scope is rebuilt at every step from what its state has counted, so a
    resumed or forked thread starts from exactly what it had used; ``open_budget``
    makes its budget where the step's sub-RLMs can reach it. Only a live object
    counts as given (a server's caller sends JSON), so a caller cannot pick the scope.
    """
    given = configurable(SCOPE_KEY)
    if isinstance(given, Scope):
        return given
    calls, spent = state.get("sub_calls", 0), turn_spend(state)
    return Scope.root(settings, calls, spent, deployment, open_budget)


def turn_spend(state: State) -> Usage:
    """What the current question has used so far (a thread's usage spans questions)."""
    return usage_since(state.get("usage") or {}, state.get("turn_usage") or {})


def sandbox_limits(settings: Settings) -> Limits:
    """The fields of the settings that shape a sandbox session."""
    return Limits(
        settings.cell_timeout,
        settings.cell_cpu_instructions,
        settings.sandbox_memory_mb,
        settings.lazy_context_mb << 20,
        settings.cell_scan_mb << 20,
    )


def thread_id() -> str:
    """The run's thread, or "" for a run that cannot be resumed."""
    with suppress(RuntimeError):
        return str(get_config().get("configurable", {}).get("thread_id") or "")
    return ""


def blobs_of(runtime: Runtime[Settings]) -> Blobs:
    """Where this run keeps cell records and sub-call answers (see ``storage.blobs``)."""
    return Blobs.for_run(runtime.store, resumable=bool(thread_id()))


def question_of(state: State) -> str:
    """The question: the ``question`` field, or the last human message (Studio chat)."""
    if question := state.get("question"):
        return question
    for message in reversed(state.get("messages") or []):
        if isinstance(message, HumanMessage):
            return message_text(message)  # type: ignore[arg-type]
    return ""


def emit(event: Event) -> None:
    """Send a progress event to ``stream_mode="custom"`` listeners, if any.

    Events are the trajectory's raw material (docs/trajectory.md), so they carry what a
    trace needs (full cell output, timings, tokens) rather than pointing into state.
    """
    with suppress(RuntimeError):  # outside a runnable context (direct node calls)
        (_direct_writer() or get_stream_writer())(event)


def _direct_writer() -> Emit | None:
    """The run's own event callback, when its runner gave one (``EVENTS_KEY``)."""
    writer = configurable(EVENTS_KEY)
    return writer if callable(writer) else None


def thread_safe_writer() -> Emit | None:
    """The node's stream writer, callable from the sub-call thread.

    The writer needs LangGraph's context variables, which the background sub-call loop
    does not have; running it in a copy of this node's context (one thread at a time)
    carries them over.
    """
    if (direct := _direct_writer()) is not None:
        return direct  # its runner serialises it
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return None
    node_context = contextvars.copy_context()
    lock = threading.Lock()

    def write(event: Event) -> None:
        with lock:
            node_context.run(writer, event)

    return write
