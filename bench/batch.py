"""Figure 2: ``llm_batch`` of 200 prompts at 0.3 s per sub-call, by ``max_concurrency``.

The ideal is ``ceil(200 / c) * 0.3 s``. The batch runs in the second cell, after a
trivial first one, so the figure shows sub-call scheduling and not the session's
one-off first-cell cost (figure 3 has that). The cell's own ``seconds`` is read from
the final checkpoint, because ``answer()``'s output schema leaves ``cells`` out.
A "client floor" column runs the same 200 ``ChatOpenAI.ainvoke`` calls through a
semaphore with no graph or sandbox at all: the best this model client can do here.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from bench.common import (
    SUB_MODEL,
    fmt,
    is_root_request,
    median,
    scripted,
    stub_settings,
    table,
    verdict,
)
from rlm_graph.offline.stub_server import StubReply, StubServer
from rlm_graph.offline.stub_server import tool_reply as tool

PROMPTS = 200
LATENCY = 0.3
TARGET_RATIO = 1.25  # at concurrency 128
CELL = (
    f"r = await llm_batch([f'item {{i}}: say ok' for i in range({PROMPTS})])\n"
    "bad = [x for x in r if x.startswith('Error')]\n"
    "FINAL(len(r) - len(bad))"
)


def _sub(body: dict[str, Any]) -> StubReply:
    return StubReply(content="ok", delay=LATENCY)


def graph_run(server: StubServer, concurrency: int, graph: Any) -> tuple[float, float]:
    """One run: (batch cell seconds, first-to-last sub-call span incl. the last reply)."""
    from rlm_graph import answer
    from rlm_graph.repl.registry import REGISTRY

    config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}}
    server.reset_log()
    result = answer(
        "q",
        "batch context",
        graph=graph,
        config=config,
        **stub_settings(server, max_concurrency=concurrency, max_iterations=4),
    )
    if result.answer != PROMPTS:
        raise RuntimeError(f"batch went wrong: {result.answer!r} {result.error}")
    values = graph.get_state(config).values
    REGISTRY.release(values["sandbox_id"])
    subs = [r.timestamp for r in server.requests if r.body and not is_root_request(r.body)]
    return float(values["cells"][-1]["seconds"]), max(subs) - min(subs) + LATENCY


def client_run(loop: asyncio.AbstractEventLoop, model: ChatOpenAI, concurrency: int) -> float:
    """The same sub-calls straight through the client: seconds for all of them."""

    async def batch() -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await model.ainvoke([HumanMessage(f"item {i}: say ok")])

        await asyncio.gather(*(one(i) for i in range(PROMPTS)))

    started = time.perf_counter()
    loop.run_until_complete(batch())
    return time.perf_counter() - started


def run(quick: bool = False) -> str:
    """Measure and return the table of figure 2."""
    from langgraph.checkpoint.memory import InMemorySaver

    from rlm_graph import build_graph

    levels = (32, 128) if quick else (8, 32, 128)
    repeats = 1 if quick else 3
    graph = build_graph(checkpointer=InMemorySaver())
    server = StubServer(scripted([tool("ready = True"), tool(CELL)], _sub)).start()
    loop = asyncio.new_event_loop()  # one loop: the client's pool is bound to it
    key = SecretStr("not-needed")
    model = ChatOpenAI(model=SUB_MODEL, base_url=server.base_url, api_key=key, max_retries=0)
    rows = []
    try:
        graph_run(server, 128, graph)  # warm-up: clients, connection pools, loops
        client_run(loop, model, 128)
        for concurrency in levels:
            runs = []
            for _ in range(repeats):
                runs.append(
                    (*graph_run(server, concurrency, graph), client_run(loop, model, concurrency))
                )
            cell = median([r[0] for r in runs])
            ideal = math.ceil(PROMPTS / concurrency) * LATENCY
            client = median([r[2] for r in runs])
            rows.append(
                [
                    concurrency,
                    fmt(ideal),
                    fmt(cell),
                    fmt(cell / ideal) + "x",
                    fmt(median([r[1] for r in runs])),
                    fmt(client),
                    fmt(client / ideal) + "x",
                    verdict(cell / ideal, TARGET_RATIO) if concurrency == 128 else "",
                ]
            )
    finally:
        server.stop()
        loop.close()
    return table(
        f"2. llm_batch of {PROMPTS} prompts, {LATENCY} s per sub-call "
        f"(median of {repeats}; target <= {TARGET_RATIO}x ideal at c=128)",
        [
            "max_concurrency",
            "ideal s",
            "batch cell s",
            "cell vs ideal",
            "sub-call span s",
            "client floor s",
            "client vs ideal",
            "target",
        ],
        rows,
    )
