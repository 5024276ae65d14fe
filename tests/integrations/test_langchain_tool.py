"""The RLM tool in a `create_agent` agent whose model is scripted through the stub server.

The agent's model and the RLM's models are all served by one stub, told apart by model
name, so the tests see every request each side sent.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from support import Agent, Script, fast_settings, tool

from rlm_graph.integrations.langchain import rlm_tool

NEEDLE = "The vault code for rowan is 918273."
FIND = """
import re
code = re.search(r"vault code for rowan is (\\d+)", context).group(1)
print(code)
"""
RLM_SCRIPT = Script([tool(FIND), tool("FINAL(code)")])


def repeat_tool_result(body: dict[str, Any]) -> str:
    """The agent's last step: say what the tool answered."""
    return f"Agent says: {body['messages'][-1]['content']}"


@pytest.fixture
def big_log(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    filler = "2026-01-01 INFO request served in 12 ms by worker 7\n"
    lines = filler * (2_600_000 // len(filler))
    (folder / "big.log").write_text(lines + NEEDLE + "\n" + lines)
    assert (folder / "big.log").stat().st_size > 5_000_000
    return folder / "big.log"


def test_an_agent_answers_over_a_5mb_file_its_model_never_reads(stub: Any, big_log: Path) -> None:
    question = "What is the vault code for rowan?"
    steps = [Agent.call("rlm", question=question, path=str(big_log)), repeat_tool_result]
    server = stub(Agent(steps, RLM_SCRIPT))
    rlm = rlm_tool(
        roots=[big_log.parent], trace_dir=big_log.parent / "traces", **fast_settings(server)
    )
    agent = create_agent(Agent.model(server), [rlm])

    events: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    for mode, chunk in agent.stream(
        {"messages": [{"role": "user", "content": question}]}, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            events.append(chunk)
        else:
            state = chunk
    final = state["messages"][-1].content
    assert final.startswith("Agent says: 918273\n[rlm: answered in 2 iterations")
    # The agent's model read the answer and one line; never the file, nor any part of it.
    sent = Agent.requests(server)
    assert len(sent) == 2
    assert not any(
        NEEDLE in json.dumps(body) or "request served" in json.dumps(body) for body in sent
    )
    assert max(len(json.dumps(body)) for body in sent) < 6_000
    # Progress reached the agent's stream, marked as the tool's; the trajectory went to a file.
    assert [e["event"] for e in events if e["event"] in ("iteration", "final")] == [
        "iteration",
        "iteration",
        "final",
    ]
    assert {e["source"] for e in events} == {"rlm"}
    message = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert message.artifact["answer"] == "918273"
    assert Path(message.artifact["trace"]).read_text().count('"event": "final"') == 1


def test_settings_fixed_at_creation_cannot_be_overridden_by_the_call(
    stub: Any, big_log: Path
) -> None:
    override = {"max_iterations": 500, "model": "gpt-evil", "roots": ["/"], "base_url": "http://x"}
    steps = [Agent.call("rlm", question="q", path=str(big_log), **override), repeat_tool_result]
    server = stub(Agent(steps, RLM_SCRIPT))
    rlm = rlm_tool(roots=[big_log.parent], **fast_settings(server))
    schema = rlm.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
    assert set(schema["properties"]) == {"question", "path", "context_id", "text"}

    state = create_agent(Agent.model(server), [rlm]).invoke({"messages": [("user", "q")]})
    refusal = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert refusal.status == "error"
    assert all(key in refusal.content for key in override)
    # Nothing ran: every request the stub saw was the agent's own.
    assert len(Agent.requests(server)) == len(server.requests) == 2


def test_paths_outside_the_roots_and_ambiguous_references_are_refused(
    tmp_path: Path, big_log: Path
) -> None:
    rlm = rlm_tool(roots=[big_log.parent], model="stub-root", base_url="http://127.0.0.1:9/v1")
    calls = {
        "/etc/passwd": {"path": "/etc/passwd"},
        "escape": {"path": str(big_log.parent / ".." / "elsewhere.txt")},
        "two": {"path": str(big_log), "text": "also this"},
        "bad id": {"context_id": "ctx-nothex"},
    }
    for call_id, reference in calls.items():
        args = {"question": "q", **reference}
        reply = rlm.invoke({"type": "tool_call", "name": "rlm", "args": args, "id": call_id})
        assert isinstance(reply, ToolMessage)
        assert reply.status == "error", call_id
        assert "\n" not in str(reply.content)
    no_files = rlm_tool(model="stub-root", base_url="http://127.0.0.1:9/v1")
    refused = no_files.invoke(
        {
            "type": "tool_call",
            "name": "rlm",
            "args": {"question": "q", "path": str(big_log)},
            "id": "x",
        }
    )
    assert "no folder is allowed" in str(refused.content)


def test_async_calls_and_asking_again_by_context_id(stub: Any) -> None:
    script = Script([tool("print(len(context))\nFINAL(len(context))")])
    server = stub(script)
    rlm = rlm_tool(**fast_settings(server))

    async def ask(**reference: str) -> ToolMessage:
        call = {"type": "tool_call", "name": "rlm", "args": {"question": "How long?", **reference}}
        return await rlm.ainvoke({**call, "id": "1"})  # type: ignore[no-any-return]

    first = asyncio.run(ask(text="twelve chars"))
    assert first.artifact["answer"] == 12
    context_id = first.artifact["context"]
    assert f"context {context_id}]" in str(first.content)
    again = asyncio.run(ask(context_id=context_id))
    assert again.artifact["answer"] == 12
    assert again.artifact["context"] == context_id
