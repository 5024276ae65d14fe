"""Figure 7: a cold ``rlm run``, the way a script or a one-shot command uses it.

One fresh process per run, timed whole (interpreter start, imports, sandbox start, the
call, exit) with the peak PSS of its process tree, against the same scripted stub:

- *python*: the floor, an interpreter that reads the context file and prints;
- *langgraph*: the floor of a framework on LangGraph and the OpenAI client: importing
  ``langgraph.graph`` and ``langchain_openai`` and building a ``ChatOpenAI``;
- *graph*: the real ``rlm run`` console script, given the context file's path;
- *graph-str*: ``rlm_graph.answer`` given the file's text as a string, as an embedder
  calls it (``python -m bench.calls graph``);
- *rlms*, *dspy*: ``python -m bench.calls``, each importing only its own framework, and
  given the text as a string (neither takes a path).

Workloads: one trivial cell on a tiny file, one regex cell that finds the needle in
5 MB, and a first (and only) cell on 100 MB. Peers run interleaved, so load on the
shared machine hits them alike; the table's title gives the load average around the run.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT_MODEL, SUB_MODEL, fmt, load, median, table, verdict
from bench.first_cell import ROOT, TreePeak
from bench.peers import ROOT_MARK, available, responder
from rlm_graph.offline.stub_server import StubServer

MB = 1 << 20
NEEDLE = "7319"
# (name, context size in bytes, the one cell, target seconds for rlm-graph: issue 15)
WORKLOADS = (
    ("1 trivial cell", 100, 'DONE("42")', 1.1),
    (
        "needle in 5 MB",
        5 * MB,
        r"import re" "\n" r"DONE(re.search(r'MAGIC=(\d+)', context).group(1))",
        1.2,
    ),
    ("first cell on 100 MB", 100 * MB, "DONE(len(context))", 1.5),
)
TARGET_MB = 90.0  # peak RSS of the rlm-graph host process (its sandbox apart), trivial cell
COLD_PEERS = ("python", "langgraph", "graph", "graph-str", "rlms", "dspy")
GRAPHS = ("graph", "graph-str")  # the targets hold for a path and for a string
FLOOR = "import sys; open(sys.argv[1], encoding='utf-8').read(); print(42)"
# What any framework on LangGraph and the OpenAI client pays before its first step.
LANGGRAPH_FLOOR = (
    "import langgraph.graph, langchain_openai; "
    "langchain_openai.ChatOpenAI(model='x', api_key='x'); print(42)"
)


def write_context(path: Path, size: int) -> Path:
    """``size`` bytes of log lines with ``MAGIC=<NEEDLE>`` in the middle."""
    line = "2026-01-01 INFO worker heartbeat ok\n"
    half = "".join([line] * (size // 2 // len(line)))
    path.write_text(f"{half}MAGIC={NEEDLE}\n{half}", encoding="utf-8")
    return path


def command(peer: str, base_url: str, context: Path) -> list[str]:
    """The whole process one cold run of ``peer`` is."""
    question = f"{ROOT_MARK} what is the magic number?"
    if peer == "python":
        return [sys.executable, "-c", FLOOR, str(context)]
    if peer == "langgraph":
        return [sys.executable, "-c", LANGGRAPH_FLOOR]
    if peer == "graph":
        rlm = str(Path(sys.executable).with_name("rlm"))
        return [
            *(rlm, "run", "--quiet", "--base-url", base_url),
            *("--model", ROOT_MODEL, "--sub-model", SUB_MODEL, "--max-iterations", "3"),
            *("--server-profile", "hosted"),  # the stub plays a hosted API
            *("--context", str(context), question),
        ]
    calls = peer.removesuffix("-str")  # bench.calls runs rlm-graph on a string as "graph"
    return [sys.executable, "-m", "bench.calls", calls, base_url, str(context), question]


@dataclass(frozen=True)
class Cold:
    """One cold run: whole-process seconds, peak MB of its tree and of it alone, its answer."""

    seconds: float
    tree_mb: float
    host_mb: float
    answer: str  # the last line the process printed
    cpu: float  # user + system seconds of the process and of the children it waited for


def children_cpu() -> float:
    """CPU seconds of this process's finished children so far.

    Unlike wall time, it barely grows with the shared machine's load, so it shows what
    a run costs when the wall figures are mostly waiting for a core.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_run(peer: str, cell: str, context: Path) -> Cold:
    """One fresh process of ``peer`` running ``cell`` on ``context``, measured."""
    stub_peer = peer if peer in ("rlms", "dspy") else "graph"  # the floors never ask it
    with StubServer(responder(stub_peer, [cell])) as server:
        cpu = children_cpu()
        started = time.perf_counter()
        process = subprocess.Popen(
            command(peer, server.base_url, context),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with TreePeak(root=process.pid) as memory:
            out, err = process.communicate()
        seconds = time.perf_counter() - started
    if process.returncode != 0 or not out.strip():
        raise RuntimeError(f"cold {peer} failed ({process.returncode}):\n{err[-3000:]}")
    answer = out.strip().splitlines()[-1]
    return Cold(seconds, memory.peak / MB, memory.root_peak / MB, answer, children_cpu() - cpu)


def row(
    label: str, runs: dict[str, list[Cold]], value: Callable[[Cold], float], target: float = 0
) -> list[str]:
    """A table row: the median of ``value`` per peer, and rlm-graph's verdict if a target.

    The verdict is on the slower of rlm-graph's two ways in, a path and a string.
    """
    medians = {p: median([value(c) for c in done]) for p, done in runs.items()}
    worst = max(medians[p] for p in GRAPHS)
    judged = [f"<= {target:g}", verdict(worst, target)] if target else ["", ""]
    return [label, *(fmt(m) for m in medians.values()), *judged]


def run(quick: bool = False) -> str:
    """Measure and return the cold-start table."""
    repeats = 1 if quick else 3
    peers = [p for p in COLD_PEERS if p in ("python", "langgraph", *GRAPHS) or p in available()]
    rows = []
    before = load()
    with tempfile.TemporaryDirectory(prefix="rlm-bench-cold-") as tmp:
        for name, size, cell, target in WORKLOADS:
            context = write_context(Path(tmp) / f"{size}.txt", size)
            runs: dict[str, list[Cold]] = {p: [] for p in peers}
            for _ in range(repeats):
                for peer in peers:
                    runs[peer].append(cold_run(peer, cell, context))
            rows.append(row(f"{name}: seconds", runs, lambda c: c.seconds, target))
            rows.append(row(f"{name}: CPU seconds (user+sys)", runs, lambda c: c.cpu))
            if size != 5 * MB:  # the small and the large context; 5 MB says little more
                rss_target = TARGET_MB if size < MB else 0
                rows.append(
                    row(f"{name}: peak MB, host process RSS", runs, lambda c: c.host_mb, rss_target)
                )
                rows.append(row(f"{name}: peak MB, process tree PSS", runs, lambda c: c.tree_mb))
    return table(
        f"8. Cold start: one fresh process per run, whole process (median of {repeats}; "
        f"load average {before} before, {load()} after, on {os.cpu_count()} CPUs)",
        ["workload", *peers, "target (rlm-graph)", "verdict"],
        rows,
    )
