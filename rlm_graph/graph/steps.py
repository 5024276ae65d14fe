"""A model reply as a tagged :class:`~rlm_graph.graph.state.Step`, and the cells it makes.

A step's ``kind`` is what the routing reads (``routing``): code runs in execute, a
final answer or a note goes to inspect, a stop goes to finalize.
"""

from __future__ import annotations

import json

from rlm_graph.graph.prompts import repeat_note
from rlm_graph.graph.replies import ParsedReply
from rlm_graph.graph.state import Step, TurnRecord
from rlm_graph.storage.records import Cell


def step_from(parsed: ParsedReply) -> Step:
    """The step a parsed reply asks for.

    ``FINAL_VAR(name)`` outside code runs after the reply's code, in the sandbox, so it
    names a value the code really computed.
    """
    code = parsed.code
    if parsed.final_var is not None:
        lookup = f"FINAL_VAR({parsed.final_var!r})"
        code = f"{code}\n{lookup}" if code else lookup
    step = Step(kind="code", reply=parsed.text, tool_call_id=parsed.tool_call_id, code=code)
    if not parsed.code and parsed.final_var is not None:
        step["generated"] = True  # a lookup of ours: nothing for a person to review
    if parsed.final_text is not None:
        step["final_text"] = parsed.final_text
    if not code and parsed.final_text is not None:
        step["kind"] = "final"
    elif not code:
        step["kind"] = "note"
        step["note"] = parsed.problem
    return step


def stop_step() -> Step:
    """The step of a run that may not go on (the reason is in ``status``/``error``)."""
    return Step(kind="stop", reply="", tool_call_id="", code="")


def note_cell(step: Step, turn: int, note: str) -> Cell:
    """A cell that ran nothing: the reply (and any code it held), what the model is told.

    A note cell is never replayed (``repl.registry.replayable``), so keeping its code
    only shows the model what it sent.
    """
    return Cell(
        kind="note",
        turn=turn,
        code=step["code"],
        reply=step["reply"],
        tool_call_id=step["tool_call_id"],
        output=note,
        error="",
        halted=False,
        journal=[],
        sub_calls=0,
        seconds=0.0,
    )


def repeats(step: Step, previous: Cell) -> bool:
    """Whether a reply is the previous one again, word for word and code for code.

    A 1.5B model sent one reply until its 20 iterations ran out (issue 18): running it
    again shows nothing new.
    """
    return (
        step["kind"] in ("code", "note")
        and bool(step["reply"].strip() or step["code"].strip())
        and (step["reply"], step["code"]) == (previous["reply"], previous["code"])
    )


def repeat_step(step: Step, previous: Cell, tool_calling: bool) -> Step:
    """A repeated reply as a note: not run again, and told what to do instead."""
    return Step(
        kind="note",
        reply=step["reply"],
        tool_call_id=step["tool_call_id"],
        code=step["code"],
        note=repeat_note(previous, tool_calling),
    )


def history_setup(history: list[TurnRecord]) -> str:
    """Code that defines ``history`` in the sandbox for a follow-up question."""
    return f"history = _rlm_json.loads({json.dumps(history, default=str)!r})"
