"""`rlm mcp` as a subprocess, driven over stdio by the `mcp` SDK's own client.

The server's models are the stub server in this process; the server reaches it over
loopback, as an MCP host's server would reach a model.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import Script, tool

from rlm_graph.cli.main import main as rlm_main
from rlm_graph.offline.stub_server import StubReply, StubServer
from rlm_graph.settings import Settings

mcp = pytest.importorskip(
    "mcp", reason="the mcp SDK is not installed (pip install 'rlm-graph[mcp]')"
)
from rlm_graph.integrations.calls import FixedRLM  # noqa: E402
from rlm_graph.integrations.mcp import RLMServer, build_server  # noqa: E402
from rlm_graph.storage.persistence import open_persistence  # noqa: E402

PROJECT = Path(__file__).resolve().parents[2]
FIRST = Script(
    [tool("codes = sorted(set(context.split()))\nprint(codes)"), tool("FINAL(codes[0])")]
)
# The follow-up reads `codes`, kept by the thread's sandbox from the first question.
AGAIN = Script([tool("FINAL(len(codes))")])


def responder(body: dict[str, Any]) -> StubReply | str:
    asked = json.dumps(body["messages"][:2])
    return (AGAIN if "How many" in asked else FIRST)(body)


def server_command(server: StubServer, root: Path) -> Any:
    flags = ["--model", "stub-root", "--sub-model", "stub-sub", "--base-url", server.base_url]
    return mcp.StdioServerParameters(
        command=sys.executable,
        args=["-m", "rlm_graph.cli.main", "mcp", str(root), *flags, "--max-iterations", "5"],
        cwd=str(PROJECT),
        env={
            "RLM_GRAPH_HOME": os.environ["RLM_GRAPH_HOME"],  # the tests' sandbox cache
            "LANGSMITH_TRACING": "false",
            "NO_PROXY": "127.0.0.1",
            "PYTHONPATH": str(PROJECT),
        },
    )


def text_of(result: Any) -> str:
    return "".join(part.text for part in result.content)


def test_rlm_mcp_answers_follows_up_and_refuses_paths_outside_its_folders(
    stub: Any, tmp_path: Path
) -> None:
    root = tmp_path / "reports"
    root.mkdir()
    (root / "codes.txt").write_text("E42 E17 E42 E99\n" * 1000)
    (tmp_path / "secret.txt").write_text("not yours")
    server = stub(responder)
    progress: list[tuple[float, float | None]] = []

    async def record(step: float, total: float | None, message: str | None) -> None:
        progress.append((step, total))

    async def session() -> list[Any]:
        async with mcp.Client(server_command(server, root)) as client:
            tools = await client.list_tools()
            first = await client.call_tool(
                "rlm_answer",
                {"question": "Which code sorts first?", "path": str(root / "codes.txt")},
                progress_callback=record,
            )
            thread = text_of(first).rsplit("thread ", 1)[1].rstrip("]")
            again = await client.call_tool(
                "rlm_followup", {"thread": thread, "question": "How many distinct codes?"}
            )
            outside = await client.call_tool(
                "rlm_answer", {"question": "q", "path": str(root / ".." / "secret.txt")}
            )
            unknown = await client.call_tool("rlm_followup", {"thread": "nope", "question": "q"})
            return [tools, first, again, outside, unknown]

    tools, first, again, outside, unknown = asyncio.run(asyncio.wait_for(session(), 120))
    assert {t.name for t in tools.tools} == {"rlm_answer", "rlm_followup"}
    assert text_of(first).startswith("E17\n[rlm: answered in 2 iterations")
    assert first.structured_content is None  # the answer reaches the model once
    assert progress == [(1, 5), (2, 5)]
    assert text_of(again).startswith("3\n[rlm: answered in 1 iteration")
    assert outside.is_error and "outside the allowed folders" in text_of(outside)
    assert "not yours" not in json.dumps([r.body for r in server.requests])
    assert unknown.is_error and "no thread 'nope' was started here" in text_of(unknown)
    assert (Path(os.environ["RLM_GRAPH_HOME"]) / "threads.sqlite").is_file()


def test_rlm_mcp_mistakes_are_one_line_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flags = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    assert rlm_main(["mcp", str(tmp_path / "missing"), *flags]) == 2
    assert capsys.readouterr().err == (
        f"rlm: error: allowed folder {str(tmp_path / 'missing')!r} is not an existing folder\n"
    )
    assert rlm_main(["mcp", "/proc", *flags]) == 2
    assert "kernel or device folder" in capsys.readouterr().err


def test_a_thread_is_followed_up_only_by_a_server_whose_folders_hold_its_path(
    stub: Any, tmp_path: Path
) -> None:
    server = stub(responder)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    (first / "codes.txt").write_text("E42 E17")
    settings = Settings(model="stub-root", base_url=server.base_url, max_iterations=5)

    async def ask(roots: Path, name: str, arguments: dict[str, str]) -> Any:
        checkpoint = str(tmp_path / "threads.sqlite")
        with open_persistence(checkpoint) as persistence:
            fixed = FixedRLM(settings, [roots], tmp_path / "traces")
            rlm = RLMServer(fixed, persistence, checkpoint)
            async with mcp.Client(build_server(rlm)) as client:
                return await client.call_tool(name, arguments)

    # Settings are the operator's: a client's extra arguments change nothing.
    override = {"max_iterations": 99, "model": "gpt-evil", "base_url": "http://elsewhere/v1"}
    call = {"question": "q", "path": "codes.txt", **override}
    started = asyncio.run(ask(first, "rlm_answer", call))
    assert not started.is_error
    assert {r.body.get("model") for r in server.requests} == {"stub-root"}
    thread = text_of(started).rsplit("thread ", 1)[1].rstrip("]")
    followup = {"thread": thread, "question": "How many?"}
    refused = asyncio.run(ask(second, "rlm_followup", followup))
    assert refused.is_error and "outside this server's folders" in text_of(refused)
    assert text_of(asyncio.run(ask(first, "rlm_followup", followup))).startswith("2\n")


HOLD = """
import sys
from rlm_graph.storage.thread_lock import thread_lock
with thread_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_thread_another_process_runs_is_refused_not_run_twice(stub: Any, tmp_path: Path) -> None:
    server = stub(responder)
    (tmp_path / "codes.txt").write_text("E42 E17")
    settings = Settings(model="stub-root", base_url=server.base_url, max_iterations=5)
    checkpoint = str(tmp_path / "threads.sqlite")

    async def ask(name: str, arguments: dict[str, str]) -> Any:
        with open_persistence(checkpoint) as persistence:
            rlm = RLMServer(FixedRLM(settings, [tmp_path], tmp_path / "t"), persistence, checkpoint)
            async with mcp.Client(build_server(rlm)) as client:
                return await client.call_tool(name, arguments)

    started = asyncio.run(ask("rlm_answer", {"question": "q", "path": "codes.txt"}))
    thread = text_of(started).rsplit("thread ", 1)[1].rstrip("]")
    followup = {"thread": thread, "question": "How many?"}
    # `rlm run --thread` (or another `rlm mcp`) on the same checkpoint holds the thread.
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, checkpoint, thread],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        calls = len(server.requests)
        refused = asyncio.run(ask("rlm_followup", followup))
        holder.communicate("")
    assert refused.is_error and "running in another process" in text_of(refused)
    assert len(server.requests) == calls  # no model call was made for it
    assert text_of(asyncio.run(ask("rlm_followup", followup))).startswith("2\n")
