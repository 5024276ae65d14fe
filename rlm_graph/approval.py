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

from typing import Any

from rlm_graph.state import Pending

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


def review(pending: Pending, value: Any) -> Pending:
    """The work for execute after a person's decision on the proposed code."""
    action, details = decision_of(value)
    if action == "accept":
        return pending
    if action == "edit":
        return Pending(**{**pending, "code": details["code"]})
    reason = str(details.get("reason") or "no reason given")
    reviewed = Pending(**{**pending, "code": ""})
    reviewed.pop("final_text", None)
    reviewed["note"] = (
        f"The user rejected this code before it ran ({reason}). Nothing was executed; "
        "propose different code."
    )
    return reviewed
