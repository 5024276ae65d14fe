"""Chat models: building clients from names, token usage, prices and cost limits.

May import: ``text``, ``redact``. Nothing here knows about runs, sandboxes or the graph.
"""
