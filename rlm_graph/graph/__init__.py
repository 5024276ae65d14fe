"""The RLM as a LangGraph graph: state, prompts, replies, nodes, routing, approval.

May import every lower layer (``models``, ``settings``, ``storage``, ``repl``,
``subcalls``, ``observe``). Only ``api``, ``cli``, ``integrations`` and ``eval`` import it.
"""

from rlm_graph.graph.nodes import build_graph, graph

__all__ = ["build_graph", "graph"]
