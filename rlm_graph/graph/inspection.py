"""The inspect node: count the step, take a final answer, stop at a cost limit.

Named ``inspection`` rather than ``inspect`` so it never shadows the standard library.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from rlm_graph.deployment import Deployment
from rlm_graph.graph.runtime import scope_of, settings_of
from rlm_graph.graph.state import State
from rlm_graph.settings import Settings


def inspect_output(
    state: State, runtime: Runtime[Settings], *, deployment: Deployment
) -> dict[str, Any]:
    """Count the iteration, look for a final answer, stop at a cost limit.

    A plain function: nothing in it blocks or waits, so an event loop may run it as is,
    and a synchronous caller needs no loop for it (``build.plain_node``).
    """
    step = state.get("step")
    update: dict[str, Any] = {"iteration": state.get("iteration", 0) + 1, "step": None}
    cells = state.get("cells") or []
    if step is not None and step["kind"] == "final":
        update.update(answer=step.get("final_text", ""), status="answered")
    elif step is not None and step["kind"] == "code" and cells and "final" in cells[-1]:
        update.update(answer=cells[-1]["final"], status="answered")
    else:
        settings = settings_of(runtime, deployment)
        if reason := scope_of(settings, state, deployment).blocked(settings):
            update.update(status="budget_exhausted", stop_reason=reason)
    return update
