"""The RLM as a LangGraph graph: state, prompts, replies, nodes, routing, approval, runner.

``build`` assembles the nodes (``plan``, ``execute``, ``inspection``, ``finalize``) with
the edges ``routing`` decides; ``recursion`` runs sub-RLMs; ``runtime`` is what every
node reads besides its state.

May import every lower layer (``models``, ``settings``, ``storage``, ``repl``,
``subcalls``, ``observe``). Only ``api``, ``cli``, ``integrations`` and ``eval`` import it.
"""

from rlm_graph.graph.build import build_graph, graph

__all__ = ["build_graph", "graph"]
