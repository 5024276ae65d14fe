"""The graph assembled: nodes, and the edges ``routing`` decides."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from rlm_graph.graph.execute import execute
from rlm_graph.graph.finalize import finalize
from rlm_graph.graph.inspection import inspect_output
from rlm_graph.graph.plan import plan
from rlm_graph.graph.routing import route_after_execute, route_after_inspect, route_after_plan
from rlm_graph.graph.state import InputState, OutputState, State
from rlm_graph.settings import Settings
from rlm_graph.subcalls.loop import run_blocking

Node = Callable[[State, Runtime[Settings]], Coroutine[Any, Any, dict[str, Any]]]


def node(anode: Node) -> RunnableCallable:
    """A coroutine node that synchronous callers (``invoke``, ``stream``) can run too.

    The nodes are coroutines so that a server's event loop, not one of its few
    threads, waits while a cell waits on its sub-calls (issue 20). LangGraph runs a
    coroutine node only from ``ainvoke``/``astream``; under ``invoke`` this runs it on
    the process's sub-call loop and blocks the caller's thread until it is done.
    """

    def blocking(state: State, runtime: Runtime[Settings]) -> dict[str, Any]:
        return run_blocking(anode(state, runtime))

    return RunnableCallable(blocking, anode, name=anode.__name__, trace=False)


def build_graph(**compile_kwargs: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A compiled RLM graph; ``compile_kwargs`` go to ``compile`` (e.g. a checkpointer)."""
    builder = StateGraph(
        State, context_schema=Settings, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("plan", node(plan))
    builder.add_node("execute", node(execute))
    builder.add_node("inspect", node(inspect_output))
    builder.add_node("finalize", node(finalize))
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", route_after_plan, ["execute", "inspect", "finalize"])
    builder.add_conditional_edges("execute", route_after_execute, ["inspect", "finalize"])
    builder.add_conditional_edges("inspect", route_after_inspect, ["plan", "finalize"])
    builder.add_edge("finalize", END)
    compile_kwargs.setdefault("name", "rlm")
    return builder.compile(**compile_kwargs)


graph = build_graph()
