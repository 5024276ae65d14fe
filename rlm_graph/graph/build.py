"""The graph assembled: nodes, and the edges ``routing`` decides."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial, update_wrapper
from typing import Any

from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from rlm_graph.deployment import TRUSTED, Deployment
from rlm_graph.graph.execute import execute
from rlm_graph.graph.finalize import finalize
from rlm_graph.graph.inspection import inspect_output
from rlm_graph.graph.plan import plan
from rlm_graph.graph.routing import route_after_execute, route_after_inspect, route_after_plan
from rlm_graph.graph.state import InputState, OutputState, State
from rlm_graph.settings import Settings
from rlm_graph.subcalls.loop import run_blocking

Node = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def node(anode: Node, deployment: Deployment) -> RunnableCallable:
    """A coroutine node, bound to the deployment, that synchronous callers can run too.

    The nodes are coroutines so that a server's event loop, not one of its few
    threads, waits while a cell waits on its sub-calls (issue 20). LangGraph runs a
    coroutine node only from ``ainvoke``/``astream``; under ``invoke`` (and ``stream``)
    this runs it on a loop of the caller's thread, which waits for it anyway
    (``subcalls.loop.run_blocking``). The deployment is given here, where no run's
    settings or config reach.
    """

    async def bound(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
        return await anode(state, runtime, deployment=deployment)

    def blocking(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
        return run_blocking(bound(state, runtime))

    return RunnableCallable(blocking, bound, name=anode.__name__, trace=False)


def plain_node(func: Callable[..., dict[str, Any]], deployment: Deployment) -> RunnableCallable:
    """A node that never blocks nor waits, bound to the deployment: called as it is.

    A coroutine wrapper lets LangGraph call it on a server's loop, not on a thread of
    the default pool. A synchronous caller calls it directly: through its thread's own
    loop (``node``) it cost ~70 us more a step, about 1 % of an iteration of the
    overhead bench (docs/benchmarks.md).
    """

    def bound(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
        return func(state, runtime, deployment=deployment)

    async def abound(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
        return bound(state, runtime)

    return RunnableCallable(bound, abound, name=func.__name__, trace=False)


def build_graph(
    *, deployment: Deployment = TRUSTED, **compile_kwargs: Any
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A compiled RLM graph; ``compile_kwargs`` go to ``compile`` (e.g. a checkpointer).

    ``deployment`` is what the operator allows every run (``rlm_graph.deployment``); the
    default trusts the caller, as the CLI and the Python API do.
    """
    builder = StateGraph(
        State, context_schema=Settings, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("plan", node(plan, deployment))
    builder.add_node("execute", node(execute, deployment))
    builder.add_node("inspect", plain_node(inspect_output, deployment))
    builder.add_node("finalize", node(finalize, deployment))
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", route_after_plan, ["execute", "inspect", "finalize"])
    builder.add_conditional_edges("execute", route_after_execute, ["inspect", "finalize"])
    route = update_wrapper(partial(route_after_inspect, deployment=deployment), route_after_inspect)
    builder.add_conditional_edges("inspect", route, ["plan", "finalize"])
    builder.add_edge("finalize", END)
    compile_kwargs.setdefault("name", "rlm")
    return builder.compile(**compile_kwargs)


graph = build_graph()
