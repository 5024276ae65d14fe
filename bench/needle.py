"""Figure 4: an S-NIAH-style needle in a 5 MB haystack, found by one regex cell.

The whole ``answer()`` is timed in-process (store, sandbox, one root call, the cell,
FINAL_VAR), against the floor doing the same over the same text. Each run gets a
fresh haystack, so every run pays for storing a context it has not seen before.
A second table shows what the per-cell state snapshot costs once the code keeps a
large variable (``lines = context.splitlines()``), the usual first step of an RLM.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from bench.common import (
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
from rlm_graph.offline.stub_server import StubServer
from rlm_graph.offline.stub_server import fenced_reply as fenced
from rlm_graph.offline.stub_server import tool_reply as tool

SIZE = 5 << 20
TARGET_SECONDS = 0.25
NEEDLE = "One of the special magic numbers for {key} is: {value}."
QUESTION = "What is the special magic number for {key} mentioned in the provided text?"


def needle_text(seed: int, size: int = SIZE) -> tuple[str, str, str]:
    """(haystack with one needle at a seeded line boundary, key, value)."""
    rng = random.Random(seed)
    key = f"{rng.choice(['quiet', 'amber', 'brisk'])}-{rng.choice(['otter', 'comet', 'fern'])}"
    value = str(rng.randrange(1_000_000, 9_999_999))
    text = haystack_text(size, seed)
    cut = text.index("\n", rng.randrange(len(text) // 10, len(text) * 9 // 10)) + 1
    return text[:cut] + NEEDLE.format(key=key, value=value) + "\n" + text[cut:], key, value


def search_code(key: str) -> str:
    """The cell a model would write: one regex over the whole context."""
    pattern = NEEDLE.format(key=key, value="(\\d+)").replace(".", "\\.")
    return f"import re\nfound = re.search({pattern!r}, context).group(1)"


def timed_pair(seed: int, warm: bool = False) -> tuple[float, float]:
    """Seconds for (floor, graph) on one fresh haystack."""
    from rlm_graph import answer

    text, key, value = needle_text(seed)
    code = search_code(key)
    question = QUESTION.format(key=key)
    floor_stub = StubServer(scripted([fenced(code, "FINAL_VAR(found)")])).start()
    graph_stub = StubServer(scripted([tool(code, "FINAL_VAR(found)")])).start()
    try:
        started = time.perf_counter()
        floor_answer, _ = run_floor(question, text, base_url=floor_stub.base_url)
        floor_s = time.perf_counter() - started
        started = time.perf_counter()
        result = answer(question, text, **stub_settings(graph_stub, max_iterations=3))
        graph_s = time.perf_counter() - started
    finally:
        floor_stub.stop()
        graph_stub.stop()
        forget_blob(text)
    if floor_answer != value or result.answer != value or result.iterations != 1:
        raise RuntimeError(f"needle missed: {floor_answer!r} {result.answer!r} {result.error}")
    return floor_s, graph_s


def state_cost(size: int) -> list[list[Any]]:
    """Per-cell seconds once ``lines`` (one str per line) lives in the REPL's globals."""
    from langgraph.checkpoint.memory import InMemorySaver

    from rlm_graph import answer, build_graph
    from rlm_graph.repl.registry import REGISTRY

    text, _key, value = needle_text(99, size)
    cells = [
        "ready = True",
        "lines = context.splitlines()\nprint(len(lines))",
        "hits = [line for line in lines if 'magic number' in line]\nprint(len(hits))",
        "FINAL(hits[0].split(': ')[1].rstrip('.'))",
    ]
    graph = build_graph(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}}
    server = StubServer(scripted([tool(c) for c in cells])).start()
    try:
        result = answer("q", text, graph=graph, config=config, **stub_settings(server))
        values = graph.get_state(config).values
        REGISTRY.release(values["sandbox_id"])
    finally:
        server.stop()
        forget_blob(text)
    if result.answer != value:
        raise RuntimeError(f"lines variant missed: {result.answer!r} {result.error}")
    lines = text.count("\n")
    return [
        [repr(code.splitlines()[0])[:48], fmt(cell["seconds"])]
        for code, cell in zip(cells, values["cells"], strict=True)
    ] + [["(lines in globals)", f"{lines:,}"]]


def run(quick: bool = False) -> str:
    """Measure and return the tables of figure 4."""
    repeats = 1 if quick else 5
    timed_pair(seed=1000)  # warm-up: clients, sandbox factory
    runs = [timed_pair(seed=1001 + i) for i in range(repeats)]
    floor_s = median([r[0] for r in runs])
    graph_s = median([r[1] for r in runs])
    rows = [
        ["floor (exec loop)", fmt(floor_s), "1.00x", ""],
        [
            "graph answer()",
            fmt(graph_s),
            fmt(graph_s / floor_s) + "x",
            verdict(graph_s, TARGET_SECONDS),
        ],
    ]
    state_size = (1 << 20) if quick else SIZE
    return "\n".join(
        [
            table(
                f"4. Needle in {SIZE >> 20} MB, one regex cell + FINAL_VAR "
                f"(median of {repeats}; target <= {TARGET_SECONDS} s)",
                ["variant", "seconds", "vs floor", "target"],
                rows,
            ),
            table(
                f"4b. Per-cell seconds with a large variable in the REPL "
                f"({state_size >> 20} MB context, one run)",
                ["cell", "cell seconds"],
                state_cost(state_size),
            ),
        ]
    )
