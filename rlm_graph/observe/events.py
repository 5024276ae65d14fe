"""Progress events and trace lines: one TypedDict per kind, and the functions that build them.

The graph (``graph/``) and the sub-call broker (``subcalls/``) emit these events on
LangGraph's ``stream_mode="custom"``; the progress display, the trace writer and reader,
the viewer and the official-log exporter read them. A trace file is the events, one JSON
line each, between a ``run`` header and a ``result`` line (both typed here too).
``python -m rlm_graph.observe.schema`` turns these types into docs/trajectory.schema.json
and the event table of docs/trajectory.md, so the docs cannot drift from the code.

Each kind is two TypedDicts: ``ReplyFields``, what an emitter gives, and ``ReplyEvent``,
those fields plus ``event`` and ``ts``, what readers get. Emitters call the constructors
(``events.reply(depth=..., ...)``), which take exactly the fields and stamp ``ts``; a
sub-RLM's events reach the root's stream through :func:`nested`, which adds the sub-call
id to their ``path``.

Imports only the standard library and ``models``: graph and subcalls sit above it.
"""

# No ``from __future__ import annotations`` here: with string annotations Python 3.12's
# TypedDict counts NotRequired fields as required (``__required_keys__``), and the schema
# generator reads the keys from there.

import time
from typing import Annotated, Any, Literal, NotRequired, TypedDict, Unpack

from rlm_graph.models.pricing import CostReport
from rlm_graph.models.usage import Usage


class Doc:
    """What a field means (the schema's description, the docs' table) and its limits."""

    def __init__(self, text: str, **schema: Any) -> None:
        self.text = text
        self.schema = schema  # further JSON Schema keywords, e.g. minimum=0


CellKind = Literal["model", "system", "note"]
FinalStatus = Literal["answered", "budget_exhausted", "failed"]
RunStatus = Literal["running", "answered", "budget_exhausted", "failed"]
CODE_LINE_CHARS = 120  # what a progress display shows of the code about to run


class _Fields(TypedDict):
    """What every event carries: where in the recursion tree it comes from."""

    depth: Annotated[
        int,
        Doc(
            "0 for the root run, n for a sub-RLM n levels down (sub-call events: the depth "
            "of the call, 1 for the root's sub-calls)",
            minimum=0,
        ),
    ]
    path: NotRequired[
        Annotated[
            list[str],
            Doc(
                "the ids of the sub-calls from the root down to the sub-RLM that emitted the "
                "event; absent at the root"
            ),
        ]
    ]


class _Stamped(TypedDict):
    """What a constructor adds to the fields an emitter gives."""

    ts: Annotated[float, Doc("Unix time in seconds when the event was emitted")]


class IterationFields(_Fields):
    """The fields of an :class:`IterationEvent`."""

    iteration: Annotated[int, Doc("", minimum=1)]
    prompt_chars: int
    prompt_messages: int
    system_prompt: NotRequired[Annotated[str, Doc("first step only")]]
    question: NotRequired[Annotated[str, Doc("first step only")]]
    notice: NotRequired[
        Annotated[
            str,
            Doc(
                "a change the run made on its own from this step on, said once: e.g. tool "
                "calling switched off for a model that never used the tool"
            ),
        ]
    ]


class IterationEvent(IterationFields, _Stamped):
    """A root-model step starts.

    It says how big the prompt is; the first step of a run also carries the prompt's
    system message and question.
    """

    event: Literal["iteration"]


class ReplyFields(_Fields):
    """The fields of a :class:`ReplyEvent`."""

    iteration: int
    text: str
    code: Annotated[str, Doc("taken from the tool call or fenced block")]
    model: str
    usage: Usage
    seconds: Annotated[float, Doc("latency of the model call")]
    best_effort: NotRequired[
        Annotated[bool, Doc("true: the one extra call made when the iteration budget ran out")]
    ]
    note: NotRequired[
        Annotated[
            str,
            Doc("what the model was told instead of running anything (no code, a repeat)"),
        ]
    ]


class ReplyEvent(ReplyFields, _Stamped):
    """The root model replied."""

    event: Literal["reply"]


class CellEvent(_Fields, _Stamped):
    """Code is about to run."""

    event: Literal["cell"]
    iteration: int
    code_line: Annotated[
        str,
        Doc(
            f"the code's first line, at most {CODE_LINE_CHARS} characters",
            maxLength=CODE_LINE_CHARS,
        ),
    ]
    code: str


class CellEndFields(_Fields):
    """The fields of a :class:`CellEndEvent`."""

    iteration: int
    kind: Annotated[CellKind, Doc("model, or system for set-up code")]
    code: str
    output: Annotated[str, Doc("in full")]
    error: str
    halted: Annotated[bool, Doc("stopped by the timeout, the CPU brake or exit()")]
    seconds: float
    sub_calls: int
    final: NotRequired[Annotated[Any, Doc("the value the cell gave FINAL / FINAL_VAR")]]


class CellEndEvent(CellEndFields, _Stamped):
    """A cell ran.

    It carries the cell's whole output; the model read a view cut to max_output_chars.
    """

    event: Literal["cell_end"]


class SubCallStartFields(_Fields):
    """The fields of a :class:`SubCallStartEvent`."""

    id: str
    model: Annotated[str, Doc("the sub model, or 'rlm' for a sub-RLM")]
    recursive: Annotated[
        bool, Doc("answered by a sub-RLM, whose events follow with this id in their path")
    ]
    prompt: Annotated[str, Doc("cut to trace_text_chars")]
    prompt_chars: int
    in_flight: Annotated[int, Doc("sub-calls of this cell running now")]


class SubCallStartEvent(SubCallStartFields, _Stamped):
    """An llm_query, or one prompt of an llm_batch, starts."""

    event: Literal["sub_call_start"]


class SubCallEndFields(_Fields):
    """The fields of a :class:`SubCallEndEvent`."""

    id: str
    ok: bool
    answer: Annotated[str, Doc("cut to trace_text_chars")]
    error: str
    seconds: float
    cached: Annotated[bool, Doc("answered from the run's cache, or by a concurrent identical call")]
    usage: Annotated[
        Usage,
        Doc("this call's tokens; a sub-RLM's whole tree's, which its own events count again"),
    ]
    in_flight: Annotated[int, Doc("sub-calls of this cell running now")]


class SubCallEndEvent(SubCallEndFields, _Stamped):
    """A sub-call ended."""

    event: Literal["sub_call_end"]


class FinalFields(_Fields):
    """The fields of a :class:`FinalEvent`."""

    status: FinalStatus
    answer: Any
    stop_reason: Annotated[str, Doc("the cost limit that stopped the run, or empty")]
    usage: Annotated[Usage, Doc("that run's total")]
    node: NotRequired[
        Annotated[str, Doc("the Ray node that ran this sub-RLM (sub_rlm_executor='ray')")]
    ]


class FinalEvent(FinalFields, _Stamped):
    """A run (the root or a sub-RLM) ended."""

    event: Literal["final"]


Event = (
    IterationEvent
    | ReplyEvent
    | CellEvent
    | CellEndEvent
    | SubCallStartEvent
    | SubCallEndEvent
    | FinalEvent
)


# -- the trace file's first and last lines ------------------------------------------------


class TraceContext(TypedDict, total=False):
    """The context's reference, never the context itself."""

    hash: str | None
    kind: str | None
    length: int | None
    type_name: str | None


class TraceHeader(TypedDict):
    """The first line of a trace: what was asked, of what, with which settings."""

    type: Literal["run"]
    version: Literal[1]
    started: Annotated[str, Doc("ISO 8601, UTC")]
    question: str
    settings: Annotated[dict[str, Any], Doc("every field of rlm_graph.Settings")]
    context: TraceContext


class TraceResult(TypedDict):
    """The last line of a trace, if the run ended: the object that rlm run --json prints."""

    type: Literal["result"]
    ended: Annotated[str, Doc("ISO 8601, UTC")]
    answer: Any
    status: RunStatus
    iterations: int
    sub_calls: int
    tokens: Usage
    cost: CostReport | None
    seconds: float
    error: NotRequired[str]
    stop_reason: NotRequired[str]


# -- constructors: what the emitters call ---------------------------------------------------
# Each takes exactly its event's fields (mypy checks every call) and stamps the time.


def iteration(**fields: Unpack[IterationFields]) -> IterationEvent:
    """A root-model step starts (the first step also gives ``system_prompt``, ``question``)."""
    return IterationEvent(event="iteration", ts=time.time(), **fields)


def reply(**fields: Unpack[ReplyFields]) -> ReplyEvent:
    """The root model replied."""
    return ReplyEvent(event="reply", ts=time.time(), **fields)


def cell(*, depth: int, iteration: int, code: str) -> CellEvent:
    """Code is about to run; its first line is what a progress display shows."""
    lines = code.strip().splitlines()
    code_line = lines[0][:CODE_LINE_CHARS] if lines else ""
    return CellEvent(
        event="cell",
        depth=depth,
        ts=time.time(),
        iteration=iteration,
        code_line=code_line,
        code=code,
    )


def cell_end(**fields: Unpack[CellEndFields]) -> CellEndEvent:
    """A cell ran: ``output`` in full; ``final`` only if the cell called FINAL/FINAL_VAR."""
    return CellEndEvent(event="cell_end", ts=time.time(), **fields)


def sub_call_start(**fields: Unpack[SubCallStartFields]) -> SubCallStartEvent:
    """A sub-call starts (``prompt`` already cut to ``trace_text_chars``)."""
    return SubCallStartEvent(event="sub_call_start", ts=time.time(), **fields)


def sub_call_end(**fields: Unpack[SubCallEndFields]) -> SubCallEndEvent:
    """A sub-call ended (``answer`` already cut to ``trace_text_chars``)."""
    return SubCallEndEvent(event="sub_call_end", ts=time.time(), **fields)


def final(**fields: Unpack[FinalFields]) -> FinalEvent:
    """A run ended."""
    return FinalEvent(event="final", ts=time.time(), **fields)


def nested(event: Event, call_id: str) -> Event:
    """A sub-RLM's event as its parent streams it: ``call_id`` leads its ``path``."""
    tagged = event.copy()
    tagged["path"] = [call_id, *event.get("path", [])]
    return tagged
