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

from langchain_core.runnables import RunnableConfig

from bench.common import (
    ClientTimer,
    TimedStub,
    fmt,
    forget_blob,
    haystack_text,
    median,
    scripted,
    stub_settings,
    table,
    verdict,
)
from bench.floor import run_floor
from rlm_graph.offline.stub_server import fenced_reply as fenced
from rlm_graph.offline.stub_server import tool_reply as tool

TARGET_MS = 5.0
CHECKPOINT_TARGET = 64 * 1024  # bytes per checkpoint
PRINTED = 20_000  # characters printed per cell in the "real output" checkpoint row


@dataclass(frozen=True)
class Run:
    """One timed run: wall seconds, seconds the stub held requests, iterations done."""

    wall: float
    stub: float
    iterations: int
    client: float
    """Seconds inside ``ChatOpenAI.invoke``, the stub's time included."""
    cells: float | None = None
    """Sum of the recorded cell seconds (sandbox time), when a checkpoint holds them."""

    def per_iter_ms(self, seconds: float) -> float:
        """``seconds`` of the run as milliseconds per iteration."""
        return seconds / self.iterations * 1000

    @property
    def overhead_ms(self) -> float:
        """Milliseconds per iteration not spent in the (zero-latency) model."""
        return self.per_iter_ms(self.wall - self.stub)

    @property
    def client_ms(self) -> float:
        """The model client's own milliseconds per iteration (stub time taken out)."""
        return self.per_iter_ms(self.client - self.stub)


def _replies(n: int, make: Callable[[str], Any], printed: int = 0) -> list[Any]:
    """``x = i`` cells (optionally printing ``printed`` characters each), then FINAL(x)."""
    extra = f"\nprint('.' * {printed})" if printed else ""
    return [make(f"x = {i}{extra}") for i in range(n - 1)] + [make("FINAL(x)")]


def _check(answer: Any, iterations: int, n: int) -> None:
    if str(answer) != str(n - 2) or iterations != n:
        raise RuntimeError(f"run went wrong: answer={answer!r} iterations={iterations}")


def floor_run(server: TimedStub, n: int, context: str) -> Run:
    """Time the floor over the scripted replies."""
    server.take_served()
    with ClientTimer() as client:
        started = time.perf_counter()
        answer, iterations = run_floor("q", context, base_url=server.base_url)
        wall = time.perf_counter() - started
    _check(answer, iterations, n)
    return Run(wall, server.take_served(), iterations, client.seconds)


def graph_run(
    server: TimedStub, n: int, context: Any, graph: Any = None, checkpointed: bool = False
) -> Run:
    """Time ``answer()`` over the scripted replies (a fresh thread when checkpointed)."""
    from rlm_graph import answer
    from rlm_graph.repl.registry import REGISTRY

    config: RunnableConfig | None = (
        {"configurable": {"thread_id": uuid.uuid4().hex}} if checkpointed else None
    )
    server.take_served()
    with ClientTimer() as client:
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
    return Run(result.seconds, stub, result.iterations, client.seconds, cells)


def _sqlite_graph(path: Path) -> tuple[Any, sqlite3.Connection]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from rlm_graph import build_graph

    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return build_graph(checkpointer=saver), conn


def _sqlite_bytes(conn: sqlite3.Connection, path: Path) -> tuple[int, int, int]:
    """(file bytes after folding the WAL in, checkpoints stored, largest checkpoint)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    steps, largest = conn.execute(
        "SELECT COUNT(*), MAX(LENGTH(checkpoint)) FROM checkpoints"
    ).fetchone()
    return path.stat().st_size, int(steps), int(largest)


def run(quick: bool = False) -> str:
    """Measure and return the tables of figure 1."""
    from langgraph.checkpoint.memory import InMemorySaver

    from rlm_graph import build_graph

    n = 10 if quick else 50
    repeats = 1 if quick else 3
    small = haystack_text(1024, seed=1)
    graph_stub = TimedStub(scripted(_replies(n, tool)))
    floor_stub = TimedStub(scripted(_replies(n, fenced)))
    print_stub = TimedStub(scripted(_replies(n, tool, printed=PRINTED)))
    graph_stub.start()
    floor_stub.start()
    print_stub.start()
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
        sqlite_sizes: list[tuple[int, int, int]] = []

        def sqlite_run(context: str = small, stub: TimedStub = graph_stub) -> Run:
            path = Path(tmp.name) / f"{uuid.uuid4().hex}.sqlite"
            graph, conn = _sqlite_graph(path)
            try:
                result = graph_run(stub, n, context, graph, checkpointed=True)
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
        big_size = (5 if quick else 100) << 20
        big = haystack_text(big_size, seed=2)
        small_bytes = sqlite_sizes[-1]
        sqlite_sizes.clear()
        big_run = sqlite_run(big)
        big_bytes = sqlite_sizes[-1]
        forget_blob(big)
        print_run = sqlite_run(small, print_stub)
        print_bytes = sqlite_sizes[-1]
    finally:
        graph_stub.stop()
        floor_stub.stop()
        print_stub.stop()
        tmp.cleanup()

    floor_ms = median([r.overhead_ms for r in runs["floor (exec loop)"]])
    rows = []
    for name, done in runs.items():
        overhead = median([r.overhead_ms for r in done])
        cells = [r.per_iter_ms(r.cells) for r in done if r.cells is not None]
        client = median([r.client_ms for r in done])
        rows.append(
            [
                name,
                fmt(median([r.wall for r in done])),
                fmt(median([r.stub for r in done]) / n * 1000),
                fmt(overhead),
                fmt(client),
                fmt(median([r.overhead_ms - r.client_ms for r in done])),
                fmt(median(cells)) if cells else "n/a",
                fmt(overhead / floor_ms) + "x",
                verdict(overhead, TARGET_MS) if name.startswith("graph") else "",
            ]
        )
    no_saver = median([r.overhead_ms for r in runs["graph, no checkpointer"]])
    step_rows = []
    for label, (size, steps, largest), wall in (
        ("1 KB", small_bytes, median([r.wall for r in runs["graph + SqliteSaver"]])),
        (f"{big_size >> 20} MB", big_bytes, big_run.wall),
        (f"1 KB, cells print {PRINTED:,} chars", print_bytes, print_run.wall),
    ):
        step_rows.append(
            [
                label,
                f"{size:,}",
                steps,
                f"{size // steps:,}",
                f"{size // n:,}",
                f"{largest:,}",
                fmt(wall),
                verdict(size / steps, CHECKPOINT_TARGET),
            ]
        )
    sqlite_ms = median([r.overhead_ms for r in runs["graph + SqliteSaver"]])
    memory_ms = median([r.overhead_ms for r in runs["graph + InMemorySaver"]])
    note = (
        f"Checkpoint cost per iteration (vs. no checkpointer): InMemorySaver "
        f"{fmt(memory_ms - no_saver)} ms, SqliteSaver {fmt(sqlite_ms - no_saver)} ms. "
        f"Median of {repeats} run(s) of N={n} iterations; context {len(small):,} characters. "
        "Model client = time in ChatOpenAI.invoke minus stub time; outside client = the rest "
        "of the overhead (graph, prompts, sandbox); sandbox cells = cell seconds recorded in "
        "state (checkpointed runs only), part of outside client."
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
                    "model client ms/iter",
                    "outside client ms/iter",
                    "sandbox cells ms/iter",
                    "vs floor",
                    "target",
                ],
                rows,
            ),
            note,
            "",
            table(
                f"1b. SqliteSaver checkpoint size (one run each of N={n}; target <= "
                f"{CHECKPOINT_TARGET // 1024} KiB per checkpoint, whatever the context size)",
                [
                    "context",
                    "db bytes",
                    "checkpoints",
                    "bytes/checkpoint",
                    "bytes/iter",
                    "largest checkpoint",
                    "wall s",
                    "target",
                ],
                step_rows,
            ),
        ]
    )
