"""When a run goes on and when it stops: the conditional edges of the graph.

Studio draws exactly these: plan → execute | inspect | finalize, execute → inspect |
finalize, inspect → plan | finalize. A run stops (goes to finalize) when

- plan may not make a model step: the context is unusable, the root model failed after
  its retries, a cost limit is reached, or a sub-RLM's tree has no sub-calls left;
- execute cannot set up the sandbox (the failure is in ``status``/``error``);
- inspect found an answer (FINAL in code, or in a reply without code), a cost limit was
  reached, or ``max_iterations`` steps were taken.
"""

from __future__ import annotations

from typing import Literal

from langgraph.runtime import Runtime

from rlm_graph.deployment import Deployment
from rlm_graph.graph.runtime import settings_of
from rlm_graph.graph.state import State
from rlm_graph.settings import Settings


def route_after_plan(state: State) -> Literal["execute", "inspect", "finalize"]:
    """Code runs; an answer or a note is inspected; a stop ends the run."""
    step = state.get("step")
    if step is None or step["kind"] == "stop":
        return "finalize"
    return "execute" if step["kind"] == "code" else "inspect"


def route_after_execute(state: State) -> Literal["inspect", "finalize"]:
    """A sandbox that could not be set up ends the run; anything that ran is inspected."""
    return "finalize" if state.get("status") == "failed" else "inspect"


def route_after_inspect(
    state: State, runtime: Runtime[Settings], *, deployment: Deployment
) -> Literal["plan", "finalize"]:
    """Loop while there is no answer and iterations are left (as the deployment caps them)."""
    settings = settings_of(runtime, deployment)
    if state.get("status") != "running" or state.get("iteration", 0) >= settings.max_iterations:
        return "finalize"
    return "plan"
