"""The graph's shape is a snapshot: a change to the control flow is a visible diff.

After an intended change, rewrite the snapshot with
``RLM_UPDATE_SNAPSHOTS=1 pytest tests/graph/test_shape.py`` and commit the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from support import Script, tool

from rlm_graph.api import reference
from rlm_graph.graph import graph
from rlm_graph.offline.stub_server import Responder, StubModel
from rlm_graph.settings import Settings

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


def test_studios_input_form_shows_only_what_a_user_sets() -> None:
    schema = graph.get_input_jsonschema()
    assert set(schema["properties"]) == {"question", "context", "context_path"}
    assert all(field.get("description") for field in schema["properties"].values())


def test_the_fields_left_out_of_the_form_are_still_accepted(
    in_process: Callable[[Responder], tuple[StubModel, dict[str, Any]]],
) -> None:
    # An embedder's ``context_ref`` and Studio chat's ``messages``, through the graph.
    model, config = in_process(Script([tool("FINAL(context[:3])")]))
    inputs: dict[str, Any] = {
        "messages": [HumanMessage("first three letters?")],
        "context_ref": reference("abc!"),
    }
    settings = Settings(model="stub-root", sub_model="stub-sub", cell_timeout=20.0)
    out = graph.invoke(inputs, {"configurable": config["configurable"]}, context=settings)
    assert (out["status"], out["answer"]) == ("answered", "abc")
    assert "first three letters?" in str(model.requests[0])
