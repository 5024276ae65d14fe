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
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlm_graph.graph.prompts import CHILD_QUESTION
from rlm_graph.offline.stub_server import StubReply, StubServer, last_user_text

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
RUN_TIMEOUT = 60.0
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DevServer:
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)[-20_000:]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


def server_env(home: Path) -> dict[str, str]:
    """The test's environment minus credentials and tracing, plus the dev-server settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_API_KEY")
        and not key.startswith(("LANGSMITH_", "LANGCHAIN_", "OPENAI_"))
    }
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        RLM_GRAPH_HOME=str(home),
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGSMITH_TEST_TRACKING="false",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def project_config(workdir: Path) -> Path:
    """The project's langgraph.json with its paths made absolute, written to ``workdir``.

    `langgraph dev` resolves the graph, dependency and .env paths against its working
    directory and keeps its in-memory database in ``<cwd>/.langgraph_api`` (pickles that
    later servers reload; the config's `disable_persistence` key is dropped by the CLI's
    validation in langgraph-cli 0.4.x). Running from ``workdir`` keeps that database out
    of the project while serving exactly the graphs the project's config names.
    """
    config = json.loads((PROJECT_ROOT / "langgraph.json").read_text())

    def absolute(path: str) -> str:
        return str(PROJECT_ROOT / path)

    config["graphs"] = {
        name: absolute(spec) if isinstance(spec, str) and spec.startswith(".") else spec
        for name, spec in config["graphs"].items()
    }
    config["dependencies"] = [
        absolute(dep) if dep.startswith(".") else dep for dep in config.get("dependencies", [])
    ]
    if isinstance(config.get("env"), str):
        config["env"] = absolute(config["env"])
    path = workdir / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


def start_dev_server(tmp: Path, home: Path) -> DevServer:
    """Start `langgraph dev` on the project's graphs and wait until it answers /ok."""
    env = server_env(home)
    cli = shutil.which("langgraph", path=env["PATH"])
    if cli is None:
        pytest.skip("langgraph CLI not installed (pip install -e '.[dev]')")
    workdir = tmp / "server"
    workdir.mkdir()
    config_path = project_config(workdir)
    log_path = tmp / "langgraph-dev.log"
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                cli,
                "dev",
                "--no-browser",
                "--no-reload",
                "--port",
                str(port),
                "--config",
                str(config_path),
            ],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DevServer(process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"langgraph dev exited with {process.returncode}:\n{server.log()}")
        # The server moves to another port if ours was taken meanwhile: read it from the log.
        if not server.url and (match := re.search(r"API: (http://[\w.]+:\d+)", server.log())):
            server.url = match.group(1)
        if server.url:
            try:
                with urllib.request.urlopen(f"{server.url}/ok", timeout=2) as response:
                    if response.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"langgraph dev not ready after {READY_TIMEOUT:g} s:\n{server.log()}")


def prebuild_sandbox_factory(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the sandbox factory in ``home`` so the server loads it instead of building it."""
    from rlm_graph.repl import session as sandbox

    monkeypatch.setenv("RLM_GRAPH_HOME", str(home))
    home.mkdir(parents=True, exist_ok=True)
    path = Path(sandbox._factory_path())
    factory = sandbox.sandbox_factory()  # cached per process: may come from another home
    if not path.exists():
        factory.save(str(path))


@pytest.fixture
def stub_model() -> Iterator[StubServer]:
    server = StubServer(responder, host="127.0.0.1").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dev_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevServer]:
    pytest.importorskip("langgraph_sdk")
    pytest.importorskip("langgraph_api")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    home = tmp_path / "rlm-home"
    prebuild_sandbox_factory(home, monkeypatch)
    server = start_dev_server(tmp_path, home)
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
