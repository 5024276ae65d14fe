"""Durable runs: kill and resume, rebuild in a new registry, fork, approval, checkpoint size."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from support import Script, fast_settings, replies_so_far, tool, wait_for

from rlm_graph import build_graph, reference
from rlm_graph.graph.approval import ApprovalError, review
from rlm_graph.graph.state import Step
from rlm_graph.offline.stub_server import (
    Responder,
    StubReply,
    StubServer,
    is_root_request,
    last_user_text,
)
from rlm_graph.repl.registry import REGISTRY
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import blob_dir, context_file
from rlm_graph.storage.persistence import open_persistence
from rlm_graph.storage.records import forget_cached_records

Start = Callable[..., StubServer]


def forget_process_state(sandbox_id: str) -> None:
    """What a new process would not have: the live session and the record cache."""
    REGISTRY.release(sandbox_id)
    forget_cached_records()


def config(thread: str, **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, **configurable}, "recursion_limit": 60}


# -- kill -9 in the middle of a batch, resume in a new process ----------------------------

BATCH = [f"item {i}" for i in range(8)]
KILL_SCRIPT = [
    tool("x = 21\nprint('x set')"),
    tool("answers = await llm_batch([f'item {i}' for i in range(8)])\nprint(answers)"),
    tool("total = x * 2 + len(answers)\nprint(total)"),
    "FINAL_VAR(total)",
]


class HangingModel:
    """Root replies by iteration from a script; chosen sub-calls hang until released."""

    def __init__(
        self,
        script: list[StubReply | str],
        hangs: Callable[[str], bool],
        answer: Callable[[str], str],
    ) -> None:
        self.script, self.hangs, self.answer = script, hangs, answer
        self.root_turns: list[int] = []
        self.sub_prompts: list[str] = []
        self.hang = True
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        if is_root_request(body):
            turn = replies_so_far(body)
            with self._lock:
                self.root_turns.append(turn)
            return self.script[min(turn, len(self.script) - 1)]
        prompt = last_user_text(body)
        with self._lock:
            self.sub_prompts.append(prompt)
        if self.hang and self.hangs(prompt):
            self.release.wait(60)
        return self.answer(prompt)


def killable_model() -> HangingModel:
    """Sub-calls for odd items hang."""
    return HangingModel(
        KILL_SCRIPT, lambda p: int(p.split()[-1]) % 2 == 1, lambda p: f"answer to {p}"
    )


def memo_rows(target: str) -> int:
    """Sub-call answers already stored durably (the store table of the checkpoint)."""
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target) as conn:
            row = conn.execute(
                "SELECT count(*) FROM store WHERE prefix LIKE 'rlm_graph.memo.%'"
            ).fetchone()
    else:
        with sqlite3.connect(target, timeout=30) as conn:
            row = conn.execute(
                "SELECT count(*) FROM store WHERE prefix LIKE 'rlm_graph.memo.%'"
            ).fetchone()
    return int(row[0]) if row else 0


def rlm_process(server: StubServer, target: str, context: Path, thread: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlm_graph.cli.main",
        "run",
        "--model",
        "stub-root",
        "--sub-model",
        "stub-sub",
        "--base-url",
        server.base_url,
        *("--server-profile", "hosted"),  # 16 concurrent sub-calls: the batch's hang test
        "--checkpoint",
        target,
        "--thread",
        thread,
        "--context",
        str(context),
        "What is the total?",
    ]


def kill_and_resume(stub: Start, tmp_path: Path, target: str) -> None:
    model = killable_model()
    server = stub(model)
    context = tmp_path / "numbers.txt"
    context.write_text("irrelevant context\n" * 50)
    argv = rlm_process(server, target, context, "crash-1")
    env = {**os.environ, "LANGSMITH_TRACING": "false"}
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        # Killed while a batch is in flight: 4 answers stored, 4 requests still hanging.
        wait_for(lambda: len(model.sub_prompts) == 8, "the batch to be in flight")
        wait_for(lambda: memo_rows(target) == 4, "4 answers to be stored")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
        model.hang = False
        model.release.set()
    assert first.returncode == -signal.SIGKILL
    assert model.root_turns == [0, 1]

    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "50"
    assert "resuming thread crash-1 after iteration 1" in second.stderr
    # No completed step was paid twice: each root turn once, each answered prompt once;
    # only the four prompts that were in flight at the kill were asked again.
    assert model.root_turns == [0, 1, 2, 3]
    asked = Counter(model.sub_prompts)
    assert {p: asked[p] for p in BATCH} == {p: 1 + int(p.split()[-1]) % 2 for p in BATCH}

    threads = subprocess.run(
        [sys.executable, "-m", "rlm_graph.cli.main", "threads", "--checkpoint", target, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    rows = [json.loads(line) for line in threads.stdout.splitlines()]
    assert [(r["thread"], r["status"], r["iterations"]) for r in rows] == [
        ("crash-1", "answered", 4)
    ]


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume_sqlite(stub: Start, tmp_path: Path) -> None:
    kill_and_resume(stub, tmp_path, str(tmp_path / "run.sqlite"))


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume_postgres(
    stub: Start, tmp_path: Path, postgres_url: str
) -> None:
    kill_and_resume(stub, tmp_path, postgres_url)


# -- a thread handed over between two server workers ---------------------------------------

HANDOVER_SCRIPT = [
    tool("x = await llm_query('fast one')\nprint(x)"),
    tool("y = await llm_query('slow one')\nprint(y)"),
    tool("total = f'{x}+{y}'\nprint(total)"),
    "FINAL_VAR(total)",
]


def handover_model() -> HangingModel:
    """The 'slow one' sub-call hangs."""
    return HangingModel(HANDOVER_SCRIPT, lambda p: p == "slow one", lambda p: p.split()[0])


def worker_env(home: Path) -> dict[str, str]:
    """A server worker of its own: its own cache home, holding only the sandbox runtime.

    The runtime snapshot is an install-time cache (like a wheel), not thread state: it
    is copied so the test does not spend 15 s rebuilding it.
    """
    home.mkdir()
    for runtime in Path(os.environ["RLM_GRAPH_HOME"]).glob("eryx-factory-*.bin"):
        shutil.copy(runtime, home / runtime.name)
    return {**os.environ, "LANGSMITH_TRACING": "false", "RLM_GRAPH_HOME": str(home)}


@pytest.mark.slow
def test_a_thread_moves_to_another_worker_when_its_worker_dies(
    stub: Start, tmp_path: Path, postgres_url: str
) -> None:
    """What the LangGraph server does when a worker dies, on one PostgreSQL saver + store.

    Worker A is SIGKILLed during a slow sub-call and its home is deleted; worker B, with
    a home of its own, resumes the same run and thread: it rebuilds the sandbox by replay
    and asks only the prompt that was in flight again.
    """
    model = handover_model()
    server = stub(model)
    context = tmp_path / "context.txt"
    context.write_text("some context\n" * 20)
    argv = rlm_process(server, postgres_url, context, "handover")
    home_a, home_b = tmp_path / "worker-a", tmp_path / "worker-b"
    worker_a = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=worker_env(home_a)
    )
    try:
        wait_for(lambda: "slow one" in model.sub_prompts, "the slow sub-call to be in flight")
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait(30)
    finally:
        if worker_a.poll() is None:
            worker_a.kill()
        model.release.set()
    shutil.rmtree(home_a)  # nothing on A's disk may be needed

    worker_b = subprocess.run(
        argv, capture_output=True, text=True, env=worker_env(home_b), timeout=180
    )
    assert worker_b.returncode == 0, worker_b.stderr
    assert worker_b.stdout.strip() == "fast+slow"
    assert "resuming thread handover after iteration 1" in worker_b.stderr
    assert model.root_turns == [0, 1, 2, 3]  # no root step was asked twice
    assert Counter(model.sub_prompts) == {"fast one": 1, "slow one": 2}


# -- a new process rebuilds the sandbox from the checkpoint --------------------------------

DEFINE = (
    "import random\n"
    "class Counter:\n"
    "    def __init__(self, start):\n"
    "        self.n = start\n"
    "    def bump(self):\n"
    "        self.n += 1\n"
    "        return self.n\n"
    "def square(v):\n"
    "    return v * v\n"
    "c = Counter(await llm_query('start?') == 'ten' and 10)\n"
    "c.bump()\n"
    "draw = random.random()\n"
    "table = {k: square(k) for k in range(5)}"
)
PROBE = "print(repr((type(c).__name__, c.n, Counter(5).bump(), square(7), table, draw)))"


def probe_model(sub_calls: list[str]) -> Responder:
    """Turn 1 defines and probes; a follow-up question only probes."""
    first = [tool(DEFINE), tool(PROBE), "FINAL_VAR(draw)"]
    again = [tool(PROBE), "FINAL_VAR(draw)"]

    def respond(body: dict[str, Any]) -> StubReply | str:
        if not is_root_request(body):
            sub_calls.append(last_user_text(body))
            return "ten"
        script = again if "Question: again" in json.dumps(body) else first
        return script[min(replies_so_far(body), len(script) - 1)]

    return respond


def test_a_new_process_rebuilds_every_variable_from_the_checkpoint(
    stub: Start, tmp_path: Path
) -> None:
    sub_calls: list[str] = []
    server = stub(probe_model(sub_calls))
    settings = Settings(**fast_settings(server))
    with open_persistence(str(tmp_path / "t.sqlite")) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        cfg = config("rebuild")
        state = graph.invoke({"question": "q", "context": "ctx"}, cfg, context=settings)
        assert state["status"] == "answered"
        sandbox_id = graph.get_state(cfg).values["sandbox_id"]
    original = printed_probe(server)
    forget_process_state(sandbox_id)

    server.reset_log()
    with open_persistence(str(tmp_path / "t.sqlite")) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        graph.invoke({"question": "again", "context": "ctx"}, cfg, context=settings)
    # The follow-up's first cell ran in a session rebuilt by replay: same objects, same
    # random draw, and the sub-call came from the journal, not the model.
    assert printed_probe(server) == original
    assert original.startswith("('Counter', 11, 6, 49, {0: 0, 1: 1, 2: 4, 3: 9, 4: 16}, 0.")
    assert sub_calls == ["start?"]


def printed_probe(server: StubServer) -> str:
    """What the PROBE cell printed, as the root model was shown it."""
    for request in reversed(server.requests):
        for message in request.body.get("messages", []):
            if message.get("role") == "tool" and "Counter" in str(message.get("content")):
                return str(message["content"]).strip()
    raise AssertionError("no probe output was shown to the model")


# -- fork from an earlier checkpoint --------------------------------------------------------


def phased(scripts: dict[str, list[StubReply | str]], phase: list[str]) -> Responder:
    """Root replies from the script of the phase now in ``phase[0]``; sub-calls echo."""

    def respond(body: dict[str, Any]) -> StubReply | str:
        if not is_root_request(body):
            return "SUB " + last_user_text(body)
        script = scripts[phase[0]]
        return script[min(replies_so_far(body), len(script) - 1)]

    return respond


def after_first_cell(graph: Any, cfg: dict[str, Any]) -> Any:
    """The thread's checkpoint just before the plan that followed its first cell."""
    return next(
        s
        for s in graph.get_state_history(cfg)
        if s.next == ("plan",) and len(s.values.get("cells", [])) == 1
    )


def test_fork_from_an_earlier_checkpoint_rebuilds_that_sandbox(stub: Start, tmp_path: Path) -> None:
    scripts: dict[str, list[StubReply | str]] = {
        "original": [tool("x = 1"), tool("x = x + 1"), tool("x = x * 10"), "FINAL_VAR(x)"],
        "fork": ["FINAL_VAR(x)"],  # a different path from the same point
        "follow-up": [tool("print(x)"), "FINAL_VAR(x)"],
    }
    phase = ["original"]
    server = stub(phased(scripts, phase))
    settings = Settings(**fast_settings(server))
    with open_persistence(str(tmp_path / "f.sqlite")) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        cfg = config("fork")
        assert (
            graph.invoke({"question": "x?", "context": "c"}, cfg, context=settings)["answer"] == 20
        )
        final_config = graph.get_state(cfg).config
        after_first = after_first_cell(graph, cfg)
        phase[0] = "fork"
        forked = graph.invoke(None, after_first.config, context=settings)
        assert forked["answer"] == 1  # the session as it was after `x = 1`
        # The original branch is untouched and its sandbox comes back as it was.
        assert graph.get_state(final_config).values["answer"] == 20
        phase[0] = "follow-up"
        again = graph.invoke({"question": "x now?"}, final_config, context=settings)
        assert again["answer"] == 20


def test_a_fork_shares_the_memo_of_its_parent_branch(stub: Start, tmp_path: Path) -> None:
    scripts: dict[str, list[StubReply | str]] = {
        "original": [tool("x = 1"), tool("a = await llm_query('same')"), "FINAL_VAR(a)"],
        # From after `x = 1`: other code, the same prompt.
        "fork": [tool("x = 1"), tool("b = await llm_query('same')"), "FINAL_VAR(b)"],
    }
    phase = ["original"]
    server = stub(phased(scripts, phase))
    settings = Settings(**fast_settings(server))
    with open_persistence(str(tmp_path / "m.sqlite")) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        cfg = config("memo-fork")
        assert graph.invoke({"question": "a?", "context": "c"}, cfg, context=settings)["answer"]
        after_first = after_first_cell(graph, cfg)
        phase[0] = "fork"
        forked = graph.invoke(None, after_first.config, context=settings)
    assert forked["answer"] == "SUB same"
    # The fork's prompt was answered on the parent branch, after the fork point: not asked again.
    assert sum(not is_root_request(r.body) for r in server.requests) == 1


# -- a person approves, edits or rejects code ------------------------------------------------


def test_review_reads_every_documented_form() -> None:
    step = Step(kind="code", code="x = 1", reply="", tool_call_id="t")
    assert review(step, True) == step
    assert review(step, {"action": "accept"}) == step
    assert review(step, {"action": "edit", "code": "x = 2"})["code"] == "x = 2"
    rejected = review(step, {"action": "reject", "reason": "too slow"})
    assert rejected["kind"] == "note" and "too slow" in rejected["note"]
    assert review(step, "reject")["kind"] == "note"
    with pytest.raises(ApprovalError, match="cannot read the approval"):
        review(step, 42)


def test_approve_code_pauses_and_survives_a_restart(stub: Start, tmp_path: Path) -> None:
    script = Script([tool("y = 'proposed'"), tool("z = 3"), tool("print(y)"), "FINAL_VAR(y)"])
    server = stub(script)
    settings = Settings(**fast_settings(server), approve_code=True)
    db = str(tmp_path / "a.sqlite")
    cfg = config("approve")
    with open_persistence(db) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        paused = graph.invoke({"question": "y?", "context": "c"}, cfg, context=settings)
        assert paused["__interrupt__"][0].value["code"] == "y = 'proposed'"
        sandbox_id = graph.get_state(cfg).values["sandbox_id"]
    forget_process_state(sandbox_id)
    with open_persistence(db) as persistence:  # a new process takes the decision
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        resume = {"action": "edit", "code": "y = 'edited'"}
        paused = graph.invoke(Command(resume=resume), cfg, context=settings)
        assert paused["__interrupt__"][0].value["code"] == "z = 3"
        paused = graph.invoke(
            Command(resume={"action": "reject", "reason": "no"}), cfg, context=settings
        )
        assert paused["__interrupt__"][0].value["code"] == "print(y)"
        done = graph.invoke(Command(resume="accept"), cfg, context=settings)
    assert done["status"] == "answered" and done["answer"] == "edited"
    shown = json.dumps([r.body for r in server.requests])
    assert "rejected this code before it ran (no)" in shown


# -- checkpoint bytes per step do not grow with the context or the outputs ----------------


def step_bytes(db: str) -> list[int]:
    """Bytes each checkpoint and its pending writes take in the SQLite file."""
    with sqlite3.connect(db) as conn:
        writes = dict(
            conn.execute(
                "SELECT checkpoint_id, sum(length(value)) FROM writes GROUP BY checkpoint_id"
            ).fetchall()
        )
        rows = conn.execute(
            "SELECT checkpoint_id, length(checkpoint) + length(metadata) FROM checkpoints"
        ).fetchall()
    return [size + int(writes.get(cid, 0)) for cid, size in rows]


@pytest.mark.slow
@pytest.mark.parametrize("size", [1_000, 100_000_000])
def test_checkpoint_bytes_per_step_stay_small(stub: Start, tmp_path: Path, size: int) -> None:
    # ten different cells: an identical reply would not run again (issue 18)
    loud = [tool(f"print('y' * 30_000)\nv = len(context)  # {i}") for i in range(10)]
    script = Script([*loud, "FINAL_VAR(v)"])
    server = stub(script)
    path = tmp_path / "big.txt"
    with path.open("w") as out:
        block = "0123456789" * 100_000
        for _ in range(size // len(block)):
            out.write(block)
        out.write("z" * (size % len(block)))
    db = str(tmp_path / "c.sqlite")
    settings = Settings(**fast_settings(server, max_iterations=12))
    with SqliteSaver.from_conn_string(db) as saver:
        graph = build_graph(checkpointer=saver)
        state = graph.invoke(
            {"question": "len?", "context_path": str(path)}, config("size"), context=settings
        )
    assert state["answer"] == size
    sizes = step_bytes(db)
    assert len(sizes) > 30
    assert max(sizes) < 64 * 1024, sizes


def test_the_readmes_embedding_by_reference_keeps_checkpoints_small(
    stub: Start, tmp_path: Path
) -> None:
    text = "0123456789abcdef" * 500_000  # 8 MB
    server = stub(Script([tool("v = len(context)"), "FINAL_VAR(v)"]))
    settings = Settings(**fast_settings(server, max_iterations=3))
    largest = {}
    for how, sent in (("inline", {"context": text}), ("ref", {"context_ref": reference(text)})):
        db = str(tmp_path / f"{how}.sqlite")
        with SqliteSaver.from_conn_string(db) as saver:
            state = build_graph(checkpointer=saver).invoke(
                {"question": "len?", **sent}, config(how), context=settings
            )
        assert state["answer"] == len(text)
        largest[how] = max(step_bytes(db))
    assert largest["inline"] > len(text)  # the input write holds the whole string
    assert largest["ref"] < 64 * 1024, largest


# -- another machine: the context comes back from the store -----------------------------


# Past lazy_context_mb=1, with a needle past the first MiB (a line of its own: no other
# test's context).
LAZY_TEXT = f"{uuid.uuid4()}\n" + "é中😀 hay\n" * 100_000 + "needle-7\n" + "hay\n" * 1000
NEEDLE = LAZY_TEXT.encode().index(b"needle-7")
FIND = (
    "hits = await context.search('needle-[0-9]')\n"
    "n = [(h['offset'], context[h['offset']:h['offset'] + 8]) for h in hits]"
)


@pytest.mark.parametrize(
    ("text", "code", "answer", "rebuilt"),
    [
        ("x-x-x " * 1000, "n = context.count('x')", 3000, True),
        (LAZY_TEXT, FIND, [[NEEDLE, "needle-7"]], False),  # lazy: read in ranges from the store
    ],
    ids=["loaded", "lazy"],
)
def test_a_worker_without_the_local_context_reads_it_from_the_store(
    stub: Start, tmp_path: Path, text: str, code: str, answer: Any, rebuilt: bool
) -> None:
    server = stub(Script([tool(code), "FINAL_VAR(n)"]))
    settings = Settings(**fast_settings(server, lazy_context_mb=1))
    db = str(tmp_path / "w.sqlite")
    cfg = config("worker")
    with open_persistence(db) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        first = graph.invoke({"question": "x?", "context": text}, cfg, context=settings)
        assert first["answer"] == answer
        values = graph.get_state(cfg).values
    # The other machine has neither the live session, nor the record cache, nor the file.
    forget_process_state(values["sandbox_id"])
    shutil.rmtree(blob_dir(values["context_ref"]))
    with open_persistence(db) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        again = graph.invoke({"question": "x again?"}, cfg, context=settings)  # replays, reruns
    assert again["answer"] == answer
    assert context_file(values["context_ref"]).exists() == rebuilt


# -- the async savers work the same way ------------------------------------------------------


def test_async_saver_and_store_run_and_rebuild(stub: Start, tmp_path: Path) -> None:
    import asyncio

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    sub_calls: list[str] = []
    server = stub(probe_model(sub_calls))
    settings = Settings(**fast_settings(server))
    db = str(tmp_path / "async.sqlite")
    cfg = config("async")

    async def ask(question: str, context: str | None) -> dict[str, Any]:
        async with (
            AsyncSqliteSaver.from_conn_string(db) as saver,
            AsyncSqliteStore.from_conn_string(db) as store,
        ):
            await store.setup()
            graph = build_graph(checkpointer=saver, store=store)
            inputs: dict[str, Any] = {"question": question}
            if context is not None:
                inputs["context"] = context
            result: dict[str, Any] = await graph.ainvoke(inputs, cfg, context=settings)
            result["sandbox_id"] = (await graph.aget_state(cfg)).values["sandbox_id"]
            return result

    first = asyncio.run(ask("q", "ctx"))
    original = printed_probe(server)
    forget_process_state(first["sandbox_id"])
    server.reset_log()
    second = asyncio.run(ask("again", None))
    assert second["answer"] == first["answer"]
    assert printed_probe(server) == original
    assert sub_calls == ["start?"]


# -- remembered sub-call answers belong to the model that gave them ------------------------


def test_a_follow_up_with_another_sub_model_asks_again(stub: Start, tmp_path: Path) -> None:
    asked: list[str] = []

    def respond(body: dict[str, Any]) -> StubReply | str:
        if is_root_request(body):
            script = [tool("r = await llm_query('the same prompt')"), "FINAL_VAR(r)"]
            return script[min(replies_so_far(body), 1)]
        asked.append(body["model"])
        return f"said by {body['model']}"

    server = stub(respond)
    cfg = config("memo-scope")
    with open_persistence(str(tmp_path / "m.sqlite")) as persistence:
        graph = build_graph(checkpointer=persistence.checkpointer, store=persistence.store)
        answers = []
        for turn, sub_model in enumerate(["sub-a", "sub-b", "sub-a"]):
            settings = Settings(**fast_settings(server, sub_model=sub_model))
            inputs: dict[str, Any] = {"question": f"q{turn}", "context": "ctx"}
            answers.append(graph.invoke(inputs, cfg, context=settings)["answer"])
    assert answers == ["said by sub-a", "said by sub-b", "said by sub-a"]
    assert asked == ["sub-a", "sub-b"]  # the third came from the memo of sub-a's answers
