"""The graph assembled: nodes, and the edges ``routing`` decides."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from rlm_graph.graph.execute import execute
from rlm_graph.graph.finalize import finalize
from rlm_graph.graph.inspection import inspect_output
from rlm_graph.graph.plan import plan
from rlm_graph.graph.routing import route_after_execute, route_after_inspect, route_after_plan
from rlm_graph.graph.state import InputState, OutputState, State
from rlm_graph.settings import Settings


def build_graph(**compile_kwargs: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A compiled RLM graph; ``compile_kwargs`` go to ``compile`` (e.g. a checkpointer)."""
    builder = StateGraph(
        State, context_schema=Settings, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("plan", plan)
    builder.add_node("execute", execute)
    builder.add_node("inspect", inspect_output)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "plan")
    builder.add_conditional_edges("plan", route_after_plan, ["execute", "inspect", "finalize"])
    builder.add_conditional_edges("execute", route_after_execute, ["inspect", "finalize"])
    builder.add_conditional_edges("inspect", route_after_inspect, ["plan", "finalize"])
    builder.add_edge("finalize", END)
    compile_kwargs.setdefault("name", "rlm")
    return builder.compile(**compile_kwargs)


graph = build_graph()
