"""rlm-graph: Recursive Language Models as a LangGraph graph with an eryx sandbox."""

from rlm_graph.api import RLMResult, aanswer, answer
from rlm_graph.context import Settings
from rlm_graph.graph import build_graph

__all__ = ["RLMResult", "Settings", "aanswer", "answer", "build_graph"]
