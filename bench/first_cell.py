"""Figure 3: time from the call to the first cell running, and peak memory, by size.

Each measurement runs in a fresh subprocess, so one size's memory cannot pollute the
next and each pays what a new process pays (model client, sandbox factory load). The
cell's first statement is a sub-call; its arrival at the stub marks "the first cell
is running" on the same monotonic clock as the start. rlm-graph is given the file's
path (it stores the file by reference); the floor, rlms and dspy take text, so their
time includes reading the file, the least any of them must do. Importing each
framework (process start-up) is timed apart, in a fresh interpreter.

Memory is the peak, sampled every 10 ms, of the PSS summed over the measuring process
and every process under it: rlm-graph runs each sandbox in a child process (forked by a
zygote), which the host's own peak RSS would miss, and PSS splits the pages a fork
shares among its sharers instead of counting them twice.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    fmt,
    forget_blob,
    is_root_request,
    median,
    table,
    verdict,
    write_haystack,
)
from bench.peers import PEERS, STARTUP, available
from rlm_graph.offline.stub_server import StubServer

TARGET_SECONDS = 0.5  # for 100 MB
TARGET_RSS = 3.0  # x context, for 100 MB
MB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
CELL = "r = QUERY('first cell')\nDONE(len(context))"


def _status_field(pid: int | str, name: str, file: str = "status") -> int:
    """A ``kB`` field of /proc/PID/status (or smaps_rollup), in bytes; 0 if gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _status_field(entry.name, "PPid") // 1024
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class TreePeak:
    """Peak PSS of a process (default: this one) and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.01, root: int | None = None) -> None:
        self.peak = 0
        self.root_peak = 0  # the RSS of the root process alone
        self._root = os.getpid() if root is None else root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            # VmHWM is the kernel's own peak, so one sample before the root exits holds it:
            # a sampled VmRSS read 0 for a 0.1 s process when the machine was loaded.
            self.root_peak = max(self.root_peak, _status_field(self._root, "VmHWM"))
            total = sum(_status_field(p, "Pss", "smaps_rollup") for p in _tree(self._root))
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child(mode: str, path: Path) -> dict[str, Any]:
    """Run one measurement in this (fresh) process and return it."""
    from bench.peers import Job, prepare, responder
    from bench.peers import run as run_peer

    prepare(mode)

    server = StubServer(responder(mode, [CELL])).start()
    before = sum(_status_field(p, "Pss", "smaps_rollup") for p in _tree(os.getpid()))
    with TreePeak() as memory:
        started = time.monotonic()
        # rlm-graph reads the file itself (by reference); the others are handed its text
        context = path if mode == "graph" else path.read_text(encoding="utf-8")
        value = run_peer(mode, Job("q", context, max_iterations=3), server)
        total = time.monotonic() - started
        del context
    peak = memory.peak
    marks = [r.timestamp for r in server.requests if r.body and not is_root_request(r.body)]
    server.stop()
    size = path.stat().st_size
    if str(value) != str(size) or not marks:
        raise RuntimeError(f"{mode} run went wrong: answer={value!r}")
    out = {
        "first_cell": marks[0] - started,
        "total": total,
        "rss": peak,
        "rss_before": before,
    }
    if mode == "graph":  # leave no 100 MB copies in the shared home
        forget_blob(path)
    return out


def _spawn(mode: str, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.first_cell", mode, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"first_cell child {mode} {path} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def startup(code: str, repeats: int) -> float:
    """Seconds a fresh interpreter takes to run ``code``, minus a bare interpreter."""

    def spawn(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        return time.perf_counter() - started

    bare = median([spawn("pass") for _ in range(repeats)])
    return median([spawn(code) for _ in range(repeats)]) - bare


def run(quick: bool = False) -> str:
    """Measure and return the tables of figure 3."""
    sizes = (1, 10) if quick else (1, 10, 100)
    repeats = 1 if quick else 3
    modes = available()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        for size in sizes:
            path = write_haystack(Path(tmp) / f"haystack-{size}mb.txt", size * MB, seed=size)
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for _ in range(repeats):
                for mode, done in runs.items():
                    done.append(_spawn(mode, path))
            seconds = {m: median([r["first_cell"] for r in done]) for m, done in runs.items()}
            rss = {m: median([r["rss"] for r in done]) for m, done in runs.items()}
            ours, ours_rss = seconds["graph"], rss["graph"]
            rows.append(
                [
                    f"{size} MB",
                    *(fmt(seconds[m]) for m in modes),
                    *(fmt(ours / seconds[m]) + "x" for m in modes if m != "graph"),
                    *(f"{rss[m] / MB:,.0f}" for m in modes),
                    fmt(ours_rss / (size * MB)) + "x",
                    (
                        f"{verdict(ours, TARGET_SECONDS)} / "
                        f"{verdict(ours_rss / (size * MB), TARGET_RSS)}"
                        if size == 100
                        else ""
                    ),
                ]
            )
    others = [m for m in modes if m != "graph"]
    first = table(
        f"3. Time from the call to the first cell running, and peak memory (PSS of the "
        f"process tree, sandbox processes included; fresh process per run, median of "
        f"{repeats}; target for 100 MB: <= {TARGET_SECONDS} s, memory <= "
        f"{TARGET_RSS:g}x context)",
        [
            "context",
            *(f"{m} s" for m in modes),
            *(f"graph/{m}" for m in others),
            *(f"{m} peak MB" for m in modes),
            "graph peak / ctx",
            "target (time / RSS)",
        ],
        rows,
    )
    start_rows = [[m, f"`{STARTUP[m]}`", fmt(startup(STARTUP[m], repeats))] for m in modes]
    return "\n".join(
        [
            first,
            table(
                f"3b. Process start-up: imports (and lazily imported client code) in a fresh "
                f"interpreter (median of {repeats}, bare interpreter subtracted)",
                ["framework", "start-up code", "seconds"],
                start_rows,
            ),
        ]
    )


def main() -> None:
    """Child entry point: ``python -m bench.first_cell floor|graph|rlms|dspy PATH``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=PEERS)
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    print(json.dumps(child(args.mode, args.path)))


if __name__ == "__main__":
    main()
