"""Figure 3: time from ``answer()`` to the first cell running, and peak RSS, by size.

Each measurement runs in a fresh subprocess, so one size's memory cannot pollute the
next and each pays what a new process pays (model client, sandbox factory load). The
cell's first statement is a sub-call; its arrival at the stub marks "the first cell
is running" on the same monotonic clock as the start. The floor does the same after
reading the file into its namespace, the least any RLM must do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    fmt,
    forget_blob,
    is_root_request,
    median,
    scripted,
    stub_settings,
    table,
    verdict,
    write_haystack,
)
from rlm_graph.stub_server import StubServer
from rlm_graph.stub_server import fenced_reply as fenced
from rlm_graph.stub_server import tool_reply as tool

TARGET_SECONDS = 0.5  # for 100 MB
TARGET_RSS = 3.0  # x context, for 100 MB
MB = 1 << 20
GRAPH_CELL = "r = await llm_query('first cell')\nFINAL(len(context))"
FLOOR_CELL = "r = llm_query('first cell')\nFINAL(len(context))"


def _peak_rss() -> int:
    """Peak resident set of this process in bytes.

    ``VmHWM`` first: Linux keeps ``ru_maxrss`` across fork and exec, so a child of a
    big parent reports the parent's peak (we saw 724 MB for every size). ``VmHWM``
    belongs to the address space, which exec replaces.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(mode: str, path: Path) -> dict[str, Any]:
    """Run one measurement in this (fresh) process and return it."""
    from bench.floor import run_floor
    from rlm_graph import answer
    from rlm_graph.api import reference

    cell = GRAPH_CELL if mode == "graph" else FLOOR_CELL
    server = StubServer(scripted([(tool if mode == "graph" else fenced)(cell)])).start()
    before = _peak_rss()
    started = time.monotonic()
    if mode == "graph":
        result = answer("q", path, **stub_settings(server, max_iterations=3))
        value, error = result.answer, result.error
    else:
        value, _ = run_floor("q", path.read_text(encoding="utf-8"), base_url=server.base_url)
        error = ""
    total = time.monotonic() - started
    peak = _peak_rss()
    marks = [r.timestamp for r in server.requests if r.body and not is_root_request(r.body)]
    server.stop()
    size = path.stat().st_size
    if value != size or not marks:
        raise RuntimeError(f"{mode} run went wrong: answer={value!r} error={error}")
    out = {"first_cell": marks[0] - started, "total": total, "rss": peak, "rss_before": before}
    if mode == "graph":  # what storing alone costs (it re-copies even when stored)
        store_started = time.monotonic()
        reference(path)
        out["store"] = time.monotonic() - store_started
        forget_blob(path)
    return out


def _spawn(mode: str, path: Path) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "bench.first_cell", mode, str(path)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"first_cell child {mode} {path} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(quick: bool = False) -> str:
    """Measure and return the table of figure 3."""
    sizes = (1, 10) if quick else (1, 10, 100)
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        for size in sizes:
            path = write_haystack(Path(tmp) / f"haystack-{size}mb.txt", size * MB, seed=size)
            runs: dict[str, list[dict[str, Any]]] = {"floor": [], "graph": []}
            for _ in range(repeats):
                for mode, done in runs.items():
                    done.append(_spawn(mode, path))
            floor, graph = runs["floor"], runs["graph"]
            floor_s = median([r["first_cell"] for r in floor])
            graph_s = median([r["first_cell"] for r in graph])
            graph_rss = median([r["rss"] for r in graph])
            added = median([r["rss"] - r["rss_before"] for r in graph])
            rss_ratio = graph_rss / (size * MB)
            rows.append(
                [
                    f"{size} MB",
                    fmt(floor_s),
                    fmt(graph_s),
                    fmt(graph_s / floor_s) + "x",
                    fmt(median([r["store"] for r in graph])),
                    f"{median([r['rss'] for r in floor]) / MB:,.0f}",
                    f"{graph_rss / MB:,.0f}",
                    f"{added / MB:,.0f}",
                    fmt(rss_ratio) + "x",
                    fmt(added / (size * MB)) + "x",
                    (
                        f"{verdict(graph_s, TARGET_SECONDS)} / {verdict(rss_ratio, TARGET_RSS)}"
                        if size == 100
                        else ""
                    ),
                ]
            )
    return table(
        f"3. Time to first cell and peak RSS (fresh process per run, median of {repeats}; "
        f"target for 100 MB: <= {TARGET_SECONDS} s, RSS <= {TARGET_RSS:g}x context)",
        [
            "context",
            "floor s",
            "graph s",
            "vs floor",
            "store_path s",
            "floor peak MB",
            "graph peak MB",
            "graph added MB",
            "graph peak / ctx",
            "added / ctx",
            "target (time / RSS)",
        ],
        rows,
    )


def main() -> None:
    """Child entry point: ``python -m bench.first_cell graph|floor PATH``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("graph", "floor"))
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    print(json.dumps(child(args.mode, args.path)))


if __name__ == "__main__":
    main()
