"""``rlm eval``: generators, scoring, the oracle, resumable runs and the offline gate.

The gate (``test_every_task_family_scores_100_percent_with_the_oracle``) runs every task
family at the sizes CI affords through the real graph, sandbox and client, with the
scripted policy as root model and the oracle as sub model: any miss is a framework bug
(a prompt cut, a chunk lost, a batch answer out of order, a sub-RLM's answer mangled).
"""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import fast_settings

from rlm_graph.cli.main import main
from rlm_graph.eval import (
    families,
    multihop,
    niah,
    oolong,
    oracle,
    policies,
    report,
    tasks,
    trec,
    windows,
)
from rlm_graph.eval.families import FAMILIES, generate
from rlm_graph.eval.plan import OFFLINE_METHODS, Plan
from rlm_graph.eval.results import ResultsFile, RunKey
from rlm_graph.eval.runner import Eval, context_chars, evaluate, forget_context
from rlm_graph.eval.scoring import score
from rlm_graph.eval.tasks import Task, format_size, parse_size
from rlm_graph.graph.prompts import CHILD_QUESTION
from rlm_graph.offline.stub_server import (
    StubServer,
    is_root_request,
    last_user_text,
    tool_outputs,
)
from rlm_graph.settings import Settings

Start = Callable[..., StubServer]
# The sizes CI affords: every family at each, at both depths (about 15 s on 2 cores).
GATE = [(8_000, (0, 1)), (131_000, (0, 1)), (1_000_000, (0,))]
MODELS = {"model": policies.POLICY_MODEL, "sub_model": oracle.ORACLE_MODEL}


def oracle_settings(server: StubServer) -> Settings:
    return Settings(
        **fast_settings(
            server, model=policies.POLICY_MODEL, sub_model=oracle.ORACLE_MODEL, cell_timeout=60.0
        )
    )


def run_plan(
    plan: Plan, settings: Settings, path: Path, generator: Callable[..., Task] = generate
) -> list[dict[str, Any]]:
    config = Eval(settings, windows.window_of(settings.model))
    bar = report.ProgressBar(plan.total, io.StringIO(), live=False)
    models = {"model": settings.model, "sub_model": settings.effective_sub_model}
    return evaluate(plan, config, ResultsFile(path, models), bar, generator)


# -- the gate ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("size", "seeds"), GATE)
def test_every_task_family_scores_100_percent_with_the_oracle(
    stub: Start, tmp_path: Path, size: int, seeds: tuple[int, ...]
) -> None:
    server = stub(policies.respond)
    plan = Plan(FAMILIES, [size], seeds, OFFLINE_METHODS)
    rows = run_plan(plan, oracle_settings(server), tmp_path / "gate.jsonl")
    assert len(rows) == plan.total == 2 * len(FAMILIES) * len(seeds)
    # status and error too: a miss seen once under load (a None answer) said nothing more
    misses = [(r["task"], r["size"], r["seed"], r["method"], r["answer"], r["gold"],
               r["status"], r["error"]) for r in rows if r["score"] != 1.0]  # fmt: skip
    assert misses == []
    assert all(r["status"] == "answered" and r["sub_calls"] > 0 for r in rows)
    # depth 2 really ran sub-RLMs: their root requests carry the child question
    child_requests = [
        r for r in server.requests if CHILD_QUESTION in json.dumps(r.body.get("messages"))
    ]
    assert child_requests


def test_the_policy_chunks_to_the_size_the_system_prompt_states(
    stub: Start, tmp_path: Path
) -> None:
    """A 2,048-token sub window: the prompt says 3,072 characters, and every chunk keeps to it."""
    server = stub(policies.respond)
    settings = replace(oracle_settings(server), sub_model_window_tokens=2_048)
    rows = run_plan(Plan(("oolong",), [32_000], (0,), ("rlm",)), settings, tmp_path / "r.jsonl")
    assert [(r["score"], r["status"]) for r in rows] == [(1.0, "answered")]
    [root, *_] = [r.body for r in server.requests if is_root_request(r.body)]
    assert policies.window_chars(root) == 3_072
    sub_calls = [last_user_text(r.body) for r in server.requests if not is_root_request(r.body)]
    assert len(sub_calls) > 10  # 32,000 characters in chunks of 0.8 x 3,072
    assert max(map(len, sub_calls)) <= 3_072


def test_at_depth_2_the_policy_sends_the_chunks_of_depth_1_through_sub_rlms(
    stub: Start, tmp_path: Path
) -> None:
    """A sub-RLM's prompt states no limit; each passes its chunk on in one plain sub-call."""
    prompts = []
    for method in ("rlm", "rlm-depth2"):
        server = stub(policies.respond)
        plan = Plan(("oolong",), [131_000], (0,), (method,))
        [row] = run_plan(plan, oracle_settings(server), tmp_path / f"{method}.jsonl")
        assert row["score"] == 1.0
        plain = (r.body for r in server.requests if not is_root_request(r.body))
        prompts.append(sorted(map(last_user_text, plain)))
    assert len(prompts[0]) == 4  # 524,000 characters in chunks of 0.8 x 192,000
    assert prompts[1] == prompts[0]


def test_a_line_cut_at_a_chunk_boundary_cannot_be_labelled() -> None:
    """What makes the gate bite: the oracle sees only whole lines it can look up."""
    task = generate("oolong", 8_000, 3)
    line = task.context.split("\n")[0]
    prompt = f"{oracle.LABEL_INSTRUCTION}\n<<<\n{line}\n{line[:-7]}\n>>>"
    first, cut = json.loads(oracle.reply(prompt))
    question = line.split("Instance: ")[1]
    assert first == trec.labelled_questions()[question]
    assert cut == oracle.UNKNOWN_LABEL


def test_oracle_answers_only_from_its_prompt() -> None:
    task = generate("niah", 8_000, 2)
    query = niah.parse_question(task.question)
    assert query is not None
    ask = f"{oracle.NEEDLE_INSTRUCTION}\nKey: {query.key}\n<<<\n"
    assert oracle.reply(ask + task.context + "\n>>>") == task.gold
    spot = task.context.index(task.gold)
    assert oracle.reply(ask + task.context[: spot - 100] + "\n>>>") == oracle.NONE
    assert "only" in oracle.reply("What is the magic number?")

    fact = f"{oracle.FACT_INSTRUCTION}\nQuestion: Which company does Ann Lee work for?\n<<<\n"
    assert oracle.reply(fact + "Joann Lee works at Acme Labs.\n>>>") == oracle.NONE
    assert oracle.reply(fact + "Ann Lee works at Acme Labs.\n>>>") == "Acme Labs"


# -- generators -------------------------------------------------------------------------


def test_sizes_parse_as_the_papers_write_them() -> None:
    assert [parse_size(s) for s in ("8k", "131k", "1m", "1.5M", "10m", "20000")] == [
        8_000, 131_000, 1_000_000, 1_500_000, 10_000_000, 20_000,
    ]  # fmt: skip
    assert [format_size(n) for n in (8_000, 131_000, 1_500_000, 8_192)] == [
        "8k", "131k", "1.5m", "8192",
    ]  # fmt: skip
    assert (parse_size("1b"), format_size(1_000_000_000)) == (1_000_000_000, "1b")
    for bad in ("7k", "1.1b", "big", "", "-8k"):
        with pytest.raises(ValueError, match="size") as error:
            parse_size(bad)
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_generators_are_seeded_sized_and_ask_what_their_parser_reads(family: str) -> None:
    first = generate(family, 32_000, 5)
    assert first == generate(family, 32_000, 5)
    other = generate(family, 32_000, 6)
    assert (other.context, other.question) != (first.context, first.question)
    sized = [generate(family, size, 1) for size in (8_000, 32_000)]
    for task in sized:
        chars = context_chars(task.context)
        assert abs(chars - task.target_chars) <= 0.05 * task.target_chars
    for task in (first, other, *sized):  # a folder or file is removed with it
        forget_context(task, Settings())
    parsers = [niah.parse_question, oolong.parse_question, multihop.parse_question]
    assert sum(parse(first.question) is not None for parse in parsers) == 1


def test_a_needle_task_too_large_to_hold_streams_to_a_file_read_lazily(
    stub: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_memory = niah.generate(400_000, 3)
    monkeypatch.setattr(tasks, "STREAM_TOKENS", 100_000)  # 1b tokens in CI's terms
    streamed = niah.generate(400_000, 3)
    assert isinstance(streamed.context, Path) and isinstance(in_memory.context, str)
    assert streamed.context.read_text() == in_memory.context  # the same task either way
    server = stub(policies.respond)
    settings = replace(oracle_settings(server), lazy_context_mb=1)  # 1.6 MB: the lazy path
    rows = run_plan(Plan(("niah",), [400_000], (3,), ("rlm",)), settings, tmp_path / "r.jsonl")
    assert [(r["score"], r["answer"]) for r in rows] == [(1.0, in_memory.gold)]
    assert "read on demand through a handle" in json.dumps(server.requests[0].body)
    assert not streamed.context.exists()  # removed with the run's stored copy


@pytest.mark.parametrize("family", ["oolong", "pairs"])
def test_oolong_too_large_to_hold_streams_and_is_labelled_through_the_handle(
    stub: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str
) -> None:
    in_memory = generate(family, 600_000, 4)
    monkeypatch.setattr(tasks, "STREAM_TOKENS", 100_000)  # 1b tokens in CI's terms
    tracemalloc.start()
    streamed = generate(family, 600_000, 4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(streamed.context, Path) and isinstance(in_memory.context, str)
    assert streamed.context.read_text() == in_memory.context  # the same task either way
    assert (streamed.question, streamed.gold) == (in_memory.question, in_memory.gold)
    assert peak < len(in_memory.context) // 8  # written as drawn, never held
    server = stub(policies.respond)
    # 2.4 MB: a handle, and three labelling cells of ~1 MiB each (cell_scan_mb)
    settings = replace(oracle_settings(server), lazy_context_mb=1, cell_scan_mb=1)
    rows = run_plan(Plan((family,), [600_000], (4,), ("rlm",)), settings, tmp_path / "r.jsonl")
    assert [(r["score"], r["iterations"]) for r in rows] == [(1.0, 5)]  # peek, 3 + 1 cells
    assert "read on demand through a handle" in json.dumps(server.requests[0].body)
    outputs = tool_outputs(server.requests[-1].body)
    assert [bool(re.search(r"go on at byte \d+", o)) for o in outputs] == [
        False, True, True, False
    ]  # fmt: skip
    assert all("scanned" in o for o in outputs[1:])
    assert not streamed.context.exists()


def test_the_folder_variant_is_the_same_haystack_searched_across_files(
    stub: Start, tmp_path: Path
) -> None:
    text = niah.generate(131_000, 7)
    files = generate("niah-files", 131_000, 7)
    assert isinstance(files.context, Path) and isinstance(text.context, str)
    paths = sorted(files.context.rglob("*.txt"))
    assert len(paths) == 53 and "".join(p.read_text() for p in paths) == text.context
    forget_context(files, Settings())
    server = stub(policies.respond)
    settings = replace(oracle_settings(server), lazy_folder_files=10)  # 53 files: a handle
    plan = Plan(("niah-files",), [131_000], (7,), ("rlm",))
    rows = run_plan(plan, settings, tmp_path / "r.jsonl")
    assert [(r["score"], r["answer"]) for r in rows] == [(1.0, text.gold)]
    assert "a folder of 53 files, read on demand" in json.dumps(server.requests[0].body)
    assert not files.context.exists()


def test_needles_sweep_40_depths_and_appear_once() -> None:
    for seed in (0, 13, 39):
        task = generate("niah", 8_000, seed)
        query = niah.parse_question(task.question)
        assert query is not None
        found = niah.needle_pattern(query.key).findall(task.context)
        assert found == [task.gold]
        depth = task.context.index(query.key) / len(task.context)
        assert abs(depth - niah.DEPTHS[seed]) < 0.03
    assert len(set(niah.DEPTHS)) == 40


def records_of(task: Task) -> list[tuple[str, int, str]]:
    """(date, user, label) from the context, labelled here, independently of the generator."""
    labels = trec.labelled_questions()
    rows = []
    for line in task.context.split("\n"):
        match = re.fullmatch(r"Date: (.+) \|\| User: (\d+) \|\| Instance: (.+)", line)
        assert match, line
        rows.append((match.group(1), int(match.group(2)), labels[match.group(3)]))
    return rows


def test_oolong_gold_answers_follow_from_the_hidden_labels() -> None:
    kinds = set()
    for seed in range(12):
        task = generate("oolong", 8_000, seed)
        query = oolong.parse_question(task.question)
        assert query is not None
        kinds.add(query.kind)
        rows = records_of(task)
        counts = Counter(label for _, _, label in rows)
        if query.kind == "count":
            assert task.gold == counts[query.label]
        elif query.kind == "user":
            assert task.gold == sum(u == query.user and lb == query.label for _, u, lb in rows)
        elif query.kind in ("most", "least"):
            ranked = sorted(trec.LABEL_NAMES, key=lambda label: counts[label])
            assert task.gold == (ranked[-1] if query.kind == "most" else ranked[0])
        assert task.kind in ("number", "label", "comparison")
    assert len(kinds) >= 4
    assert "||" not in " ".join(trec.LABEL_NAMES)


def qualifying(rows: list[tuple[str, int, str]], label: str, at_least: int) -> set[int]:
    per_user = Counter(u for _, u, lb in rows if lb == label)
    return {u for _, u, _ in rows if per_user[u] >= at_least}


def test_pairs_gold_lists_exactly_the_qualifying_users() -> None:
    for seed in range(4):
        task = generate("pairs", 32_000, seed)
        query = oolong.parse_question(task.question)
        assert query is not None and query.kind in oolong.PAIRS_ASKS
        rows = records_of(task)

        first = qualifying(rows, query.label, query.at_least)
        second = (
            first if query.kind == "both" else qualifying(rows, query.other, query.other_at_least)
        )
        expected = {(min(u, v), max(u, v)) for u in first for v in second if u != v}
        assert {tuple(p) for p in task.gold} == expected
        assert 0 < len(first) <= oolong.MAX_QUALIFYING


def test_multihop_answers_follow_the_facts_through_the_documents() -> None:
    for seed in range(6):
        task = generate("multihop", 32_000, seed)
        query = multihop.parse_question(task.question)
        assert query is not None
        entity = query.subject
        for relation in query.chain:
            facts = multihop.fact_pattern(relation, entity).findall(task.context)
            assert len(facts) == 1, (relation, entity, facts)
            entity = facts[0]
        assert entity == task.gold
        assert task.context.count(query.subject) > 1  # a name search finds distractors too


# -- scoring ----------------------------------------------------------------------------


def test_scores_follow_oolong_exact_labels_and_partial_numbers() -> None:
    assert score("number", 42, 42) == 1.0
    assert score("number", "Answer: 1,234", 1_233) == 0.75
    assert score("number", "about 40", 43) == pytest.approx(0.75**3)
    assert score("number", "no idea", 3) == 0.0
    assert score("label", "Label: 'location'.", "location") == 1.0
    assert score("label", "entity or location", "location") == 0.0
    assert score("label", "numeric value", "location") == 0.0
    assert score("comparison", "It is less common than that.", "less common than") == 1.0
    assert score("pairs", "(3, 1)\n(5, 6)", [[1, 3], [2, 4]]) == 0.5
    assert score("pairs", "NONE", []) == 1.0
    assert score("pairs", [[1, 3], [2, 4]], [[1, 3], [2, 4]]) == 1.0
    assert score("text", "The number is 1234567.", "1234567") == 1.0
    assert score("text", "the vel river", "Vel River") == 1.0
    assert score("text", None, "x") == 0.0


# -- runs, resume, report ---------------------------------------------------------------


def test_an_interrupted_eval_resumes_without_redoing_runs(stub: Start, tmp_path: Path) -> None:
    server = stub(policies.respond)
    path = tmp_path / "runs.jsonl"
    first = Plan(["niah"], [8_000], [0], ["rlm"])
    run_plan(first, oracle_settings(server), path)
    path.write_text(path.read_text() + '{"task": "niah", "si')  # a crash mid-write
    made: list[tuple[str, int, int]] = []

    def counting(family: str, size: int, seed: int) -> Task:
        made.append((family, size, seed))
        return generate(family, size, seed)

    server.reset_log()
    both = Plan(["niah"], [8_000], [0, 1], ["rlm"])
    rows = run_plan(both, oracle_settings(server), path, counting)
    assert made == [("niah", 8_000, 1)]
    assert [r["seed"] for r in rows] == [0, 1]
    assert all(r["score"] == 1.0 for r in rows)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seed"] for line in lines if line.endswith("}")] == [0, 1]
    assert set(ResultsFile(path, MODELS).rows) == {
        RunKey("niah", "8k", 0, "rlm"), RunKey("niah", "8k", 1, "rlm"),
    }  # fmt: skip


def test_a_results_file_of_other_models_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    ResultsFile(path, {"model": "a", "sub_model": "b"}).add(
        {"task": "niah", "size": "8k", "seed": 0, "method": "rlm"}
    )
    with pytest.raises(ValueError, match="pass another --out"):
        ResultsFile(path, {"model": "c", "sub_model": "b"})


def test_the_plain_model_reads_the_context_or_is_marked_not_run(
    stub: Start, tmp_path: Path
) -> None:
    server = stub(lambda body: "Answer: 7")
    prices = {"stub-root": {"input": 1.0, "output": 2.0}}
    settings = Settings(**fast_settings(server), prices=prices)
    plan = Plan(["oolong"], [8_000], [0], ["base"])
    task = generate("oolong", 8_000, 0)
    fits = Eval(settings, 20_000)
    bar = report.ProgressBar(1, io.StringIO(), live=False)
    [row] = evaluate(plan, fits, ResultsFile(tmp_path / "a.jsonl", MODELS), bar)
    prompt = server.requests[-1].body["messages"][0]["content"]
    assert task.context in prompt and task.question in prompt
    assert row["status"] == "answered" and row["answer"] == "Answer: 7"
    assert row["score"] == score(task.kind, "Answer: 7", task.gold)
    assert row["dollars"] == pytest.approx(
        (row["usage"]["stub-root"]["input_tokens"] + 2 * row["usage"]["stub-root"]["output_tokens"])
        / 1e6
    )

    too_small = Eval(settings, 4_000)
    [row] = evaluate(plan, too_small, ResultsFile(tmp_path / "b.jsonl", MODELS), bar)
    assert (row["status"], row["score"]) == ("not_run", None)
    assert "exceeds the model's window of 4,000" in row["error"]
    [summary] = report.summarize([row])
    assert (summary.runs, summary.not_run, summary.accuracy) == (0, 1, None)


def test_summary_reports_accuracy_time_tokens_and_dollars() -> None:
    base = {"task": "oolong", "size": "8k", "method": "rlm", "status": "answered"}
    rows = [
        {**base, "score": s, "seconds": t, "tokens": 100, "dollars": 0.5}
        for s, t in [(1.0, 1.0), (0.5, 2.0), (0.0, 9.0)]
    ]
    [summary] = report.summarize(rows)
    assert summary.accuracy == 0.5
    assert (summary.mean_seconds, summary.p95_seconds) == (4.0, 9.0)
    assert (summary.mean_tokens, summary.dollars) == (100, 1.5)
    assert report.p95([float(i) for i in range(1, 21)]) == 19.0
    text = report.table([summary])
    assert "50.0%" in text and "$1.5000" in text
    assert windows.window_of("openai:gpt-5") == 272_000
    assert windows.window_of("someone:else") == windows.DEFAULT_WINDOW


# -- the command ------------------------------------------------------------------------


def test_rlm_eval_offline_scores_resumes_and_prints_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "offline.jsonl"
    argv = ["eval", "--offline", "--task", "niah,multihop", "--size", "8k", "--n", "1"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    stdout, stderr = capsys.readouterr()
    result = json.loads(stdout)
    assert [(s["task"], s["method"], s["accuracy"]) for s in result["summary"]] == [
        ("niah", "rlm", 1.0), ("niah", "rlm-depth2", 1.0),
        ("multihop", "rlm", 1.0), ("multihop", "rlm-depth2", 1.0),
    ]  # fmt: skip
    assert len(result["runs"]) == 4
    assert "offline, the root model is a scripted policy" in stderr
    assert "rlm eval: [4/4] multihop 8k seed 0 rlm-depth2: score 1.00" in stderr

    assert main([*argv, "--out", str(out)]) == 0  # everything is in the file already
    stdout, _ = capsys.readouterr()
    assert len(out.read_text().splitlines()) == 4
    assert stdout.splitlines()[0].split() == [
        "task", "size", "method", "runs", "not", "run", "failed", "accuracy", "mean", "s",
        "p95", "s", "tokens/run", "dollars",
    ]  # fmt: skip
    assert "100.0%" in stdout and "$0.0000" in stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--size", "2k"], "size '2k' is out of range"),
        (["--task", "codeqa"], "unknown task 'codeqa'"),
        (["--methods", "base"], "use --methods rlm,rlm-depth2"),
        (["--n", "0"], "--n 0 is out of range"),
        (["--prices", "/nonexistent/prices.json"], "cannot read --prices"),
        (["--window", "0"], "--window 0 is out of range"),
        (["--task", "oolong,multihop", "--size", "1b"], "multihop is built in memory, up to 10m"),
    ],
)
def test_rlm_eval_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str, tmp_path: Path
) -> None:
    out = ["--out", str(tmp_path / "x.jsonl")]
    assert main(["eval", "--offline", *flags, *out]) == 2
    _, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_rlm_eval_with_real_models_needs_a_key_first(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["eval", "--task", "oolong", "--size", "131k", "--model", "openai:gpt-5"]) == 2
    assert "needs an OpenAI API key" in capsys.readouterr().err


def test_ctrl_c_keeps_finished_runs_and_says_how_to_resume(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(size: int, seed: int) -> Task:
        raise KeyboardInterrupt

    monkeypatch.setitem(families.GENERATORS, "multihop", interrupted)
    out = tmp_path / "runs.jsonl"
    argv = ["eval", "--offline", "--task", "niah,multihop", "--size", "8k", "--n", "1"]
    assert main([*argv, "--out", str(out)]) == 130
    _, err = capsys.readouterr()
    assert f"rlm eval: stopped; the same command resumes from {out}" in err
    assert [json.loads(line)["task"] for line in out.read_text().splitlines()] == ["niah"] * 2


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    stream = io.StringIO()
    bar = report.ProgressBar(2, stream, live=True)
    key = RunKey("oolong", "131k", 3, "rlm")
    bar.start(key)
    bar.finish(key, {"status": "answered", "score": 0.75})
    bar.close()
    text = stream.getvalue()
    assert "\n" not in text
    assert "\r" + "rlm eval: [" + "." * 20 + "] 0/2 oolong 131k seed 3 rlm" in text
    assert "[" + "#" * 10 + "." * 10 + "] 1/2 oolong 131k seed 3 rlm: score 0.75" in text
    assert text.endswith("\r\x1b[K")
