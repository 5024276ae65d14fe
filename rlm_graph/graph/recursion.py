"""Sub-RLMs: a sub-call answered by this same graph, one level deeper, in the same tree.

Whether a sub-call is a sub-RLM at all is decided by the run's
:class:`~rlm_graph.subcalls.scope.Scope` (``Scope.recursive``, the depth rule); the
broker then calls :func:`run_child`, which the execute node hands it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langgraph.graph.state import CompiledStateGraph

from rlm_graph.graph import prompts
from rlm_graph.graph.runtime import MODELS_KEY, SCOPE_KEY
from rlm_graph.observe.events import Event
from rlm_graph.settings import Settings
from rlm_graph.subcalls.broker import ChildResult, Emit
from rlm_graph.subcalls.scope import Scope


@cache
def child_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph sub-RLMs run: no checkpointer, since the parent's journal records them."""
    from rlm_graph.graph.build import build_graph  # build imports the nodes, which use this

    return build_graph(name="rlm-sub")


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
    result: dict[str, Any] = {}
    async for mode, chunk in child_graph().astream(
        {"question": prompts.CHILD_QUESTION, "context": prompt},
        config={
            "recursion_limit": 4 * child.max_iterations + 10,
            "metadata": {"rlm_depth": scope.depth},
            "configurable": {SCOPE_KEY: scope, MODELS_KEY: models or {}},
        },
        context=child,
        stream_mode=["custom", "values"],
    ):
        if mode == "values":
            result = cast(dict[str, Any], chunk)
        elif emit is not None:
            emit(cast(Event, chunk))
    if result.get("status") == "failed":
        raise RuntimeError(result.get("error") or "sub-RLM failed")
    answer = result.get("answer")
    text = answer if isinstance(answer, str) else json.dumps(answer, default=str)
    return ChildResult(answer=text, usage=result.get("usage") or {})
