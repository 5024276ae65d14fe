"""Running without a network or a fleet: the stub server, the demo model, a local cluster.

The OpenAI-compatible stub server and the scripted model behind ``rlm demo`` (also used
by ``rlm eval --offline`` and the tests), and a Ray cluster of several nodes on this
one machine (``local_cluster``, for the Ray tests and ``python -m bench scale``).

Imports nothing from the rest of rlm_graph, so any layer's tests may use it.
"""
