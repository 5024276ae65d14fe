"""Trajectories: what a run did, written as it happens and read back as a tree.

A trace file is JSON lines (schema in docs/trajectory.md): a ``run`` header, then every
progress event the graph streamed (``stream_mode="custom"``) as it arrived, then a
``result`` line. Each line is flushed when written, so a run that crashes or is killed
still leaves a readable trace of everything up to that moment; the reader accepts a
missing result line and a cut-off last line.

The events, not the graph state, are the source: the state keeps a truncated view of
each cell's output (and may keep cells only by reference), while the events carry the
full output, timings, tokens and the sub-calls of sub-RLMs, tagged with the ``path`` of
sub-call ids that leads to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, NotRequired, TypedDict, cast

from rlm_graph.models.usage import Usage, add_usage
from rlm_graph.observe.events import (
    CellEndEvent,
    Event,
    FinalStatus,
    ReplyEvent,
    SubCallEndEvent,
    SubCallStartEvent,
    TraceContext,
    TraceHeader,
)
from rlm_graph.observe.schema import event_from
from rlm_graph.redact import redact_secrets
from rlm_graph.settings import Settings

TRACE_VERSION: Final = 1


class TraceError(ValueError):
    """A file that is not a trajectory; the message says what is wrong with it."""


# -- the tree a trace is read into ----------------------------------------------------------


class CellRecord(TypedDict):
    """One executed cell: its full output, not the truncated view the model read."""

    kind: str
    code: str
    output: str
    error: str
    halted: bool
    seconds: float
    sub_calls: int
    final: NotRequired[Any]


class RunEnd(TypedDict):
    """How a run ended: its ``final`` event without the bookkeeping."""

    status: FinalStatus
    answer: Any
    stop_reason: str
    usage: Usage


class SubCall(TypedDict):
    """One ``llm_query`` / ``llm_batch`` prompt; ``run`` is the sub-RLM that answered it."""

    id: str
    depth: int
    model: str
    recursive: bool
    prompt: str
    prompt_chars: int
    started: float
    ended: float | None
    seconds: float
    ok: bool
    answer: str
    error: str
    cached: bool
    usage: Usage
    run: RunTree | None


class Iteration(TypedDict):
    """One model reply of a run and the cells and sub-calls it caused."""

    number: int
    depth: int
    started: float
    prompt_chars: int
    prompt_messages: int
    model: str
    reply: str
    code: str
    note: str  # what the model was told instead of running anything
    reply_seconds: float
    usage: Usage
    best_effort: bool
    notice: NotRequired[str]  # the iteration event's (see events.IterationFields)
    cells: list[CellRecord]
    sub_calls: list[SubCall]


class RunTree(TypedDict):
    """A run at one depth: the root run, or a sub-RLM inside a sub-call."""

    depth: int
    question: str
    system_prompt: str
    iterations: list[Iteration]
    final: RunEnd | None


class Trajectory(TypedDict):
    """A whole trace: header, tree, result (``None`` when the run did not finish).

    Header and result stay the file's plain records: the viewer also shows official logs
    and older traces, whose first and last lines hold fewer fields.
    """

    header: dict[str, Any]
    root: RunTree
    result: dict[str, Any] | None
    events: int


# -- writing ----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _redacted(fields: dict[str, Any]) -> dict[str, Any]:
    """Settings as a trace keeps them: a password in a URL (``--base-url``) blanked out.

    A trace is a file to share (the viewer, an issue), so what error lines hide it hides.
    """
    return {k: redact_secrets(v) if isinstance(v, str) else v for k, v in fields.items()}


class TraceWriter:
    """Appends a run's trace, one flushed JSON line per event (a progress sink)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._file: IO[str] = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise TraceError(f"cannot write the trace {self.path}: {exc.strerror}") from exc

    def header(self, question: str, settings: Settings, context: dict[str, Any]) -> None:
        """The first line: what was asked, of what, with which settings."""
        line = TraceHeader(
            type="run",
            version=TRACE_VERSION,
            started=_now(),
            question=question,
            settings=_redacted(asdict(settings)),
            context=TraceContext(
                hash=context.get("hash"),
                kind=context.get("kind"),
                length=context.get("length"),
                type_name=context.get("type_name"),
            ),
        )
        self._write(line)

    def custom(self, event: Event) -> None:
        """One progress event from the graph."""
        self._write({"type": "event", **event})

    def values(self, state: dict[str, Any]) -> None:
        """States are not traced: the events carry more, and state may hold references."""

    def result(self, result: Mapping[str, Any]) -> None:
        """The last line: how the run ended."""
        self._write({"type": "result", "ended": _now(), **result})

    def close(self) -> None:
        """Close the file; every line is already on disk."""
        self._file.close()

    def _write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()


# -- reading ----------------------------------------------------------------------------------


def read_lines_of(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a cut-off last line (a crash mid-write) is dropped."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise TraceError(f"cannot read the trace {path}: {exc.strerror}") from exc
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise TraceError(f"{path}:{number} is not JSON ({exc.msg})") from exc
        if not isinstance(records[-1], dict):
            raise TraceError(f"{path}:{number} is not a JSON object")
    return records


def new_run(depth: int) -> RunTree:
    """An empty run at ``depth``, before any event filled it."""
    return RunTree(depth=depth, question="", system_prompt="", iterations=[], final=None)


def _opened(event: Event, number: int) -> Iteration:
    """An iteration that ``event`` opens, before its reply and cells fill it."""
    return Iteration(
        number=number,
        depth=event["depth"],
        started=event["ts"],
        prompt_chars=0,
        prompt_messages=0,
        model="",
        reply="",
        code="",
        note="",
        reply_seconds=0.0,
        usage={},
        best_effort=False,
        cells=[],
        sub_calls=[],
    )


def _current(run: RunTree, event: ReplyEvent | CellEndEvent | SubCallStartEvent) -> Iteration:
    """The iteration an event belongs to (one is opened if events start mid-run)."""
    if not run["iterations"]:
        number = 0 if event["event"] == "sub_call_start" else event["iteration"]
        run["iterations"].append(_opened(event, number))
    return run["iterations"][-1]


class _Builder:
    """Folds events into the tree, routing each to its run by the sub-call ``path``."""

    def __init__(self) -> None:
        self.root = new_run(0)
        self.calls: dict[str, SubCall] = {}

    def run_at(self, path: list[str]) -> RunTree:
        run = self.root
        for call_id in path:
            call = self.calls.get(call_id)
            if call is None:  # a sub-call whose start was not traced: keep the events anyway
                return run
            child = call["run"]
            if child is None:
                child = call["run"] = new_run(call["depth"])
            run = child
        return run

    def add(self, event: Event) -> None:
        run = self.run_at(event.get("path", []))
        if event["event"] == "iteration":
            iteration = _opened(event, event["iteration"])
            iteration["prompt_chars"] = event["prompt_chars"]
            iteration["prompt_messages"] = event["prompt_messages"]
            if "notice" in event:
                iteration["notice"] = event["notice"]
            run["iterations"].append(iteration)
            run["question"] = event.get("question") or run["question"]
            run["system_prompt"] = event.get("system_prompt") or run["system_prompt"]
        elif event["event"] == "reply":
            self._reply(run, event)
        elif event["event"] == "cell_end":
            _current(run, event)["cells"].append(_picked(event, CellRecord))
        elif event["event"] == "sub_call_start":
            call = _sub_call(event)
            self.calls[call["id"]] = call
            _current(run, event)["sub_calls"].append(call)
        elif event["event"] == "sub_call_end" and event["id"] in self.calls:
            self._end_call(self.calls[event["id"]], event)
        elif event["event"] == "final":
            run["final"] = RunEnd(
                status=event["status"],
                answer=event["answer"],
                stop_reason=event["stop_reason"],
                usage=event["usage"],
            )

    @staticmethod
    def _reply(run: RunTree, event: ReplyEvent) -> None:
        iteration = _current(run, event)
        if event.get("best_effort"):
            iteration = _opened(event, event["iteration"])
            iteration["best_effort"] = True
            run["iterations"].append(iteration)
        iteration["model"] = event["model"]
        iteration["reply"] = event["text"]
        iteration["code"] = event["code"]
        iteration["note"] = event.get("note", "")
        iteration["reply_seconds"] = event["seconds"]
        iteration["usage"] = event["usage"]

    @staticmethod
    def _end_call(call: SubCall, event: SubCallEndEvent) -> None:
        call.update(_picked({**event, "ended": event["ts"]}, SubCall))


def _picked[R: Mapping[str, Any]](fields: Mapping[str, Any], record: type[R]) -> R:
    """The fields of ``record`` (a TypedDict) found in ``fields``.

    A trace's records hold their events' fields under the same names, so the types say
    what is copied and a field added to both is copied without another line.
    """
    return cast(R, {key: fields[key] for key in record.__annotations__ if key in fields})


def _sub_call(event: SubCallStartEvent) -> SubCall:
    """A sub-call as its start event tells it, nothing of its end yet."""
    unended = dict(ended=None, seconds=0.0, ok=False, answer="", error="", cached=False)
    return _picked({**unended, "usage": {}, "run": None, **event, "started": event["ts"]}, SubCall)


def read_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Read a trace written by :class:`TraceWriter` (or cut short by a crash) into a tree."""
    return trajectory_from(read_lines_of(path), str(path))


def trajectory_from(records: list[dict[str, Any]], source: str) -> Trajectory:
    """The tree of a trace's records."""
    if not records or records[0].get("type") != "run":
        raise TraceError(f"{source} is not an rlm trajectory: its first line is no 'run' header")
    builder = _Builder()
    result = None
    events = 0
    for record in records[1:]:
        if record.get("type") == "event" and (event := event_from(record)) is not None:
            builder.add(event)
            events += 1
        elif record.get("type") == "result":
            result = record
    return Trajectory(header=records[0], root=builder.root, result=result, events=events)


# -- totals -----------------------------------------------------------------------------------


def runs(run: RunTree) -> list[RunTree]:
    """``run`` and every sub-RLM below it, depth first."""
    found = [run]
    for iteration in run["iterations"]:
        for call in iteration["sub_calls"]:
            if call["run"] is not None:
                found.extend(runs(call["run"]))
    return found


def usage_by_depth(root: RunTree) -> dict[int, Usage]:
    """Token usage per depth: every model reply of every run, and every plain sub-call.

    A sub-RLM's sub-call carries no usage of its own (its run's replies and sub-calls
    do), so each model call is counted exactly once.
    """
    totals: dict[int, Usage] = {}
    for run in runs(root):
        for iteration in run["iterations"]:
            depth = run["depth"]
            totals[depth] = add_usage(totals.get(depth, {}), iteration["usage"])
            for call in iteration["sub_calls"]:
                if not call["recursive"]:
                    totals[call["depth"]] = add_usage(totals.get(call["depth"], {}), call["usage"])
    return dict(sorted(totals.items()))


def usage_by_model(root: RunTree) -> Usage:
    """Token usage per model over the whole tree."""
    total: Usage = {}
    for usage in usage_by_depth(root).values():
        total = add_usage(total, usage)
    return total
