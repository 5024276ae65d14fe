"""Human approval of code before it runs (the ``approve_code`` setting).

The graph pauses with LangGraph's ``interrupt`` and shows the proposed code; the value
given to ``Command(resume=...)`` decides what happens. Accepted forms, so a person can
answer from Studio's JSON box, the SDK, or the CLI prompt alike:

- accept: ``True``, ``"accept"``, ``{"action": "accept"}``
- edit: ``{"action": "edit", "code": "..."}`` (the edited code runs instead)
- reject: ``False``, ``"reject"``, ``{"action": "reject", "reason": "..."}`` (nothing
  runs; the model is told why and proposes something else)
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from rlm_graph.graph.state import Step

_ACCEPT = {"accept", "approve", "yes", "y"}
_REJECT = {"reject", "no", "n"}


class ApprovalError(ValueError):
    """A resume value that is none of the accepted forms."""


def decision_of(value: Any) -> tuple[str, dict[str, Any]]:
    """Normalise a resume value to (action, details)."""
    if value is True or (isinstance(value, str) and value.strip().lower() in _ACCEPT):
        return "accept", {}
    if value is False or (isinstance(value, str) and value.strip().lower() in _REJECT):
        return "reject", {}
    if isinstance(value, dict):
        action = str(value.get("action", "edit" if "code" in value else "")).lower()
        if action in _ACCEPT:
            return "accept", {}
        if action in _REJECT:
            return "reject", value
        if action == "edit" and isinstance(value.get("code"), str):
            return "edit", value
    raise ApprovalError(
        f'cannot read the approval {value!r}: resume with true/"accept", false/"reject", '
        '{"action": "edit", "code": "..."} or {"action": "reject", "reason": "..."}'
    )


def review(step: Step, value: Any) -> Step:
    """The step after a person's decision on its code: as it was, edited, or a note."""
    action, details = decision_of(value)
    if action == "accept":
        return step
    if action == "edit":
        return Step(**{**step, "code": details["code"]})
    reason = str(details.get("reason") or "no reason given")
    reviewed = Step(**{**step, "kind": "note", "code": ""})
    reviewed.pop("final_text", None)
    reviewed["note"] = (
        f"The user rejected this code before it ran ({reason}). Nothing was executed; "
        "propose different code."
    )
    return reviewed


Approver = Callable[[dict[str, Any]], Any]


def edit_in_editor(code: str) -> str:
    """The code after a person edited it in ``$VISUAL`` / ``$EDITOR`` (else vi)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as draft:
        draft.write(code)
    try:
        subprocess.run([*shlex.split(editor), draft.name], check=True)
        return Path(draft.name).read_text()
    finally:
        os.unlink(draft.name)


def terminal_approver(ask: TextIO, show: TextIO) -> Approver:
    """Ask a person at a terminal about each proposed cell (``rlm run --approve-code``).

    The terminal is read directly, not stdin: stdin may be the context itself.
    """

    def approve(proposal: dict[str, Any]) -> Any:
        show.write("\nrlm: the model wants to run:\n")
        for line in str(proposal.get("code", "")).splitlines():
            show.write(f"  | {line}\n")
        while True:
            show.write("rlm: run it? [y]es, [n]o, [e]dit: ")
            show.flush()
            choice = ask.readline()
            if not choice:  # the terminal closed: refuse rather than run unseen code
                return {"action": "reject", "reason": "nobody answered at the terminal"}
            choice = choice.strip().lower()
            if choice in {"y", "yes", ""}:
                return "accept"
            if choice in {"n", "no"}:
                show.write("rlm: why (told to the model)? ")
                show.flush()
                reason = ask.readline().strip()
                return {"action": "reject", "reason": reason or "rejected at the terminal"}
            if choice in {"e", "edit"}:
                return {"action": "edit", "code": edit_in_editor(str(proposal.get("code", "")))}

    return approve
