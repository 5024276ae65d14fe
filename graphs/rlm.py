"""Entry point named in langgraph.json: the compiled RLM graph, without a checkpointer.

The server (or an embedding application) supplies the checkpointer and store.
"""

from rlm_graph.graph import graph

__all__ = ["graph"]
