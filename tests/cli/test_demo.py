"""``rlm demo``: the real stack offline against the scripted stand-in (in process, as a script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import rlm

from rlm_graph.cli.demo import rlm_command
from rlm_graph.offline import demo

JSON_KEYS = {"answer", "iterations", "sub_calls", "tokens", "seconds", "status"}


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
    assert ", $0 (free, local), " in out  # the stand-ins are priced, not "cost unknown"
    assert "rlm run --base-url" in out and "OPENAI_API_KEY" in out
    assert "rlm: iteration 3 (depth 0)" in err


def test_the_next_step_names_rlm_as_the_shell_will_find_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = Path(sys.executable).with_name("rlm")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(script.parent))
    assert rlm_command() == "rlm"
    monkeypatch.setenv("PATH", str(tmp_path))  # `make demo`: the venv is not activated
    assert rlm_command() == str(script)


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


def test_a_bad_demo_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = rlm(capsys, "demo", "--size-mb", "0")
    assert status == 2 and len(err.splitlines()) == 1
