"""Smoke test: the `rlm` graph served by `langgraph dev`, driven through the SDK.

A stub model server runs in this process; `langgraph dev` runs as a subprocess serving
the graphs named in the project's langgraph.json, so the graph is loaded as Studio and
API users get it. Two questions on one thread check streaming, progress events,
that the ~1 MB context never reaches a model, and that sandbox variables persist across
runs on a thread. A third question, streamed as Studio asks (``stream_mode="custom"``,
``stream_subgraphs=True``), checks that a sub-RLM's progress events arrive with depth.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from devserver import RUN_TIMEOUT, DevServer

from rlm_graph.graph.prompts import CHILD_QUESTION
from rlm_graph.offline.stub_server import StubReply, StubServer, last_user_text

MAX_MODEL_REQUEST_BYTES = 50_000

NEEDLE = "QX-7319-KAPPA"
QUESTION = "What is the secret code in the context?"
FOLLOW_UP = "Reverse the secret code you found and count the earlier questions."
EXPECTED_ANSWER = f"{NEEDLE}|{NEEDLE.lower()}|{NEEDLE[::-1]}"
EXPECTED_FOLLOW_UP = f"{NEEDLE[::-1]}#1"


def tool_call(code: str, text: str = "") -> StubReply:
    return StubReply(
        content=text, tool_calls=[{"name": "execute_python", "arguments": {"code": code}}]
    )


# Root replies, chosen by how many tool results the request already carries.
FIRST_RUN = [
    tool_call(
        "import re\n"
        "m = re.search(r'secret code is ([A-Z0-9-]+)', context)\n"
        "needle = m.group(1)\n"
        "print(len(context), needle)",
        "Searching the context.",
    ),
    tool_call(
        "parts = await llm_batch([f'lower: {needle}', f'reverse: {needle}'])\nprint(parts)",
        "Asking the sub model.",
    ),
    tool_call("result = f'{needle}|{parts[0]}|{parts[1]}'\nprint(result)", 'FINAL_VAR("result")'),
]
# A third question, on a new thread, goes two levels deep: its progress events arrive
# with depth 1 through the same custom stream.
DEEP_QUESTION = "Have a sub-RLM shout the word."
DEEP_RUN = [
    tool_call("loud = await llm_query('shout: hello')\nprint(loud)"),
    tool_call("FINAL(loud)"),
]
CHILD_RUN = [tool_call("print(len(context))\nFINAL(context.removeprefix('shout: ').upper())")]
# The follow-up reads `needle`, set in the first run, and `history`, set by the graph.
SECOND_RUN = [
    tool_call(
        "follow = needle[::-1] + '#' + str(len(history))\nprint(follow)", 'FINAL_VAR("follow")'
    )
]


def first_user_text(body: dict[str, Any]) -> str:
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def responder(body: dict[str, Any]) -> StubReply | str:
    """Decide by request content (not call order), so a retried request gets the same reply."""
    if not body.get("tools"):  # a plain sub-call from llm_batch
        prompt = last_user_text(body)
        if prompt.startswith("lower: "):
            return prompt.removeprefix("lower: ").lower()
        if prompt.startswith("reverse: "):
            return prompt.removeprefix("reverse: ")[::-1]
        return f"unexpected sub-call: {prompt[:200]}"
    first = first_user_text(body)
    if CHILD_QUESTION in first:
        script = CHILD_RUN
    elif DEEP_QUESTION in first:
        script = DEEP_RUN
    else:
        script = SECOND_RUN if FOLLOW_UP in first else FIRST_RUN
    step = sum(1 for m in body.get("messages") or [] if m.get("role") == "tool")
    if step >= len(script):
        return f'FINAL("unexpected root request after {step} tool results")'
    return script[step]


def make_context() -> str:
    """About 1 MB of text with the needle in the middle."""
    line = "The quick brown fox jumps over the lazy dog while the archive hums along.\n"
    half = line * (500_000 // len(line))
    return f"{half}Note: the secret code is {NEEDLE}.\n{half}"


@pytest.fixture
def stub_model(dev_server: DevServer) -> Iterator[StubServer]:
    """The model, served where the dev server allows a base URL."""
    server = StubServer(responder, host="127.0.0.1", port=dev_server.model_port).start()
    try:
        yield server
    finally:
        server.stop()


async def stream_run(
    client: Any, thread_id: str, graph_input: dict[str, Any], context: dict[str, Any]
) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    async for part in client.runs.stream(
        thread_id,
        "rlm",
        input=graph_input,
        context=context,
        stream_mode=["values", "custom"],
    ):
        events.append((part.event, part.data))
    return events


async def stream_custom(
    client: Any, graph_input: dict[str, Any], context: dict[str, Any]
) -> list[Any]:
    """The custom events of a run, as a Studio-like client asks for them."""
    thread = await client.threads.create()
    events = []
    async for part in client.runs.stream(
        thread["thread_id"],
        "rlm",
        input=graph_input,
        context=context,
        stream_mode="custom",
        stream_subgraphs=True,
    ):
        assert part.event != "error", part.data
        if part.event.startswith("custom"):
            events.append(part.data)
    return events


def final_values(events: list[tuple[str, Any]]) -> dict[str, Any]:
    values = [data for event, data in events if event == "values"]
    assert values, f"no values events: {events}"
    return values[-1]


@pytest.mark.slow
def test_rlm_graph_under_langgraph_dev(dev_server: DevServer, stub_model: StubServer) -> None:
    from langgraph_sdk import get_client

    settings = {"model": "stub", "base_url": stub_model.base_url, "max_iterations": 6}
    context_text = make_context()

    async def scenario() -> tuple[
        list[tuple[str, Any]], list[tuple[str, Any]], dict[str, Any], list[Any]
    ]:
        async with get_client(url=dev_server.url, api_key=None, timeout=RUN_TIMEOUT) as client:
            thread = await client.threads.create()
            first = await asyncio.wait_for(
                stream_run(
                    client,
                    thread["thread_id"],
                    {"question": QUESTION, "context": context_text},
                    settings,
                ),
                RUN_TIMEOUT,
            )
            # The follow-up sends no context: the thread keeps its reference and sandbox.
            second = await asyncio.wait_for(
                stream_run(client, thread["thread_id"], {"question": FOLLOW_UP}, settings),
                RUN_TIMEOUT,
            )
            state = await client.threads.get_state(thread["thread_id"])
            deep = await asyncio.wait_for(
                stream_custom(
                    client,
                    {"question": DEEP_QUESTION, "context": "tiny"},
                    {**settings, "max_depth": 2},
                ),
                RUN_TIMEOUT,
            )
            return first, second, state, deep

    first, second, state, deep = asyncio.run(scenario())
    where = f"\n--- server log ---\n{dev_server.log()}"

    for events in (first, second):
        errors = [data for event, data in events if event == "error"]
        assert not errors, f"run failed: {errors}{where}"

    values = final_values(first)
    assert values.get("status") == "answered", f"{values}{where}"
    assert values.get("answer") == EXPECTED_ANSWER, f"{values}{where}"
    custom = [data for event, data in first if event == "custom"]
    kinds = {d.get("event") for d in custom if isinstance(d, dict)}
    assert {"iteration", "cell", "sub_call_start", "sub_call_end"} <= kinds, custom

    follow = final_values(second)
    assert follow.get("status") == "answered", f"{follow}{where}"
    assert follow.get("answer") == EXPECTED_FOLLOW_UP, f"{follow}{where}"
    assert state["values"].get("turn") == 2, state["values"]
    assert [h["answer"] for h in state["values"].get("history", [])] == [
        EXPECTED_ANSWER,
        EXPECTED_FOLLOW_UP,
    ]

    # The sub-RLM's own events reach the client, marked with their depth and the sub-call.
    nested = [e for e in deep if e.get("depth") == 1 and e.get("path")]
    assert {"iteration", "reply", "cell", "cell_end", "final"} <= {e["event"] for e in nested}
    (child_final,) = [e for e in nested if e["event"] == "final"]
    assert child_final["answer"] == "HELLO"
    (start,) = [e for e in deep if e["event"] == "sub_call_start"]
    assert start["depth"] == 1 and start["recursive"] is True
    assert all(e["path"] == [start["id"]] for e in nested)
    root_final = [e for e in deep if e["event"] == "final" and e["depth"] == 0]
    assert [e["answer"] for e in root_final] == ["HELLO"], deep

    requests = [r for r in stub_model.requests if r.path.rstrip("/").endswith("chat/completions")]
    sub_prompts = {last_user_text(r.body) for r in requests if not r.body.get("tools")}
    assert sub_prompts == {f"lower: {NEEDLE}", f"reverse: {NEEDLE}"}, sub_prompts
    assert sum(1 for r in requests if r.body.get("tools")) >= len(FIRST_RUN) + len(SECOND_RUN)
    largest = max(r.raw_size for r in requests)
    assert len(context_text) > 900_000
    assert largest < MAX_MODEL_REQUEST_BYTES, f"a model request of {largest:,} bytes"
