"""Figure 6: what it costs to rebuild a thread's sandbox from its journaled cells.

A thread on a ``SqliteSaver`` file first runs N cells (every fifth one a sub-call, so
replay has journal entries to serve). A later question on the same thread then runs
one cell whose first statement is a sub-call; its arrival at the stub marks the cell
running. Timed twice: with the thread's sandbox still live, and after the registry
dropped it (as a new process or an evicted sandbox would find it), so the sandbox
is rebuilt by replaying the N cells. The difference is the resume cost. The replay
must not call the model again; the stub's log checks that.

rlms, dspy and the floor keep no checkpoints and cannot resume a run, so this figure
has no peer column.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import fmt, median, stub_settings, table
from rlm_graph.offline.stub_server import (
    StubReply,
    StubServer,
    is_root_request,
    last_user_text,
    replies_so_far,
)
from rlm_graph.offline.stub_server import tool_reply as tool

MARK = "resume mark"


def _cells(n: int) -> list[str]:
    """N cells, every fifth a sub-call; n is a multiple of 5, so the last is one."""
    return [
        f"v{i} = await llm_query('p{i}')" if i % 5 == 4 else f"v{i} = {i} * 2" for i in range(n)
    ]


def _respond(n: int) -> Any:
    cells = [tool(c) for c in _cells(n)] + [tool("FINAL(v0)")]

    def respond(body: dict[str, Any]) -> StubReply | str:
        if not is_root_request(body):
            return f"answer to {last_user_text(body)}"
        asked = re.search(r"follow-up \w+ \d+", last_user_text(body))
        if asked:  # a later question: one cell, marked by a sub-call new to the sandbox
            return tool(f"r = await llm_query('{MARK} {asked.group()}')\nFINAL(v{n - 1})")
        return cells[min(replies_so_far(body), len(cells) - 1)]

    return respond


def measure(n: int, repeats: int, folder: Path) -> dict[str, float]:
    """Seconds to the first cell of a follow-up question, live and after a rebuild."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from rlm_graph import answer, build_graph
    from rlm_graph.repl.registry import REGISTRY

    conn = sqlite3.connect(folder / f"resume-{n}.sqlite", check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    graph = build_graph(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}}
    server = StubServer(_respond(n)).start()
    settings = stub_settings(server, max_iterations=n + 5)
    timings: dict[str, list[float]] = {"live": [], "rebuilt": []}
    try:
        first = answer("first question", "resume context", graph=graph, config=config, **settings)
        if first.iterations != n + 1 or first.answer != 0:
            raise RuntimeError(f"resume setup went wrong: {first}")
        sandbox_id = graph.get_state(config).values["sandbox_id"]
        for attempt in range(repeats):
            for mode in ("rebuilt", "live"):
                if mode == "rebuilt":
                    REGISTRY.release(sandbox_id)
                server.reset_log()
                started = time.monotonic()
                result = answer(
                    f"follow-up {mode} {attempt}", graph=graph, config=config, **settings
                )
                subs = [last_user_text(r.body) for r in server.requests]
                marks = [r.timestamp for r in server.requests if MARK in last_user_text(r.body)]
                if result.answer != f"answer to p{n - 1}" or not marks:
                    raise RuntimeError(f"follow-up went wrong: {result}")
                if any(re.fullmatch(r"p\d+", prompt) for prompt in subs):
                    raise RuntimeError("replay called the model again")
                timings[mode].append(marks[0] - started)
    finally:
        REGISTRY.release(sandbox_id)
        server.stop()
        conn.close()
    return {mode: median(values) for mode, values in timings.items()}


def run(quick: bool = False) -> str:
    """Measure and return the table of figure 6."""
    sizes = (10,) if quick else (10, 50)
    repeats = 1 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp:
        for n in sizes:
            got = measure(n, repeats, Path(tmp))
            cost = got["rebuilt"] - got["live"]
            rows.append([n, fmt(got["live"]), fmt(got["rebuilt"]), fmt(cost), fmt(cost / n * 1000)])
    return table(
        f"6. Resume: first cell of a follow-up question, sandbox live vs rebuilt by replay "
        f"(SqliteSaver file, median of {repeats})",
        ["journaled cells", "live s", "rebuilt s", "resume cost s", "ms per cell"],
        rows,
    )
