"""Scripted models for tests: root replies chosen by iteration, sub-calls by prompt."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
from langchain_openai import ChatOpenAI
from langgraph.store.base import GetOp, Op, Result
from langgraph.store.memory import InMemoryStore
from pydantic import SecretStr

from rlm_graph.cli.main import main
from rlm_graph.graph.prompts import CHILD_QUESTION
from rlm_graph.offline.stub_server import (
    Responder,
    StubReply,
    StubServer,
    is_root_request,
    last_user_text,
    replies_so_far,
)
from rlm_graph.offline.stub_server import fenced_reply as fenced
from rlm_graph.offline.stub_server import tool_reply as tool

__all__ = [
    "AGENT_MODEL",
    "Agent",
    "CountingStore",
    "Recorder",
    "Script",
    "fast_settings",
    "fenced",
    "is_child",
    "many_files",
    "missing",
    "python_probe",
    "replies_so_far",
    "rlm",
    "rlm_process",
    "stub_flags",
    "tool",
]

SubAnswer = Callable[[str], StubReply | str]


def is_child(body: dict[str, Any]) -> bool:
    """A sub-RLM's root request (depth >= 1)."""
    return is_root_request(body) and any(
        CHILD_QUESTION in str(m.get("content")) for m in body["messages"]
    )


class Script:
    """Root replies by iteration (last one repeats), sub-calls answered by a function."""

    def __init__(
        self,
        root: Sequence[StubReply | str],
        sub: SubAnswer | None = None,
        child: Sequence[StubReply | str] | None = None,
    ) -> None:
        self.root = list(root)
        self.sub = sub or (lambda prompt: f"echo:{prompt[:40]}")
        self.child = list(child or [])

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        if is_child(body) and self.child:
            return self.child[min(replies_so_far(body), len(self.child) - 1)]
        if is_root_request(body):
            return self.root[min(replies_so_far(body), len(self.root) - 1)]
        return self.sub(last_user_text(body))


AGENT_MODEL = "agent-model"
AgentStep = StubReply | str | Callable[[dict[str, Any]], StubReply | str]


class Agent:
    """A calling agent's model (requests naming ``AGENT_MODEL``) scripted by step.

    A step is a reply, or a function of the request (e.g. one that repeats the last tool
    result); every request for another model (the RLM's) goes to ``rlm``.
    """

    def __init__(self, steps: Sequence[AgentStep], rlm: Responder) -> None:
        self.steps = list(steps)
        self.rlm = rlm

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        if body.get("model") != AGENT_MODEL:
            return self.rlm(body)
        step = self.steps[min(replies_so_far(body), len(self.steps) - 1)]
        return step(body) if callable(step) else step

    @staticmethod
    def call(tool_name: str, **arguments: Any) -> StubReply:
        """A step calling one tool."""
        return StubReply(content=None, tool_calls=[{"name": tool_name, "arguments": arguments}])

    @staticmethod
    def model(server: StubServer) -> ChatOpenAI:
        """The agent's chat model, served by the stub."""
        return ChatOpenAI(
            model=AGENT_MODEL,
            base_url=server.base_url,
            api_key=SecretStr("stub-key"),
            max_retries=0,
            timeout=10,
        )

    @staticmethod
    def requests(server: StubServer) -> list[dict[str, Any]]:
        """The request bodies the agent's own model was sent."""
        return [r.body for r in server.requests if r.body.get("model") == AGENT_MODEL]


class Recorder:
    """A sink that keeps what it was given; ``stop_at`` raises on that event (a kill)."""

    def __init__(self, stop_at: str = "", error: BaseException | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.totals: list[int] = []
        self.stop_at, self.error = stop_at, error or KeyboardInterrupt()

    def custom(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event["event"] == self.stop_at:
            raise self.error

    def values(self, state: dict[str, Any]) -> None:
        self.totals.append(state.get("sub_calls", 0))

    def close(self) -> None:
        self.events.append({"event": "closed"})

    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events]


class CountingStore(InMemoryStore):
    """A store that counts its round trips (``batches``) and the keys it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.got: list[str] = []

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        self.batches.append(len(ops))
        self.got += [op.key for op in ops if isinstance(op, GetOp)]
        return super().batch(ops)


def fast_settings(server: StubServer, **overrides: Any) -> dict[str, Any]:
    """Settings pointing both models at the stub, with short limits for tests.

    The stub plays a hosted API, although it listens on 127.0.0.1, unless a test says
    ``server_profile="auto"`` or ``"local"``.
    """
    settings: dict[str, Any] = {
        "model": "stub-root",
        "sub_model": "stub-sub",
        "base_url": server.base_url,
        "server_profile": "hosted",
        "max_iterations": 6,
        "model_timeout": 10.0,
        "model_max_retries": 0,
        "cell_timeout": 20.0,
    }
    settings.update(overrides)
    return settings


def missing(what: str) -> NoReturn:
    """A test cannot run here: it fails in CI (``CI`` set, as .ci/run does), else it skips.

    Locally a missing chromium or PostgreSQL is a reason to skip; in CI a skip would
    let the run be green without the test ever running.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI must run this test")
    pytest.skip(what)


def python_probe(code: str, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports this checkout's rlm_graph.

    For what one process cannot show about itself: a crash, a first use, its memory.
    """
    project = str(Path(__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": project, **env},
    )


def rlm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the ``rlm`` command in this process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def rlm_process(*argv: str | bytes, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """Run the ``rlm`` command in a new process (bytes in ``argv`` pass as they are)."""
    return subprocess.run(
        [sys.executable, "-m", "rlm_graph.cli.main", *argv],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "LANGSMITH_TRACING": "false"},
    )


def stub_flags(server: StubServer) -> list[str]:
    """``rlm run`` flags pointing both models at the stub, playing a hosted API."""
    return [
        *("--model", "stub-root", "--sub-model", "stub-sub", "--base-url", server.base_url),
        *("--server-profile", "hosted"),
    ]


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 90.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def many_files(folder: Path, count: int) -> Path:
    """``count`` small files in 20 subfolders, a hidden file and a link out."""
    for i in range(count):
        file = folder / f"d{i % 20:02d}" / f"f{i:04d}.txt"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"file {i} filler\n")
    (folder / ".env").write_text("TOKEN=secret\n")
    (folder / "passwd").symlink_to("/etc/passwd")
    return folder
