"""Graph state: only small JSON data, so every checkpointer stores it cheaply.

The context itself never lives here (only a reference), and neither does the sandbox
(only its id): both would make checkpoints huge or unserializable.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

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
    """A question, and the context to answer it over: text or JSON, or a file or folder."""

    question: Annotated[str, Field(description="What to find out from the context.")]
    context: Annotated[Any, Field(description="The context itself: text or JSON.")]
    context_path: Annotated[
        str, Field(description="Or a file or folder to read it from, where the graph runs.")
    ]
    # Studio draws its input form from this schema's JSON schema, so fields a person
    # does not type are left out of it while still accepted: ``context_ref`` comes from
    # ``rlm_graph.api.reference`` (embedders), ``messages`` from Studio's chat view (the
    # last human message is the question). LangGraph takes a reducer from the last
    # ``Annotated`` item, so ``add_messages`` stays last.
    context_ref: Annotated[ContextRef, SkipJsonSchema()]
    messages: Annotated[list[AnyMessage], SkipJsonSchema(), add_messages]


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
