"""Entry point named in langgraph.json: the compiled RLM graph, without a checkpointer.

The server (or an embedding application) supplies the checkpointer and store. Its
callers are not the operator: the graph answers to the deployment its environment
describes (``RLM_ALLOWED_BASE_URLS``, ``RLM_ALLOWED_MODELS``, ``RLM_CONTEXT_ROOTS``,
``RLM_CEILINGS``; docs/security.md), read once when the server loads it.
"""

from rlm_graph.deployment import Deployment
from rlm_graph.graph import build_graph

graph = build_graph(deployment=Deployment.from_env())

__all__ = ["graph"]
