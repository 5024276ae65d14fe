"""A context over the lazy threshold through the whole graph: search, then FINAL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from support import Script, fast_settings, many_files, tool

from rlm_graph import answer
from rlm_graph.api import reference
from rlm_graph.storage.contexts import blob_dir


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
    result = answer("What is the code?", path, **fast_settings(server, lazy_context_mb=1))
    assert result.answer == "4217"
    bodies = [json.dumps(r.body) for r in server.requests]
    assert "read on demand through a handle" in bodies[0]
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
        shutil.rmtree(blob_dir(reference(folder, 100)))
    assert result.answer == "4217"
    bodies = [json.dumps(r.body) for r in server.requests]
    assert "a folder of 2,000 files, read on demand" in bodies[0]
    assert "d00/f0000.txt" in bodies[0]  # the preview: paths, not contents
    assert all("filler" not in body and "TOKEN" not in body for body in bodies)
