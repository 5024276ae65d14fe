"""rlm-graph inside other tools: the ``llm`` CLI plugin (and, later, agents and MCP).

The top layer: may import anything in the package; nothing in the package imports it.
"""
