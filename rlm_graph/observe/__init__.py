"""Seeing a run: events, live progress, trajectories, the viewer, LangSmith.

Progress events and their types (``events``; ``schema`` turns the types into the docs'
JSON schema and event table), the live terminal view, trajectory files, the HTML viewer,
the official library's log format and LangSmith nesting.

May import: ``models``, ``settings``, ``text``. Readers here never import the graph:
they consume events.
"""
