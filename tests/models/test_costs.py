"""Costs: token usage summed exactly over the recursion tree, prices, and the cost guard."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import Script, fast_settings, tool

from rlm_graph import answer
from rlm_graph.cli.main import main
from rlm_graph.models.pricing import cost_of, over_budget, price_of
from rlm_graph.offline.stub_server import StubReply, StubServer
from rlm_graph.settings import Settings

ROOT = {"prompt_tokens": 100, "completion_tokens": 10, "cached_tokens": 40}
SUB = {"prompt_tokens": 7, "completion_tokens": 3}


def costed(reply: StubReply, tokens: dict[str, int]) -> StubReply:
    return replace(reply, **tokens)


def sub_answer(prompt: str) -> StubReply:
    return StubReply(content=prompt.upper(), **SUB)  # type: ignore[arg-type]


def requests_for(server: StubServer, model: str) -> int:
    return sum(1 for r in server.requests if r.body.get("model") == model)


# -- prices -----------------------------------------------------------------------------


def test_cost_bills_cached_tokens_at_their_rate_and_lists_unpriced_models() -> None:
    usage = {
        "openai:gpt-5": {"input_tokens": 1_000_000, "cached_tokens": 400_000, "output_tokens": 0},
        "mystery": {"input_tokens": 5, "output_tokens": 5},
    }
    report = cost_of(usage, {})
    assert report["models"] == {"openai:gpt-5": pytest.approx(0.6 * 1.25 + 0.4 * 0.125)}
    assert report["unpriced"] == ["mystery"]
    priced = cost_of(usage, {"mystery": {"input": 1_000_000.0}})
    assert priced["models"]["mystery"] == 10.0  # output defaults to the input price


def test_user_prices_override_the_table_by_full_or_bare_name() -> None:
    assert price_of("openai:gpt-5", {})["input"] == 1.25  # type: ignore[index]
    assert price_of("openai:gpt-5", {"gpt-5": {"input": 9.0}})["input"] == 9.0  # type: ignore[index]
    assert price_of("acme:gpt-5", {"acme:gpt-5": {"input": 3.0}})["input"] == 3.0  # type: ignore[index]
    assert price_of("nobody-knows", {}) is None


def test_over_budget_names_the_limit_reached() -> None:
    usage = {"gpt-5": {"input_tokens": 600, "output_tokens": 400}}
    assert over_budget(usage, 1000, 0, {}).startswith("token budget reached: 1,000 of max_tokens")
    assert over_budget(usage, 1001, 0, {}) == ""
    assert over_budget(usage, 0, 0.00001, {}).startswith("dollar budget reached")
    assert over_budget(usage, 0, 0, {}) == ""


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_tokens": -1}, "max_tokens=-1 is out of range"),
        ({"max_dollars": -0.5}, "max_dollars=-0.5 is out of range"),
        ({"prices": {"m": {"input": "cheap"}}}, "prices['m']['input']='cheap'"),
        ({"prices": {"m": {"output": 1}}}, "prices['m'] is malformed"),
        ({"model": "acme:thing", "max_dollars": 1.0}, "needs a price for acme:thing"),
    ],
)
def test_bad_cost_settings_are_one_line_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="setting ") as caught:
        Settings(**settings)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# -- exact sums over the tree ----------------------------------------------------------------


def test_usage_is_summed_exactly_over_sub_rlms_and_plain_calls(stub: Any) -> None:
    root = [
        costed(tool("got = await llm_query('child task')\nprint(got)"), ROOT),
        costed(tool("FINAL(got)"), ROOT),
    ]
    child = [
        costed(tool("parts = await llm_batch(['a', 'b', 'a'])\nprint(parts)"), ROOT),
        costed(tool("FINAL('+'.join(parts))"), ROOT),
    ]
    server = stub(Script(root, sub=sub_answer, child=child))
    result = answer("q", "ctx", **fast_settings(server, max_depth=2))
    assert result.answer == "A+B+A"
    root_calls = requests_for(server, "stub-root")  # the root's 2 replies and the child's 2
    sub_calls = requests_for(server, "stub-sub")  # 'a' once (the repeat is cached), 'b'
    assert (root_calls, sub_calls) == (4, 2)
    assert result.tokens == {
        "stub-root": {
            "calls": 4,
            "input_tokens": 400,
            "output_tokens": 40,
            "cached_tokens": 160,
        },
        "stub-sub": {"calls": 2, "input_tokens": 14, "output_tokens": 6, "cached_tokens": 0},
    }
    assert result.cost is not None and result.cost["unpriced"] == ["stub-root", "stub-sub"]


def test_final_state_and_json_carry_the_cost(
    stub: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = stub(Script([costed(tool("FINAL(await llm_query('x'))"), ROOT)], sub=sub_answer))
    prices = {"stub-root": {"input": 1.0, "output": 2.0, "cached_input": 0.5}}
    all_prices = {**prices, "stub-sub": {"input": 0}}
    result = answer("q", "ctx", **fast_settings(server, prices=all_prices))
    assert result.state["cost"] == result.cost
    expected_root = (60 * 1.0 + 40 * 0.5 + 10 * 2.0) / 1e6
    assert result.cost == {
        "dollars": round(expected_root, 6),
        "models": {"stub-root": round(expected_root, 6), "stub-sub": 0.0},
        "unpriced": [],
    }
    (tmp_path / "prices.json").write_text(json.dumps(prices))
    (tmp_path / "ctx.txt").write_text("ctx")
    code = main(
        [
            "run",
            *("--model", "stub-root", "--sub-model", "stub-sub", "--base-url", server.base_url),
            *("--prices", str(tmp_path / "prices.json"), "--context", str(tmp_path / "ctx.txt")),
            "--json",
            "q",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["cost"]["models"]["stub-root"] == round(expected_root, 6)
    assert "stub-root: 1 call, 100 in (40 cached) / 10 out, $0.0001" in err


# -- the cost guard ----------------------------------------------------------------------------


LOOP = [costed(tool("n = await llm_query('step')\nprint('partial result', n)"), ROOT)]


def test_token_budget_stops_the_run_with_the_best_answer_so_far(stub: Any) -> None:
    server = stub(Script(LOOP, sub=sub_answer))
    result = answer("q", "ctx", **fast_settings(server, max_tokens=250, max_iterations=20))
    # each iteration: one root reply (110 tokens); the sub-call (10) is paid once, then
    # its repeats are answered from the run's cache: 120, 230, 340
    assert result.status == "budget_exhausted"
    assert result.iterations == 3
    assert result.stop_reason == "token budget reached: 340 of max_tokens=250 used"
    assert result.answer == "partial result STEP"
    assert requests_for(server, "stub-root") == 3  # no best-effort call past the limit


def test_dollar_budget_refuses_sub_calls_mid_cell(stub: Any) -> None:
    code = "try:\n    await llm_query('one')\nexcept Exception as e:\n    print('refused:', e)"
    server = stub(Script([costed(tool(code), ROOT)], sub=sub_answer))
    prices = {"stub-root": {"input": 10.0}, "stub-sub": {"input": 10.0}}
    result = answer("q", "ctx", **fast_settings(server, max_dollars=0.0001, prices=prices))
    assert requests_for(server, "stub-sub") == 0
    assert result.status == "budget_exhausted"
    assert str(result.answer).startswith("refused:")
    assert "dollar budget reached" in result.answer and "no more sub-calls" in result.answer


def test_a_cost_limit_reached_inside_a_batch_refuses_the_calls_not_yet_sent(stub: Any) -> None:
    code = "r = await llm_batch([f'item {i}' for i in range(5)])\nprint(r)"
    server = stub(Script([costed(tool(code), ROOT)], sub=sub_answer))
    settings = fast_settings(server, max_tokens=130, max_concurrency=1)
    result = answer("q", "ctx", **settings)
    # root 110, item 0 120, item 1 130: the limit is reached, items 2-4 are never sent
    assert requests_for(server, "stub-sub") == 2
    assert result.stop_reason == "token budget reached: 130 of max_tokens=130 used"
    answers = ast.literal_eval(str(result.answer))
    assert answers[:2] == ["ITEM 0", "ITEM 1"]
    refusal = f"Error: {result.stop_reason}; no more sub-calls: answer from what you have"
    assert answers[2:] == [refusal] * 3
    assert result.sub_calls == 2  # the refused calls' reservations went back to the budget


def test_cli_marks_a_cost_stopped_answer(
    stub: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = stub(Script(LOOP, sub=sub_answer))
    (tmp_path / "ctx.txt").write_text("ctx")
    argv = [
        "run",
        *("--model", "stub-root", "--sub-model", "stub-sub", "--base-url", server.base_url),
        *("--max-tokens", "115", "--context", str(tmp_path / "ctx.txt"), "--quiet", "q"),
    ]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 3
    assert out.splitlines() == [
        "[token budget reached: 120 of max_tokens=115 used: best answer so far, "
        "the last output of the code]",
        "partial result STEP",
    ]
    assert main([*argv, "--json"]) == 3
    shown = json.loads(capsys.readouterr().out)
    assert shown["stop_reason"] == "token budget reached: 120 of max_tokens=115 used"


def test_a_sub_rlm_stops_at_the_tree_budget_and_so_does_its_root(stub: Any) -> None:
    root = [
        costed(tool("got = await llm_query('child task')\nprint('child said:', repr(got))"), ROOT)
    ]
    step = "n = globals().get('n', 0) + 1\nx = await llm_query(f'leaf {n}')\nprint(x)"
    steps = [costed(tool(f"{step}  # {i}"), ROOT) for i in range(4)]  # a repeat is not run
    server = stub(Script(root, sub=sub_answer, child=steps))
    result = answer("q", "ctx", **fast_settings(server, max_depth=2, max_tokens=400))
    # root 110, child 110 + leaf 10, child 110 + leaf 10, child 110 = 460: the third
    # leaf is refused and the child makes no fourth call
    assert requests_for(server, "stub-root") == 4 and requests_for(server, "stub-sub") == 2
    assert result.status == "budget_exhausted"
    assert result.stop_reason == "token budget reached: 460 of max_tokens=400 used"
    assert result.answer == "child said: ''"
