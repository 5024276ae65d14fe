"""Figure 7: a context larger than the sandbox, read through the lazy handle.

A sparse file of ``--gb`` GiB (zeros with a line break every MiB, so it costs ~no disk
and grep sees ordinary 1 MiB lines) holds one needle at 90 %. Measured in one process:
storing it (hashed in place, no copy), the time from ``answer()`` to the first cell
(the file now known), the whole scripted run (cell 1 searches all of it, cell 2 calls
FINAL) through the real graph, sandbox and HTTP client against the stub, and the peak
PSS of the process tree throughout. The host's search alone is then timed against GNU
``grep -c`` on the same file, both reading it from the page cache.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import fmt, forget_blob, is_root_request, scripted, stub_settings, table
from bench.first_cell import TreePeak
from rlm_graph import answer
from rlm_graph.offline.stub_server import StubServer
from rlm_graph.offline.stub_server import tool_reply as tool
from rlm_graph.repl.lazy import search_file
from rlm_graph.storage.contexts import store_path

GIB = 1 << 30
NEEDLE = "the magic number is 7213\n"
PATTERN = r"magic number is \d+"
CELLS = [
    "r = await llm_query('first cell')\n"
    f"hits = await context.search(r'{PATTERN}', max_hits=5)\nprint(hits)",
    "FINAL(hits[0]['match'].split()[-1])",
]


def sparse_haystack(path: Path, size: int) -> Path:
    """``size`` bytes of zeros, a line break every MiB and the needle at 90 %."""
    with path.open("wb") as handle:
        handle.truncate(size)
        for offset in range((1 << 20) - 1, size, 1 << 20):
            handle.seek(offset)
            handle.write(b"\n")
        handle.seek((size * 9 // 10) & ~((1 << 20) - 1))
        handle.write(NEEDLE.encode())
    return path


def _rate(size: int, seconds: float) -> str:
    return f"{size / GIB / seconds:.2f} GiB/s"


def _grep_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["grep", "-c", "-a", "-E", PATTERN.replace(r"\d", "[0-9]"), str(path)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def measure(path: Path) -> list[tuple[str, str]]:
    """The rows of the figure for one haystack."""
    size = path.stat().st_size
    started = time.perf_counter()
    store_path(path)
    stored = time.perf_counter() - started
    server = StubServer(scripted([tool(code) for code in CELLS])).start()
    try:
        with TreePeak() as memory:
            run_started = time.monotonic()
            result = answer("What is the magic number?", path, **stub_settings(server))
            total = time.monotonic() - run_started
        marks = [r.timestamp for r in server.requests if r.body and not is_root_request(r.body)]
    finally:
        server.stop()
    if result.answer != "7213" or not marks:
        raise RuntimeError(f"the needle was not found: {result.answer!r} {result.error}")
    started = time.perf_counter()
    hits = search_file(path, PATTERN, 5, 0, size).hits
    searched = time.perf_counter() - started
    assert len(hits) == 1
    grep = min(_grep_seconds(path) for _ in range(2))
    return [
        ("context", f"{size / GIB:g} GiB sparse file, needle at 90 %"),
        ("store it (hashed in place, no copy), fresh", f"{fmt(stored)} s ({_rate(size, stored)})"),
        ("answer() to first cell, file known", f"{fmt(marks[0] - run_started)} s"),
        ("whole run: search cell + FINAL cell", f"{fmt(total)} s, answer {result.answer}"),
        ("peak PSS of the process tree during the run", f"{memory.peak / (1 << 20):,.0f} MB"),
        ("host search (`context.search`) alone", f"{fmt(searched)} s ({_rate(size, searched)})"),
        ("GNU `grep -c` on the same file", f"{fmt(grep)} s ({_rate(size, grep)})"),
        ("search / grep throughput", f"{grep / searched:.2f}x (target >= 0.5x)"),
    ]


def run(quick: bool = False) -> str:
    """The figure's table: 10 GiB (1 GiB with ``--quick``)."""
    folder = Path(tempfile.mkdtemp(prefix="rlm-huge-"))
    try:
        path = sparse_haystack(folder / "huge.log", (1 if quick else 10) * GIB)
        rows = measure(path)
        forget_blob(path)
    finally:
        shutil.rmtree(folder)
    return table("7. A context larger than the sandbox (one process)", ["what", "measured"], rows)
