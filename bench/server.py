"""Figure 7: concurrent runs through a real ``langgraph dev``, and through ``aanswer``.

Each run is one cell whose sub-call the stub answers after 3 s, then FINAL: ideally N
runs take one run's time, whatever N. Served by ``langgraph dev`` (SDK client, one
thread per run, ``--n-jobs-per-worker`` above N), wall is from the first request to
the last answer; memory is the peak PSS of the server's process tree (the server, its
sandbox workers), sampled every 0.2 s. The same N then run through ``aanswer`` in one
event loop of this process. Before issue 20, synchronous nodes held the server's six
default-pool threads while their cells waited: 48 runs took 28.9 s, in waves of six.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import fmt, stub_settings, table
from bench.first_cell import TreePeak
from rlm_graph import aanswer
from rlm_graph.offline.stub_server import StubReply, StubServer, is_root_request
from rlm_graph.offline.stub_server import tool_reply as tool

ROOT = Path(__file__).resolve().parent.parent
SUB_CALL_SECONDS = 3.0
CELL = "r = await llm_query('wait')\nFINAL(r)"
COUNTS = (1, 6, 12, 48, 96)
QUICK_COUNTS = (1, 12)
MB = 1 << 20


def _respond(body: dict[str, Any]) -> StubReply:
    if is_root_request(body):
        return tool(CELL)
    return StubReply(content="done", delay=SUB_CALL_SECONDS)


def _start_server(jobs: int, log: Path, model_url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``langgraph dev`` on the project's graphs, allowed the stub; once ``/ok`` answers."""
    cli = shutil.which("langgraph") or str(Path(sys.executable).parent / "langgraph")
    with socket.socket() as probe:  # a free port (the server moves on if it is taken)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [cli, "dev", "--no-browser", "--no-reload", "--port", str(port)]
    command += ["--n-jobs-per-worker", str(jobs)]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "RLM_ALLOWED_BASE_URLS": model_url},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))  # colours
        if found := re.search(r"API: (http://[\w.]+:\d+)", text):
            url = found.group(1)
            try:
                with urllib.request.urlopen(f"{url}/ok", timeout=2):
                    return server, url
            except OSError:
                pass
        time.sleep(0.2)
    _stop(server)
    raise RuntimeError(f"langgraph dev did not start:\n{log.read_text(errors='replace')[-2000:]}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


async def _served(url: str, count: int, settings: dict[str, Any]) -> list[str]:
    from langgraph_sdk import get_client

    async with get_client(url=url, api_key=None, timeout=300) as client:

        async def one(i: int) -> str:
            thread = await client.threads.create()
            state = await client.runs.wait(
                thread["thread_id"],
                "rlm",
                input={"question": "q", "context": f"run {i}"},
                context=settings,
            )
            return str(state.get("status") if isinstance(state, dict) else state)

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _in_process(count: int, settings: dict[str, Any]) -> list[str]:
    results = await asyncio.gather(*(aanswer("q", f"run {i}", **settings) for i in range(count)))
    return [r.status for r in results]


def run(quick: bool = False) -> str:
    """The table of figure 7."""
    counts = QUICK_COUNTS if quick else COUNTS
    rows = []
    with StubServer(_respond) as stub, tempfile.TemporaryDirectory() as tmp:
        settings = stub_settings(stub)
        server, url = _start_server(2 * max(counts), Path(tmp) / "server.log", stub.base_url)
        try:
            for count in counts:
                with TreePeak(0.2, root=server.pid) as memory:
                    started = time.perf_counter()
                    served = asyncio.run(_served(url, count, settings))
                    wall = time.perf_counter() - started
                started = time.perf_counter()
                direct = asyncio.run(_in_process(count, settings))
                loop_wall = time.perf_counter() - started
                answered = sum(s == "answered" for s in served) + sum(
                    s == "answered" for s in direct
                )
                rows.append(
                    [
                        count,
                        fmt(wall),
                        fmt(wall / SUB_CALL_SECONDS),
                        memory.peak // MB,
                        fmt(loop_wall),
                        f"{answered}/{2 * count}",
                    ]
                )
        finally:
            _stop(server)
    return table(
        "7. Concurrent runs, each one cell waiting 3 s on a sub-call (issue 20)",
        [
            "runs",
            "langgraph dev wall s",
            "vs one sub-call",
            "server tree peak PSS MB",
            "aanswer wall s",
            "answered",
        ],
        rows,
    )
