"""Scale: a fan-out of N sub-RLMs, in this process or on a two-node Ray cluster here.

Each sub-RLM runs three cells and makes one plain sub-call; every model call takes
0.2 s at the stub, so a sub-RLM's model latency is 0.8 s (three steps, one leaf). Both
executors run 16 sub-RLMs at once: ``max_concurrency=16`` locally, 2 nodes x 8
``rlm_sandbox`` slots on Ray. On a 2-core machine the point is the overhead per
sub-RLM and where the memory sits, not a speed-up: both nodes share the same 2 cores.

Columns: wall time of the whole run and per sub-RLM (with 16 at once on 2 cores the
machine is CPU-bound, so wall / N is what one more sub-RLM costs); peak resident memory
of the driver (the root run, and locally its sandboxes) and of each Ray node (its raylet,
workers and their sandboxes), sampled every 0.2 s. Each executor is warmed up first
with one fan-out of 16 (the sandbox runtime; on Ray, a worker per slot).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from bench.common import fmt, is_root_request, replies_so_far, stub_settings, table
from rlm_graph.graph.prompts import CHILD_QUESTION
from rlm_graph.offline.local_cluster import LocalCluster, rss_bytes
from rlm_graph.offline.stub_server import StubReply, StubServer
from rlm_graph.offline.stub_server import tool_reply as tool
from rlm_graph.subcalls.cluster import ray_module

LATENCY = 0.2
CONCURRENCY = 16
CHILD = [
    tool("words = context.split()"),
    tool("leaf = await llm_query('leaf ' + context)"),
    tool("FINAL(f'{len(words)}:{leaf}')"),
]


def root_script(n: int) -> list[StubReply]:
    """The root: one batch of ``n`` sub-RLMs, then its answer."""
    return [
        tool(f"r = await llm_batch([f'part {{i}}' for i in range({n})])"),
        tool("FINAL(len(r))"),
    ]


def responder(n: int) -> Callable[[dict[str, Any]], StubReply | str]:
    root = root_script(n)

    def respond(body: dict[str, Any]) -> StubReply | str:
        if not is_root_request(body):
            return StubReply(content="ok", delay=LATENCY)
        child = CHILD_QUESTION in str(body["messages"])
        script = CHILD if child else root
        return replace(script[min(replies_so_far(body), len(script) - 1)], delay=LATENCY)

    return respond


Sample = Callable[[], dict[str, int]]


def local_memory() -> dict[str, int]:
    """This process and its sandboxes."""
    return {"driver": rss_bytes(os.getpid())}


def cluster_memory(cluster: LocalCluster) -> Sample:
    """Each node's processes, and the driver's own (its tree less the nodes it started)."""

    def sample() -> dict[str, int]:
        nodes = {f"node {i}": rss_bytes(node.pid) for i, node in enumerate(cluster.nodes)}
        return {"driver": rss_bytes(os.getpid()) - sum(nodes.values()), **nodes}

    return sample


@contextmanager
def peaks(sample: Sample) -> Iterator[dict[str, int]]:
    """The peak of each sampled memory figure while the block runs."""
    peak: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            for name, value in sample().items():
                peak[name] = max(peak.get(name, 0), value)

    sampler = threading.Thread(target=watch, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def one_run(server: StubServer, n: int, sample: Sample, **settings: Any) -> list[Any]:
    """Run the fan-out once: a table row without its first column."""
    from rlm_graph import answer

    server.responder = responder(n)
    with peaks(sample) as peak:
        started = time.perf_counter()
        result = answer("q", "fan-out", **stub_settings(server, max_depth=2, **settings))
        wall = time.perf_counter() - started
    if result.answer != n:
        raise RuntimeError(f"fan-out went wrong: {result.answer!r} {result.error}")
    memory = [f"{peak[name] / 2**20:,.0f}" for name in sorted(peak)]
    return [n, fmt(wall), fmt(wall / n), *memory]


def run(quick: bool = False) -> str:
    """Measure and return the scale table."""
    ray = ray_module()
    sizes = (8, 32) if quick else (8, 32, 128)
    server = StubServer(responder(1)).start()
    try:
        one_run(server, CONCURRENCY, local_memory)  # warm-up: the sandbox runtime
        rows = [["local", *one_run(server, n, local_memory), "-", "-"] for n in sizes]
        with LocalCluster(nodes=2, cpus=CONCURRENCY // 2, slots=CONCURRENCY // 2) as cluster:
            os.environ["RLM_RAY_ADDRESS"] = cluster.address
            ray.init(address=cluster.address, log_to_driver=False)
            on_ray = {"sample": cluster_memory(cluster), "sub_rlm_executor": "ray"}
            one_run(server, CONCURRENCY, **on_ray)  # warm-up: every slot's worker starts
            rows += [["ray", *one_run(server, n, **on_ray)] for n in sizes]
            ray.shutdown()
    finally:
        server.stop()
    headers = ["executor", "N", "wall s", "wall s / N", "driver MB", "node 0 MB", "node 1 MB"]
    title = f"Scale: N sub-RLMs (3 cells + 1 plain sub-call each, {LATENCY} s per model call)"
    return table(title, headers, rows)
