"""One writer per thread: a second ``rlm run`` on a running thread stops, or waits.

Two real processes on one checkpoint (SQLite, then PostgreSQL): the first holds the
thread while its model call waits at a gate; the second exits 2 in one line without a
model call; a third with ``--wait`` starts only when the first is done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import Script, rlm_process, stub_flags, tool, wait_for

from rlm_graph.offline.stub_server import StubReply, StubServer, all_text, is_root_request

Start = Callable[..., StubServer]


class Gated:
    """A scripted model whose root calls wait at a gate; which question each call was for."""

    def __init__(self) -> None:
        self.script = Script([tool("FINAL(len(context))")])
        self.gate = threading.Event()
        self.asked: list[str] = []  # "first" or "second", in the order the calls came

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        if is_root_request(body):
            self.asked.append("second" if "Second question?" in all_text(body) else "first")
            self.gate.wait(120)
        return self.script(body)


def run_argv(server: StubServer, target: str, context: Path, *more: str) -> list[str]:
    durable = ["--checkpoint", target, "--thread", "shared", "--context", str(context)]
    return ["run", *stub_flags(server), "--quiet", *durable, *more]


def one_writer(stub: Start, tmp_path: Path, target: str) -> None:
    model = Gated()
    server = stub(model)
    context = tmp_path / "c.txt"
    context.write_text("twelve chars")
    first = start(run_argv(server, target, context, "First question?"), tmp_path / "first.err")
    waiter = None
    try:
        wait_for(lambda: model.asked == ["first"], "the first run's model call")

        second = rlm_process(*run_argv(server, target, context, "First question?"))
        assert second.returncode == 2
        assert second.stderr.decode().splitlines() == [
            "rlm: error: thread shared is running in another process: run again when it "
            "ends, or add --wait to wait for it"
        ]
        waiter_err = tmp_path / "waiter.err"
        waiter = start(run_argv(server, target, context, "--wait", "Second question?"), waiter_err)
        wait_for(lambda: "waiting" in waiter_err.read_text(), "the waiting line")
        assert model.asked == ["first"]  # neither made a model call while the thread ran
    finally:
        model.gate.set()
        exits = [ended(process) for process in (first, waiter) if process is not None]
    assert exits == [0, 0], [p.read_text() for p in tmp_path.glob("*.err")]
    assert waiter_err.read_text().splitlines()[0] == (
        "rlm: thread shared is running in another process: waiting for it to end"
    )
    assert model.asked == ["first", "second"]


def ended(process: subprocess.Popen[bytes]) -> int:
    """Its exit code; one still running after two minutes is killed (and fails the test)."""
    try:
        return process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def start(argv: list[str], stderr: Path) -> subprocess.Popen[bytes]:
    """``rlm`` in a process of its own, its stderr to a file the test can poll."""
    with stderr.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "rlm_graph.cli.main", *argv],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "LANGSMITH_TRACING": "false"},
        )


@pytest.mark.slow
def test_one_writer_per_thread_sqlite(stub: Start, tmp_path: Path) -> None:
    one_writer(stub, tmp_path, str(tmp_path / "run.sqlite"))


@pytest.mark.slow
def test_one_writer_per_thread_postgres(stub: Start, tmp_path: Path, postgres_url: str) -> None:
    one_writer(stub, tmp_path, postgres_url)
