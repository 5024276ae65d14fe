"""``rlm threads``: the threads of a checkpoint and their status (after a run: test_run.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from support import Recorder, Script, fast_settings, rlm, tool

from rlm_graph.graph import build_graph
from rlm_graph.graph.runner import Run, run_graph
from rlm_graph.offline.stub_server import Responder, StubServer
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import store_value
from rlm_graph.storage.persistence import open_persistence

Start = Callable[[Responder], StubServer]


def test_threads_of_a_missing_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = rlm(capsys, "threads", "--checkpoint", str(tmp_path / "none.sqlite"))
    assert status == 2 and "no checkpoint file at" in err


def test_threads_tells_a_cut_off_run_from_one_waiting_for_approval(
    capsys: pytest.CaptureFixture[str], stub: Start, tmp_path: Path
) -> None:
    server = stub(Script([tool("kept = 41"), tool("FINAL(kept + 1)")]))
    db = str(tmp_path / "threads.sqlite")
    with open_persistence(db) as persistence:
        durable = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)

        def run_on(thread: str, **fields: Any) -> Run:
            settings = Settings(**fast_settings(server, **fields.pop("settings", {})))
            config: RunnableConfig = {"configurable": {"thread_id": thread}}
            context = store_value("ctx")
            return Run(
                question="q?",
                settings=settings,
                graph=durable,
                config=config,
                context_ref=context,
                **fields,
            )

        # No approver: the run stops at the first cell, paused until someone answers.
        run_graph(run_on("paused", settings={"approve_code": True}, durability="sync"))
        killed = Recorder(stop_at="cell")  # the process dies as the first cell starts
        with pytest.raises(KeyboardInterrupt):
            run_graph(run_on("cut", sink=killed, catch=True, durability="sync"))
    status, out, err = rlm(capsys, "threads", "--checkpoint", db, "--json")
    assert status == 0, err
    rows = {row["thread"]: row["status"] for row in map(json.loads, out.splitlines())}
    assert rows == {"paused": "waiting for approval", "cut": "cut off (resumable)"}
