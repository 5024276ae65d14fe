"""A deepagents agent delegates a long-context question to the RLM subagent.

The main agent's model is scripted through the stub server (it calls the ``task`` tool);
the subagent reads the file from the agent's own backend, never through a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import Agent, Script, fast_settings, tool

deepagents = pytest.importorskip(
    "deepagents", reason="deepagents is not installed (pip install 'rlm-graph[deepagents]')"
)
from deepagents.backends import FilesystemBackend  # noqa: E402
from deepagents.backends.utils import create_file_data  # noqa: E402

from rlm_graph.integrations.deepagents import rlm_subagent  # noqa: E402

NEEDLE = "The vault code for rowan is 918273."
RLM_SCRIPT = Script(
    [
        tool("import re\nprint(re.findall(r'rowan is (\\d+)', str(context)))"),
        tool("FINAL('918273')"),
    ]
)


def repeat_tool_result(body: dict[str, Any]) -> str:
    return f"Agent says: {body['messages'][-1]['content']}"


def delegate(path: str) -> Any:
    task = f"What is the vault code for rowan?\ncontext: {path}"
    return Agent.call("task", description=task, subagent_type="rlm")


def test_a_deep_agent_delegates_a_file_of_its_filesystem_to_the_rlm(
    stub: Any, tmp_path: Path
) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "big.log").write_text("noise\n" * 200_000 + NEEDLE + "\n")
    server = stub(Agent([delegate("/logs/big.log"), repeat_tool_result], RLM_SCRIPT))
    backend = FilesystemBackend(root_dir=tmp_path, virtual_mode=True)
    subagent = rlm_subagent(backend=backend, **fast_settings(server))
    agent = deepagents.create_deep_agent(
        model=Agent.model(server), backend=backend, subagents=[subagent]
    )

    state = agent.invoke({"messages": [("user", "What is the vault code for rowan?")]})
    assert state["messages"][-1].content.startswith("Agent says: 918273\n[rlm: answered")
    sent = Agent.requests(server)
    assert len(sent) == 2
    assert not any(NEEDLE in json.dumps(body) for body in sent)
    assert "rlm" in json.dumps(sent[0]["tools"])  # the subagent is offered by `task`


def test_files_in_the_agent_state_are_a_context_and_folders_too(stub: Any) -> None:
    steps = [delegate("/reports"), repeat_tool_result]
    server = stub(Agent(steps, RLM_SCRIPT))
    agent = deepagents.create_deep_agent(
        model=Agent.model(server), subagents=[rlm_subagent(**fast_settings(server))]
    )
    files = {
        "/reports/q1.txt": create_file_data("quiet quarter"),
        "/reports/q2.txt": create_file_data(NEEDLE),
    }
    events, state = [], {}
    # The subagent runs inside the `task` tool: its progress comes with subgraphs=True.
    for namespace, mode, chunk in agent.stream(
        {"messages": [("user", "code?")], "files": files},
        stream_mode=["custom", "values"],
        subgraphs=True,
    ):
        if mode == "custom":
            events.append(chunk)
        elif not namespace:
            state = chunk
    assert state["messages"][-1].content.startswith("Agent says: 918273")
    assert [e["event"] for e in events if e["source"] == "rlm"][-1] == "final"
    root_prompt = next(r.body for r in server.requests if r.body.get("model") == "stub-root")
    assert "a dict of 2" in json.dumps(root_prompt)  # the folder, as {relative path: text}


def test_a_task_without_a_context_line_or_outside_the_root_is_refused(
    stub: Any, tmp_path: Path
) -> None:
    steps = [Agent.call("task", description="no path here", subagent_type="rlm")]
    server = stub(Agent([*steps, delegate("/../secret.txt"), repeat_tool_result], RLM_SCRIPT))
    backend = FilesystemBackend(root_dir=tmp_path / "root", virtual_mode=False)
    (tmp_path / "root").mkdir()
    agent = deepagents.create_deep_agent(
        model=Agent.model(server),
        backend=backend,
        subagents=[rlm_subagent(backend=backend, **fast_settings(server))],
    )
    state = agent.invoke({"messages": [("user", "go")]})
    replies = [m.content for m in state["messages"] if m.type == "tool"]
    assert replies[0].startswith("Refused: end the task with one line `context: <path>`")
    assert replies[1].startswith("Refused: path '/../secret.txt' is outside the allowed folders")
    assert all(r.body.get("model") == "agent-model" for r in server.requests)
