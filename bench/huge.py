"""Figure 7: contexts larger than the sandbox, read through the lazy handles.

A sparse file of 10 GiB (zeros with a line break every MiB, so it costs ~no disk and
grep sees ordinary 1 MiB lines) holds one needle at 90 %. Measured in one process:
storing it (linked in place, named by its stamp: only its two ends are read), the
time from ``answer()`` to the first cell (the file now known) in the process's first
run and in a second one, then for a copy of it never seen before, the whole scripted
run (cell 1 searches all of it, cell 2 calls FINAL) through the real graph, sandbox
and HTTP client against the stub, and the peak PSS of the process tree throughout.
The host's search alone is then timed against GNU ``grep -c`` on the same file, both
reading it from the page cache. Then the same for a folder of 100,000 sparse files of
~10 KiB (1 GiB; ~400 MB of disk while it lasts), the needle in one: its first run
meets it never seen, its second knows it.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    fmt,
    forget_blob,
    is_root_request,
    load,
    scripted,
    stub_settings,
    table,
)
from bench.first_cell import TreePeak
from rlm_graph import answer
from rlm_graph.offline.stub_server import StubServer
from rlm_graph.offline.stub_server import tool_reply as tool
from rlm_graph.repl.lazy import search_file
from rlm_graph.storage.contexts import forget_folder, store_path
from rlm_graph.storage.folders import SETTLED_NS, list_files

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


def _grep(path: Path) -> tuple[float, float]:
    """GNU ``grep -c`` of the pattern on ``path``: its wall and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        ["grep", "-c", "-a", "-E", PATTERN.replace(r"\d", "[0-9]"), str(path)],
        check=True,
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return time.perf_counter() - started, cpu


@dataclass
class Runs:
    """Two scripted runs on one context: the first of this process, then a second one."""

    first_cell: tuple[float, float]  # answer() to the first cell: fresh process, then warm
    total: float  # the first run, whole
    peak: int  # peak PSS of the process tree, both runs


def one_run(context: Path) -> tuple[float, float]:
    """The scripted root finds the needle (search, FINAL): (to its first cell, whole run)."""
    server = StubServer(scripted([tool(code) for code in CELLS])).start()
    try:
        started = time.monotonic()
        result = answer("What is the magic number?", context, **stub_settings(server))
        total = time.monotonic() - started
        cells = [r.timestamp for r in server.requests if r.body and not is_root_request(r.body)]
    finally:
        server.stop()
    if result.answer != "7213" or not cells:
        raise RuntimeError(f"the needle was not found: {result.answer!r} {result.error}")
    return cells[0] - started, total


def two_runs(context: Path) -> Runs:
    """Two runs on ``context``, with the peak memory of both.

    The first run of a process also starts the sandbox worker and imports the model
    client (~0.9 s); the second shows what the context itself costs.
    """
    with TreePeak() as memory:
        (fresh, total), (warm, _) = one_run(context), one_run(context)
    return Runs((fresh, warm), total, memory.peak)


def _run_rows(runs: Runs, first: str, second: str) -> list[tuple[str, str]]:
    fresh, warm = runs.first_cell
    return [
        (f"answer() to first cell, {first}", f"{fmt(fresh)} s"),
        (f"answer() to first cell, {second}", f"{fmt(warm)} s"),
        ("whole first run: search cell + FINAL cell", f"{fmt(runs.total)} s, answer 7213"),
        ("peak PSS of the process tree during both runs", f"{runs.peak / (1 << 20):,.0f} MB"),
    ]


def unseen_first_cell(path: Path) -> float:
    """answer() to the first cell for a file like ``path`` never stored before (warm process)."""
    unseen = sparse_haystack(path.with_name("unseen.log"), path.stat().st_size)
    try:
        return one_run(unseen)[0]
    finally:
        forget_blob(unseen)
        unseen.unlink()


def measure(path: Path) -> list[tuple[str, str]]:
    """The rows of the figure for one haystack file."""
    size = path.stat().st_size
    started = time.perf_counter()
    store_path(path)
    stored = time.perf_counter() - started
    runs = two_runs(path)
    unseen = unseen_first_cell(path)
    started, cpu = time.perf_counter(), time.thread_time()  # the search is one thread's
    with path.open("rb", buffering=0) as reader:
        hits = search_file(reader, PATTERN, 5, 0, size).hits
    searched, search_cpu = time.perf_counter() - started, time.thread_time() - cpu
    assert len(hits) == 1
    grep, grep_cpu = min(_grep(path) for _ in range(2))
    return [
        ("context", f"{size / GIB:g} GiB sparse file, needle at 90 %"),
        ("store it (linked in place, named by its stamp), fresh", f"{fmt(stored)} s"),
        *_run_rows(runs, "first run", "second run"),
        ("answer() to first cell, a file never seen, warm process", f"{fmt(unseen)} s"),
        (
            "host search (`context.search`) alone",
            f"{fmt(searched)} s ({_rate(size, searched)}), {fmt(search_cpu)} s CPU",
        ),
        (
            "GNU `grep -c` on the same file",
            f"{fmt(grep)} s ({_rate(size, grep)}), {fmt(grep_cpu)} s CPU",
        ),
        (
            "search / grep throughput",
            f"{grep / searched:.2f}x (target >= 0.5x); CPU {grep_cpu / search_cpu:.2f}x",
        ),
    ]


def sparse_folder(folder: Path, files: int, size: int) -> Path:
    """``files`` sparse files of ``size`` bytes in 100 subfolders, the needle in one at 90 %."""
    needle = files * 9 // 10
    for index in range(files):
        path = folder / f"d{index % 100:02d}" / f"f{index:06d}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.truncate(size - 1)
            handle.seek(size - 1)
            handle.write(b"\n")
            if index == needle:
                handle.seek(0)
                handle.write(NEEDLE.encode())
    return folder


def measure_folder(folder: Path) -> list[tuple[str, str]]:
    """The rows of the figure for a folder of many files.

    Stored once to time the listing, then forgotten: the first run meets a folder never
    seen (in a process that already ran), the second one knows it by its folders.
    """
    files = list_files(folder)
    size = sum((folder / path).stat().st_size for path in files)
    time.sleep(SETTLED_NS / 1e9)  # its folders' stamps settle: the first run's listing is kept
    started = time.perf_counter()
    store_path(folder)
    stored = time.perf_counter() - started
    forget_folder(folder)
    runs = two_runs(folder)
    return [
        ("context", f"{len(files):,} files, {size / GIB:.2f} GiB (sparse), needle in one"),
        ("store it (listed, no file read or stat'ed), fresh", f"{fmt(stored)} s"),
        *_run_rows(runs, "never seen (the process warm)", "known (not listed again)"),
    ]


def run(quick: bool = False) -> str:
    """The figure's table: 10 GiB and 100,000 files (1 GiB and 20,000 with ``--quick``)."""
    before = load()
    folder = Path(tempfile.mkdtemp(prefix="rlm-huge-"))
    try:
        path = sparse_haystack(folder / "huge.log", (1 if quick else 10) * GIB)
        rows = measure(path)
        forget_blob(path)
        path.unlink()
        files = 20_000 if quick else 100_000
        tree = sparse_folder(folder / "tree", files, GIB // 100_000)
        rows += measure_folder(tree)
        forget_folder(tree)
    finally:
        shutil.rmtree(folder)
    title = f"7. A context larger than the sandbox (one process; load average {before} before, "
    return table(f"{title}{load()} after, on {os.cpu_count()} CPUs)", ["what", "measured"], rows)
