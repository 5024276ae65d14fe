"""Side by side: rlm-graph, the exec() floor, rlms and dspy on the same cells, one run.

Every framework gets the same workload through the same stub (see ``bench.peers``),
interleaved, so drift on a shared machine hits all of them alike. Figures:

- **overhead**: a run of N one-line cells at zero model latency, and a run of one.
  Per-iteration overhead is the slope ``(wall(N) - wall(1)) / (N - 1)`` (stub time
  taken out); the fixed cost of a call is ``wall(1)``. rlms builds a client, a socket
  server and a REPL per call, dspy a worker process: the slope keeps that apart.
- **batch**: one cell sends 200 sub-calls that each wait 0.3 s, at each framework's
  concurrency (rlm-graph and the floor 128; rlms is fixed at 16, dspy at 8). Wall time
  of the sub-calls (first request to last reply) against ``ceil(200 / c) * 0.3 s``,
  after a warm-up run on the same server (as in a long-lived process).
- **needle**: S-NIAH over 5 MB, one regex cell, the whole call timed in-process.
- **oolong**: 10,000 records classified by a batch over 100 chunks of 100 records
  (0.05 s per sub-call), then counted; the answer is checked against the truth.
- **depth 2**: the root hands each of 4 parts to a sub-RLM, which runs 3 cells, one a
  plain sub-call.
- **tokens**: prompt tokens the root model receives per iteration over 20 cells that
  each print 500 characters (history growth).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import plot
from bench.common import TimedStub, fmt, forget_blob, median, table
from bench.needle import QUESTION, needle_text, search_code
from bench.peers import Job, available, is_root_model, prepare, prompt_tokens, responder
from bench.peers import run as run_peer
from rlm_graph.offline.stub_server import StubReply, is_root_request

PROMPTS = 200
LATENCY = 0.3
LABELS = ("positive", "negative", "neutral")
RECORDS = 10_000
CHUNK = 100
OOLONG_LATENCY = 0.05
CONCURRENCY = {"floor": 128, "graph": 128, "rlms": 16, "dspy": 8}

Measured = dict[str, float]


def _timed(peer: str, job: Job, server: TimedStub, expected: Any) -> tuple[float, float]:
    """(wall seconds, seconds the stub held requests) of one checked run."""
    server.take_served()
    started = time.perf_counter()
    value = run_peer(peer, job, server)
    wall = time.perf_counter() - started
    if str(value) != str(expected):
        raise RuntimeError(f"{peer} answered {str(value)[:200]!r}, expected {expected!r}")
    return wall, server.take_served()


def overhead(peers: Sequence[str], n: int, repeats: int) -> tuple[Measured, Measured]:
    """(ms per iteration, fixed seconds per call) for each framework."""
    cells = [f"x = {i}" for i in range(n - 1)] + ["DONE(x)"]
    per_iter: dict[str, list[float]] = {p: [] for p in peers}
    fixed: dict[str, list[float]] = {p: [] for p in peers}
    servers = {p: TimedStub(responder(p, cells)).start() for p in peers}
    single = {p: TimedStub(responder(p, ["x = 0\nDONE(x)"])).start() for p in peers}
    try:
        for peer in peers:  # warm-up
            _timed(peer, Job("q", "ctx"), servers[peer], n - 2)
        for _ in range(repeats):
            for peer in peers:
                wall, stub = _timed(peer, Job("q", "ctx"), servers[peer], n - 2)
                one, one_stub = _timed(peer, Job("q", "ctx", max_iterations=3), single[peer], "0")
                per_iter[peer].append(((wall - stub) - (one - one_stub)) / (n - 1) * 1000)
                fixed[peer].append(one - one_stub)
    finally:
        for server in (*servers.values(), *single.values()):
            server.stop()
    return {p: median(v) for p, v in per_iter.items()}, {p: median(v) for p, v in fixed.items()}


def batch(peers: Sequence[str], repeats: int) -> Measured:
    """Sub-call wall seconds (first request to last reply) for each framework.

    One server per framework for all runs, after a warm-up run, as a long-lived
    process would have it: clients built, connection pools and thread pools filled.
    """
    cells = [
        f"r = BATCH([f'item {{i}}: say ok' for i in range({PROMPTS})])",
        "DONE(len([x for x in r if x == 'ok']))",
    ]
    spans: dict[str, list[float]] = {p: [] for p in peers}
    servers = {
        p: TimedStub(
            responder(p, cells, sub=lambda _: StubReply(content="ok", delay=LATENCY))
        ).start()
        for p in peers
    }
    try:
        for attempt in range(repeats + 1):
            for peer in peers:
                server = servers[peer]
                server.reset_log()
                _timed(peer, Job("q", "ctx", concurrency=CONCURRENCY[peer]), server, PROMPTS)
                subs = [r.timestamp for r in server.requests if not is_root_request(r.body)]
                if attempt:
                    spans[peer].append(max(subs) - min(subs) + LATENCY)
    finally:
        for server in servers.values():
            server.stop()
    return {p: median(v) for p, v in spans.items()}


def needle(peers: Sequence[str], repeats: int, size: int) -> Measured:
    """Seconds for a whole call that finds one needle in ``size`` bytes with one regex."""
    seconds: dict[str, list[float]] = {p: [] for p in peers}
    for attempt in range(repeats + 1):  # the first round warms up
        text, key, value = needle_text(2000 + attempt, size)
        for peer in peers:
            server = TimedStub(responder(peer, [f"{search_code(key)}\nDONE(found)"])).start()
            try:
                wall, _ = _timed(peer, Job(QUESTION.format(key=key), text), server, value)
            finally:
                server.stop()
            if attempt:
                seconds[peer].append(wall)
        forget_blob(text)
    return {p: median(v) for p, v in seconds.items()}


def oolong_context(seed: int = 7) -> tuple[str, dict[str, int]]:
    """10,000 seeded records, each with a hidden label the sub-model can read off."""
    rng = random.Random(seed)
    lines, truth = [], dict.fromkeys(LABELS, 0)
    for index in range(RECORDS):
        label = rng.choice(LABELS)
        truth[label] += 1
        lines.append(f"{index:05d} | user{rng.randrange(500)} | a {label} remark on item {index}")
    return "\n".join(lines), truth


def _classify(prompt: str) -> StubReply:
    """The sub-model: count the labels in one chunk (JSON), as a classifier would."""
    counts = {label: prompt.count(f" {label} remark") for label in LABELS}
    return StubReply(content=json.dumps(counts), delay=OOLONG_LATENCY)


def oolong(peers: Sequence[str], repeats: int) -> Measured:
    """Seconds to classify 10,000 records in 100 batched chunks and count them."""
    context, truth = oolong_context()
    cells = [
        f"rows = context.splitlines()\nchunks = ['\\n'.join(rows[i:i + {CHUNK}]) "
        f"for i in range(0, len(rows), {CHUNK})]\nprint(len(chunks))",
        "import json\nparts = BATCH(['Label each record: ' + c for c in chunks])\n"
        "total = {}\nfor p in parts:\n    for k, v in json.loads(p).items():\n"
        "        total[k] = total.get(k, 0) + v",
        "DONE(json.dumps(total, sort_keys=True))",
    ]
    expected = json.dumps(truth, sort_keys=True)
    return _repeat(peers, repeats, cells, Job("Count the labels", context), expected, _classify)


def depth_two(peers: Sequence[str], repeats: int) -> Measured:
    """Seconds for a root that hands 4 parts to sub-RLMs of 3 cells each."""
    words = ("lemon", "apple", "cherry", "plum")
    context = "\n\n".join(f"part {i}: xx KEY {w} yy" for i, w in enumerate(words))
    root = [
        "parts = context.split('\\n\\n')",
        "r = [RECURSE(p) for p in parts]",
        "DONE(','.join(r))",
    ]
    child = [
        "import re\nw = re.search(r'KEY (\\w+)', context).group(1)",
        "s = QUERY('leaf ' + w)",
        "DONE(s)",
    ]
    expected = ",".join(f"plain[leaf {w}]" for w in words)
    job = Job("Collect the keys", context, max_depth=2)
    return _repeat(peers, repeats, root, job, expected, lambda p: f"plain[{p}]", child)


def _repeat(
    peers: Sequence[str],
    repeats: int,
    cells: Sequence[str],
    job: Job,
    expected: Any,
    sub: Callable[[str], StubReply | str],
    child: Sequence[str] = (),
) -> Measured:
    """Median wall seconds of ``repeats`` checked runs per framework, after a warm-up."""
    seconds: dict[str, list[float]] = {p: [] for p in peers}
    servers = {p: TimedStub(responder(p, cells, sub, child)).start() for p in peers}
    try:
        for attempt in range(repeats + 1):
            for peer in peers:
                wall, _ = _timed(peer, job, servers[peer], expected)
                if attempt:
                    seconds[peer].append(wall)
    finally:
        for server in servers.values():
            server.stop()
    return {p: median(v) for p, v in seconds.items()}


def tokens(peers: Sequence[str], n: int) -> dict[str, list[int]]:
    """Root-model prompt tokens per iteration over ``n`` cells that print 500 characters."""
    cells = [f"x = {i}\nprint('abcd ' * 100)" for i in range(n - 1)] + ["DONE(x)"]
    per_iteration = {}
    for peer in peers:
        server = TimedStub(responder(peer, cells)).start()
        try:
            _timed(peer, Job("q", "ctx"), server, n - 2)
            per_iteration[peer] = [
                prompt_tokens(r.body) for r in server.requests if is_root_model(r.body)
            ]
        finally:
            server.stop()
    return per_iteration


def run(quick: bool = False) -> str:
    """Measure every framework installed and return the side-by-side tables."""
    # rlms runs each batch under its own asyncio.run(); its clients' pools then close
    # on a finished loop and asyncio logs "Event loop is closed" tracebacks: noise here.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    peers = available()
    for peer in peers:
        prepare(peer)
    repeats = 1 if quick else 3
    n = 10 if quick else 50
    per_iter, fixed = overhead(peers, n, repeats)
    batch_wall = batch(peers, 1 if quick else 2)
    needle_s = needle(peers, repeats, (1 if quick else 5) << 20)
    oolong_s = oolong(peers, repeats)
    depth_s = depth_two(peers, repeats)
    token_runs = tokens(peers, 6 if quick else 20)
    others = [p for p in peers if p != "graph"]

    def row(label: str, values: Measured, unit: str = "") -> list[str]:
        ours = values["graph"]
        return [
            label,
            *(fmt(values[p]) + unit for p in peers),
            *(fmt(ours / values[p]) + "x" if values[p] else "n/a" for p in others),
        ]

    ideal = {p: math.ceil(PROMPTS / CONCURRENCY[p]) * LATENCY for p in peers}
    batch_ideal = {p: batch_wall[p] / ideal[p] for p in peers}
    drawn = None if quick else plot.save(per_iter, batch_wall, ideal)
    last = {p: float(v[-1]) for p, v in token_runs.items()}
    growth = {p: (v[-1] - v[0]) / max(1, len(v) - 1) for p, v in token_runs.items()}
    rows = [
        row(f"overhead per iteration, ms (N={n}, slope)", per_iter),
        row("fixed cost per call, s (N=1)", fixed),
        row(f"{PROMPTS} sub-calls x {LATENCY} s, wall s", batch_wall),
        row("  ... against ideal ceil(200/c) x 0.3 s", batch_ideal, "x"),
        row(f"needle in {(1 if quick else 5)} MB, whole call s", needle_s),
        row(f"OOLONG {RECORDS:,} records / {RECORDS // CHUNK} chunks, s", oolong_s),
        row("depth 2: 4 sub-RLMs x 3 cells, s", depth_s),
        row(f"root prompt tokens at iteration {len(token_runs['graph'])}", last),
        row("root prompt tokens added per iteration", growth),
    ]
    token_rows = [
        [i + 1, *(token_runs[p][i] for p in peers)]
        for i in range(len(token_runs["graph"]))
        if i in (0, 1, 4, 9) or i == len(token_runs["graph"]) - 1
    ]
    concurrency = ", ".join(f"{p} {CONCURRENCY[p]}" for p in peers)
    return "\n".join(
        [
            table(
                f"5. Side by side, same stub, same cells (median of {repeats}; lower is better; "
                "ratio = rlm-graph / peer)",
                ["figure", *peers, *(f"graph/{p}" for p in others)],
                rows,
            ),
            f"Batch concurrency: {concurrency}. OOLONG sub-calls wait {OOLONG_LATENCY} s each."
            + (f" Plot: {drawn.name}." if drawn else ""),
            "",
            table(
                "5b. Root-model prompt tokens per iteration (chars / 4, tool schema included)",
                ["iteration", *peers],
                token_rows,
            ),
        ]
    )
