"""The ``rlm`` command: in-process through ``main`` against the stub, plus one real subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support import Script, tool

from rlm_graph.cli import main as cli
from rlm_graph.cli.main import demo_settings, main, run_graph
from rlm_graph.observe.progress import (
    LineReporter,
    LiveReporter,
    Progress,
    Silent,
    advance,
    reporter_for,
    status_line,
)
from rlm_graph.offline import demo
from rlm_graph.offline.stub_server import Responder, StubReply, StubServer
from rlm_graph.storage.contexts import store_value

Start = Callable[[Responder], StubServer]
JSON_KEYS = {"answer", "iterations", "sub_calls", "tokens", "seconds", "status"}


def rlm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stub_flags(server: StubServer) -> list[str]:
    return ["--model", "stub-root", "--sub-model", "stub-sub", "--base-url", server.base_url]


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("the quick brown fox\n" * 100)
    return path


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may depend on (or leak) a real key or a model chosen by the environment."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RLM_MODEL", raising=False)


# -- rlm run ----------------------------------------------------------------------------


def test_run_json_has_every_key_and_counts_sub_calls(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    code = "reply = await llm_query('Shout: ' + context[:9])\nprint(reply)"
    server = stub(Script([tool(code), "FINAL_VAR(reply)"], sub=str.upper))
    status, out, err = rlm(
        capsys, "run", *stub_flags(server), "--json", "--quiet", "--context", str(notes), "Shout?"
    )
    assert status == 0, err
    result = json.loads(out)
    assert set(result) >= JSON_KEYS
    assert result["status"] == "answered"
    assert result["answer"] == "SHOUT: THE QUICK"
    assert (result["iterations"], result["sub_calls"]) == (2, 1)
    assert set(result["tokens"]) == {"stub-root", "stub-sub"}
    assert err == ""


def test_context_from_stdin_decodes_bad_bytes_and_prints_only_the_answer(
    capsys: pytest.CaptureFixture[str], stub: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xc3\xa9 \xff end")))
    server = stub(Script([tool("FINAL(context)")]))
    status, out, _ = rlm(capsys, "run", *stub_flags(server), "--context", "-", "Echo it")
    assert status == 0
    assert out == "café \ufffd end\n"


def test_directory_context_is_a_dict_of_relative_paths(
    capsys: pytest.CaptureFixture[str], stub: Start, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.md").write_text("beta")
    (tmp_path / ".hidden").write_text("skipped")
    server = stub(Script([tool("FINAL({k: len(v) for k, v in context.items()})")]))
    status, out, _ = rlm(
        capsys, "run", *stub_flags(server), "--json", "--context", str(tmp_path), "Sizes?"
    )
    assert status == 0
    assert json.loads(out)["answer"] == {"a.txt": 5, "sub/b.md": 4}


def test_budget_exhausted_exits_3_with_a_marked_best_effort_answer(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    server = stub(Script([tool("x = 1"), "best guess: 7"]))
    argv = ["run", *stub_flags(server), "--max-iterations", "1", "--context", str(notes), "N?"]
    status, out, _ = rlm(capsys, *argv)
    assert status == 3
    marker, answer = out.splitlines()
    assert marker == "[budget exhausted after 1 iteration: best-effort answer]"
    assert answer == "best guess: 7"

    status, out, _ = rlm(capsys, *argv, "--json")
    assert (status, json.loads(out)["status"]) == (3, "budget_exhausted")


def test_model_failure_is_one_error_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    server = stub(lambda body: StubReply(status=400, error="no such model"))
    status, out, err = rlm(capsys, "run", *stub_flags(server), "--context", str(notes), "Q?")
    assert (status, out) == (1, "")
    assert err.splitlines()[-1].startswith("rlm: error: ")
    assert err.splitlines()[-1].endswith("Error code: 400 - no such model")
    assert "Traceback" not in err

    status, out, _ = rlm(capsys, "run", *stub_flags(server), "--json", "--context", str(notes), "Q")
    assert status == 1
    assert json.loads(out)["status"] == "failed"


def test_progress_goes_to_stderr_unless_quiet(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    server = stub(Script([tool("print(len(context))"), "FINAL(2000)"]))
    argv = ["run", *stub_flags(server), "--context", str(notes), "How long?"]
    status, out, err = rlm(capsys, *argv)
    assert (status, out) == (0, "2000\n")
    assert "rlm: iteration 1 (depth 0)" in err.splitlines()
    assert "rlm:   > print(len(context))" in err.splitlines()
    assert "rlm: iteration 2 (depth 0)" in err.splitlines()
    summary = err.splitlines()[-2:]
    assert summary[0].startswith("rlm: answered in 2 iterations, 0 sub-calls")
    assert "(no price for stub-root: see --prices)" in summary[0]
    assert summary[1].startswith("rlm:   stub-root: 2 calls, ")

    status, out, err = rlm(capsys, *argv, "--quiet")
    assert (status, out, err) == (0, "2000\n", "")


# -- usage errors: before any work, one line, exit 2 ------------------------------------


def test_missing_key_without_base_url_names_both_fixes(
    capsys: pytest.CaptureFixture[str], notes: Path
) -> None:
    status, out, err = rlm(capsys, "run", "--context", str(notes), "What?")
    assert (status, out) == (2, "")
    (line,) = err.splitlines()
    assert "OPENAI_API_KEY" in line and "--base-url" in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--context", "/no/such/file.txt", "Q?"], "does not exist"),
        (["--max-iterations", "0", "--context", "{notes}", "Q?"], "max_iterations=0"),
        (["--cell-timeout", "-1", "--context", "{notes}", "Q?"], "cell_timeout=-1"),
        (["--context", "{notes}", "   "], "question is empty"),
        (["--max-depth", "two", "--context", "{notes}", "Q?"], "invalid int value"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], notes: Path, argv: list[str], expected: str
) -> None:
    flags = ["--base-url", "http://127.0.0.1:9/v1"]  # never contacted: checks come first
    argv = [arg.format(notes=notes) for arg in argv]
    status, out, err = rlm(capsys, "run", *flags, *argv)
    assert (status, out) == (2, "")
    (line,) = err.splitlines()
    assert "error:" in line and expected in line


def test_no_command_and_bad_demo_size_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert rlm(capsys)[0] == 2
    status, _, err = rlm(capsys, "demo", "--size-mb", "0")
    assert status == 2 and len(err.splitlines()) == 1


# -- progress display -------------------------------------------------------------------


def test_progress_folds_events_of_the_whole_tree() -> None:
    usage = {"m": {"input_tokens": 10, "output_tokens": 5}}
    progress = Progress()
    for event in [
        {"event": "iteration", "iteration": 3, "depth": 0},
        {"event": "cell", "depth": 0, "code_line": "x = 1"},
        {"event": "sub_call_start", "depth": 1},
        {"event": "sub_call_start", "depth": 1},
        {"event": "iteration", "iteration": 1, "depth": 1, "path": ["a"]},
        {"event": "reply", "depth": 1, "usage": usage, "path": ["a"]},
        {"event": "sub_call_end", "depth": 1, "usage": usage},
    ]:
        progress = advance(progress, event)
    assert progress == Progress(3, 1, "x = 1", in_flight=1, finished=1, tokens=30)
    assert status_line(progress) == (
        "iteration 3 · depth 1 · sub-calls 1 in flight, 1 done · 30 tokens"
    )


def test_terminal_reporter_draws_a_live_view_and_removes_it() -> None:
    screen = io.StringIO()
    reporter = LiveReporter(Console(file=screen, force_terminal=True, width=100))
    reporter.custom({"event": "iteration", "iteration": 1, "depth": 0})
    reporter.custom({"event": "cell", "depth": 0, "code_line": "print(len(context))"})
    reporter.custom({"event": "sub_call_start", "depth": 1})
    reporter.values({"sub_calls": 5})
    reporter.close()
    text = screen.getvalue()
    assert "iteration 1" in text and "> print(len(context))" in text
    assert "sub-calls 0 in flight, 5 done" in text
    assert text.endswith("\x1b[1A\x1b[2K")  # the view is erased when the run ends
    idle = io.StringIO()
    LiveReporter(Console(file=idle, force_terminal=True)).close()  # failed before any event
    assert idle.getvalue() == ""


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.totals: list[int] = []

    def custom(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def values(self, state: dict[str, Any]) -> None:
        self.totals.append(state.get("sub_calls", 0))

    def close(self) -> None:
        self.events.append({"event": "closed"})


def test_sub_call_events_from_the_background_thread_reach_the_display(stub: Start) -> None:
    code = "answers = await llm_batch(['a', 'b', 'c'])\nFINAL(answers)"
    server = stub(Script([tool(code)], sub=str.upper))
    recorder = Recorder()
    ref = store_value("some context")
    result = run_graph("Upper?", ref, demo_settings(server.base_url), recorder)
    assert result.answer == ["A", "B", "C"]
    kinds = [event["event"] for event in recorder.events]
    assert kinds[:3] == ["iteration", "reply", "cell"] and kinds[-2:] == ["final", "closed"]
    assert kinds.count("sub_call_start") == kinds.count("sub_call_end") == 3
    assert recorder.totals[-1] == 3


def test_log_reporter_throttles_sub_call_lines() -> None:
    log = io.StringIO()
    reporter = LineReporter(log, interval=0.0)
    reporter.custom({"event": "sub_call_start", "depth": 1, "in_flight": 1})
    reporter.values({"sub_calls": 1})
    quiet = LineReporter(log, interval=3600.0)
    for n in range(50):
        quiet.custom({"event": "sub_call_start", "depth": 1, "in_flight": n})
    assert log.getvalue().splitlines() == [
        "rlm:   1 sub-call in flight",
        "rlm:   1 sub-call so far",
    ]


# -- rlm demo ---------------------------------------------------------------------------


def test_demo_says_it_is_offline_and_gets_the_answer_right(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = rlm(capsys, "demo", "--size-mb", "0.3")
    assert status == 0, out + err
    assert out.startswith(
        "Offline demo: root and sub model are a scripted stand-in at http://127.0"
    )
    expected = demo.make_context(0.3).expected()
    answer = next(line for line in out.splitlines() if line.startswith("Answer: "))
    assert json.loads(answer.removeprefix("Answer: ")) == expected
    assert "Check: correct" in out
    assert "rlm run --base-url" in out and "OPENAI_API_KEY" in out
    assert "rlm: iteration 3 (depth 0)" in err


def test_sub_model_stand_in_counts_what_the_generator_planted() -> None:
    context = demo.make_context(0.2, seed=11)
    prompt = f"{demo.CLASSIFY_INSTRUCTION}\n<<<\n{context.text}\n>>>"
    reply = demo.respond(
        {"model": demo.SUB_MODEL, "messages": [{"role": "user", "content": prompt}]}
    )
    assert json.loads(str(reply)) == context.errors_by_cause
    assert str(context.magic_number) in context.text


def test_console_script_runs_the_demo_as_json() -> None:
    script = Path(sys.executable).with_name("rlm")
    done = subprocess.run(
        [str(script), "demo", "--size-mb", "0.3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) >= JSON_KEYS
    assert (result["status"], result["correct"], result["offline"]) == ("answered", True, True)
    assert result["sub_calls"] >= 2
    assert "Offline demo" in done.stderr


# -- rlm run --checkpoint / rlm threads ------------------------------------------------------


def test_thread_needs_a_checkpoint(capsys: pytest.CaptureFixture[str], notes: Path) -> None:
    status, _, err = rlm(capsys, "run", "--thread", "t1", "--context", str(notes), "q?")
    assert status == 2
    assert err.strip() == (
        "rlm: error: --thread needs --checkpoint FILE: a thread lives in a checkpoint file"
    )


def test_threads_of_a_missing_file_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = rlm(capsys, "threads", "--checkpoint", str(tmp_path / "none.sqlite"))
    assert status == 2 and "no checkpoint file at" in err


def test_follow_up_on_a_thread_keeps_the_sandbox(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path, tmp_path: Path
) -> None:
    server = stub(Script([tool("kept = len(context)"), "FINAL_VAR(kept)"]))
    db = str(tmp_path / "cli.sqlite")
    flags = [*stub_flags(server), "--checkpoint", db, "--quiet", "--context", str(notes)]
    status, out, err = rlm(capsys, "run", *flags, "How long?")
    assert status == 0 and out.strip() == "2000"
    thread = err.split("--thread ")[1].split(")")[0]
    server_two = stub(Script(["FINAL_VAR(kept)"]))
    flags = [*stub_flags(server_two), "--checkpoint", db, "--thread", thread, "--quiet"]
    status, out, err = rlm(capsys, "run", *flags, "--context", str(notes), "Still there?")
    assert status == 0 and out.strip() == "2000"
    assert "resuming" not in err  # a new question on the thread, not a resume
    status, out, _ = rlm(capsys, "threads", "--checkpoint", db)
    assert status == 0
    assert out.split() == [thread, "answered", "1", "it", "Still", "there?"]


def test_trace_and_view_mistakes_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path, tmp_path: Path
) -> None:
    server = stub(Script(["FINAL(1)"]))
    bad_trace = str(tmp_path / "no-such-dir" / "run.jsonl")
    argv = ["run", *stub_flags(server), "--trace", bad_trace, "--context", str(notes), "q"]
    status, out, err = rlm(capsys, *argv)
    assert (status, out) == (2, "")
    assert err.startswith("rlm: error: cannot write the trace") and len(err.splitlines()) == 1
    status, _, err = rlm(capsys, "view", str(tmp_path / "missing.jsonl"))
    assert status == 2 and err.startswith("rlm: error: cannot read the trace")
    (tmp_path / "prices.json").write_text("{nope")
    argv = ["run", *stub_flags(server), "--prices", str(tmp_path / "prices.json")]
    status, _, err = rlm(capsys, *argv, "--context", str(notes), "q")
    assert status == 2 and "is not JSON" in err and len(err.splitlines()) == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_live_on_a_terminal_plain_in_a_log_and_silent_when_quiet() -> None:
    assert isinstance(reporter_for(quiet=False, stream=Terminal()), LiveReporter)
    assert isinstance(reporter_for(quiet=False, stream=io.StringIO()), LineReporter)
    assert isinstance(reporter_for(quiet=True, stream=Terminal()), Silent)


def test_ctrl_c_on_a_durable_run_says_how_to_resume(
    capsys: pytest.CaptureFixture[str],
    stub: Start,
    notes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_graph", interrupted)
    server = stub(Script(["FINAL(1)"]))
    db = str(tmp_path / "c.sqlite")
    flags = [*stub_flags(server), "--checkpoint", db, "--thread", "t9", "--context", str(notes)]
    status, _, err = rlm(capsys, "run", *flags, "q?")
    assert status == 130
    assert err.strip().endswith("run the same command with --thread t9 to continue")


# -- rlm run --approve-code ----------------------------------------------------------------


def test_approve_code_asks_at_the_terminal_and_the_model_hears_a_refusal(
    capsys: pytest.CaptureFixture[str],
    stub: Start,
    notes: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown = io.StringIO()
    answers = io.StringIO("n\ntoo broad\ny\n")
    monkeypatch.setattr(cli, "open_terminal", lambda: (answers, shown))
    script = Script([tool("import os\nos.listdir('/')"), tool("n = len(context)"), "FINAL_VAR(n)"])
    server = stub(script)
    status, out, _ = rlm(
        capsys, "run", *stub_flags(server), "--approve-code", "--context", str(notes), "How long?"
    )
    assert status == 0 and out.strip() == "2000"
    assert "  | import os\n  | os.listdir('/')\n" in shown.getvalue()
    assert "  | n = len(context)\n" in shown.getvalue()
    assert "rejected this code before it ran (too broad)" in json.dumps(server.requests[1].body)


def test_approve_code_edits_with_the_editor(
    capsys: pytest.CaptureFixture[str],
    stub: Start,
    notes: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "open_terminal", lambda: (io.StringIO("e\n"), io.StringIO()))
    monkeypatch.setenv("EDITOR", 'sh -c \'printf "n = 7" > "$0"\'')
    server = stub(Script([tool("n = len(context)"), "FINAL_VAR(n)"]))
    status, out, _ = rlm(
        capsys, "run", *stub_flags(server), "--approve-code", "--context", str(notes), "n?"
    )
    assert status == 0 and out.strip() == "7"


def test_approve_code_without_a_terminal_is_a_usage_error(notes: Path) -> None:
    # A new session has no controlling terminal: /dev/tty cannot be opened.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlm_graph.cli.main",
            "run",
            "--approve-code",
            "--context",
            str(notes),
            "q?",
        ],
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "rlm: error: --approve-code asks at a terminal, and this process has none"
    )
