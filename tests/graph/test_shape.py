"""The graph's shape is a snapshot: a change to the control flow is a visible diff.

After an intended change, rewrite the snapshot with
``RLM_UPDATE_SNAPSHOTS=1 pytest tests/graph/test_shape.py`` and commit the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

from rlm_graph.graph import graph

SNAPSHOT = Path(__file__).parent / "rlm.mmd"


def test_the_drawing_matches_the_snapshot() -> None:
    drawing = graph.get_graph().draw_mermaid()
    if os.environ.get("RLM_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(drawing)
    assert drawing == SNAPSHOT.read_text()


def test_stop_and_failure_paths_are_edges() -> None:
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert ("plan", "finalize") in edges  # a stop or a failed model call
    assert ("execute", "finalize") in edges  # a sandbox that could not be set up
    assert ("plan", "inspect") in edges  # an answer or a note without code
    assert {("inspect", "plan"), ("inspect", "finalize")} <= edges


def test_a_caller_gets_the_threads_history_back() -> None:
    # Studio draws its output panel from this schema; the README promises `history`.
    assert "history" in graph.get_output_jsonschema()["properties"]
