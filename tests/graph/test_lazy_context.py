"""A context over the lazy threshold through the whole graph: search, then FINAL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import Script, fast_settings, tool

from rlm_graph import answer


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
