"""``rlm run``: in-process through ``main`` against the stub, plus one real subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import Script, rlm, stub_flags, tool

from rlm_graph.cli import run as cli_run
from rlm_graph.cli.common import EXIT_HELP, flag_values, settings_from
from rlm_graph.cli.main import build_parser
from rlm_graph.cli.run import RunRequest, run_request
from rlm_graph.offline.stub_server import Responder, StubReply, StubServer

Start = Callable[[Responder], StubServer]
JSON_KEYS = {"answer", "iterations", "sub_calls", "tokens", "seconds", "status"}


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


def test_rlm_model_is_the_default_root_model(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MODEL", "from-the-environment")
    server = stub(Script([tool("FINAL(1)")]))
    argv = ["run", "--base-url", server.base_url, "--sub-model", "stub-sub", "--context"]
    status, out, _ = rlm(capsys, *argv, str(notes), "Q?")
    assert (status, out) == (0, "1\n")
    assert [r.body["model"] for r in server.requests] == ["from-the-environment"]


def test_model_failure_is_one_error_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    server = stub(lambda body: StubReply(status=400, error="no such model"))
    status, out, err = rlm(capsys, "run", *stub_flags(server), "--context", str(notes), "Q?")
    assert (status, out) == (1, "")
    assert err.splitlines()[-1].startswith("rlm: error: ")
    assert err.splitlines()[-1].endswith(
        f"Error code: 400 - no such model ({server.base_url}/chat/completions)"
    )
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


def test_a_typed_request_runs_as_the_flags_do(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    # What `llm rlm` hands over: unset flags are None and keep the settings' defaults.
    server = stub(Script([tool("print(len(context))"), "FINAL(2000)"]))
    flags = {"sub_model": "stub-sub", "base_url": server.base_url, "max_depth": None}
    request = RunRequest(
        question="How long?", context=str(notes), model="stub-root", settings=flags, as_json=True
    )
    assert run_request(request) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["answer"] == "2000"  # FINAL written in text is text
    assert "rlm: iteration 2 (depth 0)" in err  # progress, since the request is not quiet


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


def test_without_a_thread_the_context_is_needed(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = rlm(capsys, "run", "--base-url", "http://127.0.0.1:9/v1", "Q?")
    assert (status, out) == (2, "")
    assert err.splitlines() == [
        "rlm: error: --context is needed (a file, a folder, or - for stdin)"
    ]


def test_the_exit_codes_in_help_are_the_readmes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = rlm(capsys, "run", "--help")
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert status == 0
    assert EXIT_HELP in " ".join(out.split())  # as printed, wrapped
    assert EXIT_HELP in " ".join(readme.split())


def test_a_model_the_server_does_not_list_exits_2_naming_what_it_serves(
    capsys: pytest.CaptureFixture[str], stub: Callable[..., StubServer], notes: Path
) -> None:
    server = stub(lambda body: "unused", models=("qwen2.5-coder", "llama3"))
    flags = ["--base-url", server.base_url, "--model", "qwen-coder", "--sub-model", "llama3"]
    status, out, err = rlm(capsys, "run", *flags, "--context", str(notes), "Q?")
    assert (status, out) == (2, "")
    assert err.splitlines() == [
        f"rlm: error: {server.base_url} does not serve model 'qwen-coder'; it serves: "
        "llama3, qwen2.5-coder (see --model)"
    ]
    assert server.requests == []  # stopped before the first step


def test_an_unknown_provider_exits_2_listing_the_known_ones(
    capsys: pytest.CaptureFixture[str], notes: Path
) -> None:
    status, out, err = rlm(capsys, "run", "--model", "opnai:gpt-5", "--context", str(notes), "Q?")
    assert (status, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("rlm: error: cannot use model 'opnai:gpt-5': 'opnai' is not a provider")
    assert "anthropic, " in line and ", openai, " in line and "--base-url" in line
    assert "model_provider" not in line  # a parameter the CLI has no flag for


def test_an_unreachable_server_exits_2_naming_its_url(
    capsys: pytest.CaptureFixture[str], notes: Path
) -> None:
    flags = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]  # port 9: nothing listens
    status, out, err = rlm(capsys, "run", *flags, "--context", str(notes), "Q?")
    assert (status, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("rlm: error: cannot reach http://127.0.0.1:9/v1/models: ConnectError")
    assert line.endswith("(is the server running, and --base-url right?)")


def test_a_password_in_a_base_url_is_never_printed(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    secret = "hunter2-url-password"
    flags = ["--model", "m", "--context", str(notes)]
    unreachable = f"http://user:{secret}@127.0.0.1:9/v1"  # port 9: nothing listens
    status, _, err = rlm(capsys, "run", "--base-url", unreachable, *flags, "Q?")
    assert status == 2
    assert "cannot reach http://user:***@127.0.0.1:9/v1/models" in err

    server = stub(lambda body: StubReply(status=400, error="no such model"))
    failing = server.base_url.replace("http://", f"http://user:{secret}@")
    status, _, err = rlm(capsys, "run", "--base-url", failing, *flags, "Q?")
    assert status == 1
    assert err.endswith(f"({failing.replace(secret, '***')}/chat/completions)\n")
    assert secret not in err


# -- rlm run --checkpoint ----------------------------------------------------------------


def test_thread_needs_a_checkpoint(capsys: pytest.CaptureFixture[str], notes: Path) -> None:
    status, _, err = rlm(capsys, "run", "--thread", "t1", "--context", str(notes), "q?")
    assert status == 2
    assert err.strip() == (
        "rlm: error: --thread needs --checkpoint FILE: a thread lives in a checkpoint file"
    )


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
    status, out, err = rlm(capsys, "run", *flags, "Still there?")  # no --context: the thread's
    assert status == 0 and out.strip() == "2000"
    assert "resuming" not in err  # a new question on the thread, not a resume
    status, out, _ = rlm(capsys, "threads", "--checkpoint", db)
    assert status == 0
    assert out.split() == [thread, "answered", "1", "it", "Still", "there?"]


def test_trace_and_prices_mistakes_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path, tmp_path: Path
) -> None:
    server = stub(Script(["FINAL(1)"]))
    bad_trace = str(tmp_path / "no-such-dir" / "run.jsonl")
    argv = ["run", *stub_flags(server), "--trace", bad_trace, "--context", str(notes), "q"]
    status, out, err = rlm(capsys, *argv)
    assert (status, out) == (2, "")
    assert err.startswith("rlm: error: cannot write the trace") and len(err.splitlines()) == 1
    (tmp_path / "prices.json").write_text("{nope")
    argv = ["run", *stub_flags(server), "--prices", str(tmp_path / "prices.json")]
    status, _, err = rlm(capsys, *argv, "--context", str(notes), "q")
    assert status == 2 and "is not JSON" in err and len(err.splitlines()) == 1


def test_ctrl_c_on_a_durable_run_says_how_to_resume(
    capsys: pytest.CaptureFixture[str],
    stub: Start,
    notes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_run, "run_graph", interrupted)
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
    monkeypatch.setattr(cli_run, "open_terminal", lambda: (answers, shown))
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
    monkeypatch.setattr(cli_run, "open_terminal", lambda: (io.StringIO("e\n"), io.StringIO()))
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


def test_local_server_flags_reach_the_run(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    server = stub(Script(["FINAL(ok)"]))
    flags = ("--no-tool-calling", "--sub-model-window-tokens", "4000", "--model-timeout", "7")
    status, _, err = rlm(
        capsys, "run", *stub_flags(server), *flags, "--quiet", "--context", str(notes), "q?"
    )
    assert status == 0, err
    (request,) = server.requests
    assert "tools" not in request.body
    assert "whose window is 4,000 tokens" in json.dumps(request.body)


def test_local_makes_a_run_free_and_each_flag_still_wins(
    capsys: pytest.CaptureFixture[str], stub: Start, notes: Path
) -> None:
    server = stub(Script([tool("FINAL(1)")]))
    argv = ["run", *stub_flags(server), "--local", "--context", str(notes), "Q"]
    status, _, err = rlm(capsys, *argv, "--max-concurrency", "5")
    assert status == 0
    assert "$0 (free, local)" in err.splitlines()[-2]
    assert server.requests[0].body["max_tokens"] == 2048

    args = build_parser().parse_args([*argv[:-1], "--max-concurrency", "5", "Q"])
    settings = settings_from(args.model, flag_values(args), None)
    assert (settings.server_profile, settings.max_concurrency) == ("local", 5)
    assert (settings.model_timeout, settings.model_max_retries) == (600, 0)


def test_help_shows_what_each_profile_gives(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = rlm(capsys, "run", "--help")
    text = " ".join(out.split())
    assert status == 0
    assert "16 for a hosted API, 2 for a local server" in text
    assert "180 s for a hosted API, 600 s for a local server" in text
    assert "2 for a hosted API, 0 for a local server" in text
    assert "0 for a hosted API, 2048 for a local server" in text
    assert "--local the model server is one you run yourself" in text
