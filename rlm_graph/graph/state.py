"""Graph state: only small JSON data, so every checkpointer stores it cheaply.

The context itself never lives here (only a reference), and neither does the sandbox
(only its id): both would make checkpoints huge or unserializable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from rlm_graph.models.pricing import CostReport
from rlm_graph.models.usage import add_usage
from rlm_graph.storage.contexts import ContextRef
from rlm_graph.storage.records import CellRef

Status = Literal["running", "answered", "budget_exhausted", "failed"]


class TurnRecord(TypedDict):
    """A finished question on this thread, offered to later questions as ``history``."""

    question: str
    answer: Any
    status: Status


class InputState(TypedDict, total=False):
    """What a caller sends: a question and the context (or where to find it)."""

    question: str
    context: Any
    context_path: str
    context_ref: ContextRef
    messages: Annotated[list[AnyMessage], add_messages]


class Step(TypedDict):
    """What plan decided; its ``kind`` picks the next node (see ``routing``).

    - ``code``: run ``code`` (after ``setup``, if any); ``final_text`` is a FINAL the
      reply also wrote outside its code, to be confirmed against the output.
    - ``final``: the reply answered in text (``final_text``) without code.
    - ``note``: the reply could not be acted on; ``note`` tells the model why.
    - ``stop``: no model step may be made (failure, cost limit, tree budget).
    """

    kind: Literal["code", "final", "note", "stop"]
    reply: str
    tool_call_id: str
    code: str
    final_text: NotRequired[str]
    setup: NotRequired[str]
    note: NotRequired[str]
    generated: NotRequired[bool]


class State(InputState, total=False):
    """Everything a run remembers between steps (and across process restarts)."""

    sandbox_id: str
    bound_hash: str
    active_question: str
    turn: int
    iteration: int
    cells: list[CellRef]
    step: Step | None
    answer: Any
    status: Status
    usage: Annotated[dict[str, dict[str, int]], add_usage]
    turn_usage: dict[str, dict[str, int]]  # ``usage`` when this question started
    history: list[TurnRecord]
    sub_calls: int
    error: str
    stop_reason: str  # which cost limit stopped the run, "" if none
    cost: CostReport


class OutputState(TypedDict, total=False):
    """What a caller gets back."""

    answer: Any
    status: Status
    iteration: int
    sub_calls: int
    usage: dict[str, dict[str, int]]
    cost: CostReport
    stop_reason: str
    error: str
    messages: list[AnyMessage]
    history: list[TurnRecord]  # the thread's earlier questions and answers
