"""A context over the lazy threshold through the whole graph: search, then FINAL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from support import Script, fast_settings, many_files, replies_so_far, tool

from rlm_graph import answer, build_graph
from rlm_graph.api import reference
from rlm_graph.offline.stub_server import StubReply
from rlm_graph.storage.contexts import blob_dir, forget_folder


def forget(path: Path) -> None:
    """Remove the store's link to a test's file stored by its stamp (1 MiB: the settings')."""
    shutil.rmtree(blob_dir(reference(path, lazy_text_bytes=1 << 20)))


def test_the_needle_is_found_in_two_cells_and_the_model_sees_only_the_preview(
    stub: Any, tmp_path: Path
) -> None:
    lines = [f"{i:07d} filler line of the log\n" for i in range(120_000)]  # ~3.7 MB
    lines[97_531] = "0097531 the secret code is 4217\n"
    path = tmp_path / "log.txt"
    path.write_text("".join(lines))
    server = stub(
        Script(
            [
                tool("hits = await context.search(r'secret code is (\\d+)')\nprint(hits)"),
                tool("FINAL(hits[0]['match'].split()[-1])"),
            ]
        )
    )
    try:
        result = answer("What is the code?", path, **fast_settings(server, lazy_context_mb=1))
    finally:
        forget(path)
    assert result.answer == "4217"
    bodies = [json.dumps(r.body) for r in server.requests]
    # stored by its stamp, unread: its size is known in bytes, not in characters
    assert f"text of {path.stat().st_size:,} bytes, read on demand through a handle" in bodies[0]
    assert all("0090000 filler" not in body for body in bodies)  # never past the preview
    assert "[scanned 3.5 MiB of the context in this cell]" in bodies[1]


def test_a_large_folder_is_searched_without_the_model_reading_its_files(
    stub: Any, tmp_path: Path
) -> None:
    folder = many_files(tmp_path / "repo", 2_000)
    (folder / "d11" / "f1231.txt").write_text("the code is 4217\n")
    server = stub(
        Script(
            [
                tool("hits = await context.search(r'code is (\\d+)')\nprint(hits)"),
                tool("FINAL(context[hits[0]['path']].split()[-1])"),
            ]
        )
    )
    settings = fast_settings(server, lazy_folder_files=100)
    try:
        result = answer("What is the code?", folder, **settings)
    finally:
        forget_folder(folder)
    assert result.answer == "4217"
    bodies = [json.dumps(r.body) for r in server.requests]
    assert "a folder of 2,000 files, read on demand" in bodies[0]
    assert "d00/f0000.txt" in bodies[0]  # the preview: paths, not contents
    assert all("filler" not in body and "TOKEN" not in body for body in bodies)


def test_a_log_that_grew_while_the_run_was_down_is_refused_on_resume(
    stub: Any, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"{i:07d} line of the log\n" for i in range(100_000)))  # 2.4 MB
    script = Script([tool("first = context.lines(0, 1)"), tool("FINAL(first)")])
    down = {"now": False}

    def responder(body: dict[str, Any]) -> StubReply | str:
        if down["now"]:
            return StubReply(status=503, error="overloaded")
        down["now"] = replies_so_far(body) == 0  # down after the first cell's reply
        return script(body)

    server = stub(responder)
    graph = build_graph(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "grown"}}
    settings = fast_settings(server, lazy_context_mb=1)
    stored = reference(log, lazy_text_bytes=1 << 20)  # the run's reference, as it makes it
    failed = answer("q", log, graph=graph, config=config, **settings)
    assert failed.status == "failed" and failed.iterations == 1
    with log.open("a") as handle:  # the log grows while the run is down
        handle.write("0100000 written after the crash\n")
    down["now"] = False
    resumed = answer("q", graph=graph, config=config, **settings)
    assert resumed.status == "failed"
    assert "was read in place and has changed since it was stored" in resumed.error
    assert len(server.requests) == 2  # no model call on the changed context
    shutil.rmtree(blob_dir(stored))
