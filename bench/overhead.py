"""Figure 1: framework overhead per iteration, and what checkpointing each step costs.

A run of N root iterations, each a one-line cell (``x = i``), the last ``FINAL(x)``,
against a zero-latency stub: (wall time - stub time) / iterations is what the stack
adds per iteration, compared with the exec() floor driven by the same code.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    TimedStub,
    fenced,
    fmt,
    forget_blob,
    haystack_text,
    median,
    scripted,
    stub_settings,
    table,
    tool,
    verdict,
)
from bench.floor import run_floor

TARGET_MS = 5.0


@dataclass(frozen=True)
class Run:
    """One timed run: wall seconds, seconds the stub held requests, iterations done."""

    wall: float
    stub: float
    iterations: int
    cells: float | None = None
    """Sum of the recorded cell seconds (sandbox time), when a checkpoint holds them."""

    @property
    def overhead_ms(self) -> float:
        """Milliseconds per iteration not spent in the (zero-latency) model."""
        return (self.wall - self.stub) / self.iterations * 1000


def _replies(n: int, make: Callable[[str], Any]) -> list[Any]:
    return [make(f"x = {i}") for i in range(n - 1)] + [make("FINAL(x)")]


def _check(answer: Any, iterations: int, n: int) -> None:
    if str(answer) != str(n - 2) or iterations != n:
        raise RuntimeError(f"run went wrong: answer={answer!r} iterations={iterations}")


def floor_run(server: TimedStub, n: int, context: str) -> Run:
    """Time the floor over the scripted replies."""
    server.take_served()
    started = time.perf_counter()
    answer, iterations = run_floor("q", context, base_url=server.base_url)
    wall = time.perf_counter() - started
    _check(answer, iterations, n)
    return Run(wall, server.take_served(), iterations)


def graph_run(
    server: TimedStub, n: int, context: Any, graph: Any = None, checkpointed: bool = False
) -> Run:
    """Time ``answer()`` over the scripted replies (a fresh thread when checkpointed)."""
    from rlm_graph import answer
    from rlm_graph.sandbox import REGISTRY

    config = {"configurable": {"thread_id": uuid.uuid4().hex}} if checkpointed else None
    server.take_served()
    result = answer(
        "q", context, graph=graph, config=config, **stub_settings(server, max_iterations=n + 10)
    )
    stub = server.take_served()
    _check(result.answer, result.iterations, n)
    cells = None
    if checkpointed and graph is not None:  # a thread keeps its sandbox; this one is done
        values = graph.get_state(config).values
        REGISTRY.release(values["sandbox_id"])
        cells = sum(cell["seconds"] for cell in values["cells"])
    return Run(result.seconds, stub, result.iterations, cells)


def _sqlite_graph(path: Path) -> tuple[Any, sqlite3.Connection]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from rlm_graph import build_graph

    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return build_graph(checkpointer=saver), conn


def _sqlite_bytes(conn: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """(file bytes after folding the WAL in, checkpoints stored)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    steps = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    return path.stat().st_size, int(steps)


def run(quick: bool = False) -> str:
    """Measure and return the tables of figure 1."""
    from langgraph.checkpoint.memory import InMemorySaver

    from rlm_graph import build_graph

    n = 10 if quick else 50
    repeats = 1 if quick else 3
    small = haystack_text(1024, seed=1)
    graph_stub = TimedStub(scripted(_replies(n, tool))).start()
    floor_stub = TimedStub(scripted(_replies(n, fenced))).start()
    tmp = tempfile.TemporaryDirectory(prefix="rlm-bench-")
    try:
        memory_graph = build_graph(checkpointer=InMemorySaver())
        variants: dict[str, Callable[[], Run]] = {
            "floor (exec loop)": lambda: floor_run(floor_stub, n, small),
            "graph, no checkpointer": lambda: graph_run(graph_stub, n, small),
            "graph + InMemorySaver": lambda: graph_run(
                graph_stub, n, small, memory_graph, checkpointed=True
            ),
        }
        sqlite_sizes: list[tuple[int, int]] = []

        def sqlite_run(context: str = small) -> Run:
            path = Path(tmp.name) / f"{uuid.uuid4().hex}.sqlite"
            graph, conn = _sqlite_graph(path)
            try:
                result = graph_run(graph_stub, n, context, graph, checkpointed=True)
                sqlite_sizes.append(_sqlite_bytes(conn, path))
            finally:
                conn.close()
            return result

        variants["graph + SqliteSaver"] = sqlite_run
        for measure in variants.values():  # warm-up: clients, factory, imports
            measure()
        sqlite_sizes.clear()
        runs: dict[str, list[Run]] = {name: [] for name in variants}
        for _ in range(repeats):  # interleaved, so drift hits every variant alike
            for name, measure in variants.items():
                runs[name].append(measure())
        big_size = (5 if quick else 50) << 20
        big = haystack_text(big_size, seed=2)
        small_bytes = sqlite_sizes[-1]
        sqlite_sizes.clear()
        big_run = sqlite_run(big)
        big_bytes = sqlite_sizes[-1]
        forget_blob(big)
    finally:
        graph_stub.stop()
        floor_stub.stop()
        tmp.cleanup()

    floor_ms = median([r.overhead_ms for r in runs["floor (exec loop)"]])
    rows = []
    for name, done in runs.items():
        overhead = median([r.overhead_ms for r in done])
        cells = [r.cells / r.iterations * 1000 for r in done if r.cells is not None]
        rows.append(
            [
                name,
                fmt(median([r.wall for r in done])),
                fmt(median([r.stub for r in done]) / n * 1000),
                fmt(overhead),
                fmt(median(cells)) if cells else "n/a",
                fmt(overhead / floor_ms) + "x",
                verdict(overhead, TARGET_MS) if name.startswith("graph") else "",
            ]
        )
    no_saver = median([r.overhead_ms for r in runs["graph, no checkpointer"]])
    step_rows = []
    for label, (size, steps), wall in (
        ("1 KB", small_bytes, median([r.wall for r in runs["graph + SqliteSaver"]])),
        (f"{big_size >> 20} MB", big_bytes, big_run.wall),
    ):
        step_rows.append(
            [label, f"{size:,}", steps, f"{size // steps:,}", f"{size // n:,}", fmt(wall)]
        )
    sqlite_ms = median([r.overhead_ms for r in runs["graph + SqliteSaver"]])
    memory_ms = median([r.overhead_ms for r in runs["graph + InMemorySaver"]])
    note = (
        f"Checkpoint cost per iteration (vs. no checkpointer): InMemorySaver "
        f"{fmt(memory_ms - no_saver)} ms, SqliteSaver {fmt(sqlite_ms - no_saver)} ms. "
        f"Median of {repeats} run(s) of N={n} iterations; context {len(small):,} characters. "
        "Cells ms/iter is the sandbox time recorded in the cells (checkpointed runs only)."
    )
    return "\n".join(
        [
            table(
                f"1. Overhead per iteration (N={n}, zero-latency stub, target <= {TARGET_MS:g} ms)",
                [
                    "variant",
                    "wall s",
                    "stub ms/iter",
                    "overhead ms/iter",
                    "of which cells ms/iter",
                    "vs floor",
                    "target",
                ],
                rows,
            ),
            note,
            "",
            table(
                "1b. SqliteSaver checkpoint size (one run each)",
                ["context", "db bytes", "checkpoints", "bytes/checkpoint", "bytes/iter", "wall s"],
                step_rows,
            ),
        ]
    )
