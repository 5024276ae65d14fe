"""Sub-RLMs: a sub-call answered by this same graph, one level deeper, in the same tree.

Whether a sub-call is a sub-RLM at all is decided by the run's
:class:`~rlm_graph.subcalls.scope.Scope` (``Scope.recursive``, the depth rule); the
broker then calls the executor's ``run_child``, which the execute node hands it: the
one here, in this process, or with ``sub_rlm_executor="ray"`` a Ray task each
(``graph/ray_executor.py``), the tree's budget then in a cluster actor.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, replace
from functools import cache, partial
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.graph.state import CompiledStateGraph

from rlm_graph.deployment import Deployment
from rlm_graph.graph import prompts
from rlm_graph.graph.runner import GraphStream, answer_text, run_config
from rlm_graph.graph.runtime import MODELS_KEY, SCOPE_KEY
from rlm_graph.settings import Settings
from rlm_graph.subcalls.broker import ChildResult, Emit, RunChild
from rlm_graph.subcalls.scope import LocalBudget, OpenBudget, Scope


@cache
def child_graph(deployment: Deployment) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph sub-RLMs run: no checkpointer, since the parent's journal records them.

    It answers to its root's deployment: a sub-RLM may use no URL, model or file its
    root could not.
    """
    from rlm_graph.graph.build import build_graph  # build imports the nodes, which use this

    return build_graph(deployment=deployment, name="rlm-sub")


async def run_child(
    prompt: str,
    settings: Settings,
    scope: Scope,
    emit: Emit | None = None,
    *,
    models: dict[str, BaseChatModel] | None = None,
) -> ChildResult:
    """Answer ``prompt`` with a sub-RLM whose context is the prompt, in ``scope``.

    The child runs with its parent's settings (no person reviews its code: nobody is
    asked mid-sub-call) and the scope one level deeper, whose budget is its tree's. Its
    progress events go to ``emit``, so the root's stream shows the whole tree; the
    model clients its parent was given (``models``) serve it too.
    """
    child = replace(settings, approve_code=False)
    config = run_config(
        child,
        {
            "metadata": {"rlm_depth": scope.depth},
            "configurable": {SCOPE_KEY: scope, MODELS_KEY: models or {}},
        },
    )
    stream = GraphStream(child_graph(scope.deployment), child, config, on_event=emit)
    inputs = {"question": prompts.CHILD_QUESTION, "context": prompt}
    # A run of its own, not a subgraph of the parent's: under the parent's config LangGraph
    # would nest it under the parent's checkpointer, which then fails to save the live
    # scope in its config (a server's saver pickles it: "cannot pickle '_thread.lock'").
    # The rest of the context stays: it holds the LangSmith parent (the cell's span).
    context = contextvars.copy_context()
    context.run(var_child_runnable_config.set, None)
    state = await asyncio.create_task(stream.arun(inputs), context=context)
    if state.get("status") == "failed":
        raise RuntimeError(state.get("error") or "sub-RLM failed")
    return ChildResult(answer=answer_text(state.get("answer")), usage=state.get("usage") or {})


@dataclass(frozen=True)
class Executor:
    """Where a step's sub-RLMs run, and how to open a budget they can all reach there."""

    run_child: RunChild
    open_budget: OpenBudget


def executor_for(settings: Settings, models: dict[str, BaseChatModel]) -> Executor:
    """The ``sub_rlm_executor`` setting made real: this process, or a Ray task each.

    Only a run that can have sub-RLMs (``max_depth`` >= 2) reaches the cluster; the
    model clients a caller supplied serve local sub-RLMs only (they do not travel).
    """
    if settings.sub_rlm_executor == "ray" and settings.max_depth > 1:
        from rlm_graph.graph.ray_executor import run_child_on_ray  # imports this module
        from rlm_graph.subcalls.cluster import RayBudget

        return Executor(run_child_on_ray, RayBudget.open)
    return Executor(partial(run_child, models=models), LocalBudget)
