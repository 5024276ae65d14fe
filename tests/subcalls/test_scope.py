"""The recursion scope: the depth rule, the shared budget, and what each run counts."""

from __future__ import annotations

from rlm_graph.settings import Settings
from rlm_graph.subcalls.scope import LocalBudget, Scope

USAGE = {"m": {"calls": 1, "input_tokens": 60, "output_tokens": 40}}


def test_the_depth_rule_decides_plain_call_or_sub_rlm() -> None:
    root = Scope(0, 2, LocalBudget(10))
    assert root.recursive  # depth 0 of 2: its sub-calls are sub-RLMs
    assert not root.child().recursive  # depth 1 of 2: its sub-calls are plain
    assert not Scope(0, 1, LocalBudget(10)).recursive  # the paper's set-up
    assert root.child().budget is root.budget  # one tree, one budget


def test_only_a_sub_rlm_pays_for_its_steps() -> None:
    settings = Settings(max_depth=2)
    root = Scope(0, 2, LocalBudget(1))
    assert root.begin_step(settings) == "" and root.budget.left == 1
    child = root.child()
    assert child.begin_step(settings) == "" and root.budget.left == 0
    assert child.begin_step(settings) == "sub-call budget exhausted"
    assert root.begin_step(settings) == ""  # the root is bounded by max_iterations instead


def test_a_cost_limit_blocks_every_run_of_the_tree() -> None:
    settings = Settings(max_tokens=100)
    root = Scope(0, 2, LocalBudget(10))
    root.child().budget.spend(USAGE)  # a sub-RLM's call, spent as it happens
    reason = "token budget reached: 100 of max_tokens=100 used"
    assert root.blocked(settings) == reason
    assert root.child().begin_step(settings) == reason


def test_the_root_counts_its_tree_a_sub_rlm_its_own_calls() -> None:
    root = Scope.root(Settings(max_sub_calls=10), calls_made=4, spent={})
    assert root.budget.left == 6  # what its state had used is gone from the budget
    assert root.budget.take(2)
    assert root.counted(own_calls=1) == 2
    assert root.child().counted(own_calls=1) == 1


def test_the_memo_key_changes_with_whoever_answers() -> None:
    plain = Scope(0, 1, LocalBudget(1)).memo_key(Settings(sub_model="a"))
    assert plain != Scope(0, 1, LocalBudget(1)).memo_key(Settings(sub_model="b"))
    elsewhere = Settings(sub_model="a", sub_base_url="http://other:8000/v1")
    assert plain != Scope(0, 1, LocalBudget(1)).memo_key(elsewhere)
    deep = Settings(sub_model="a", max_depth=3)
    assert Scope(0, 3, LocalBudget(1)).memo_key(deep) != Scope(1, 3, LocalBudget(1)).memo_key(deep)
