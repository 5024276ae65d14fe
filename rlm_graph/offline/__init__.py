"""Models without a network: the stub server and the scripted demo model.

The OpenAI-compatible stub server and the scripted model behind ``rlm demo`` (also used
by ``rlm eval --offline`` and the tests).

Imports nothing from the rest of rlm_graph, so any layer's tests may use it.
"""
