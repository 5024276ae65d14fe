"""Sub-call abuse: huge batches, huge prompts, endless loops and recursion of sub-calls.

Each is refused or capped by an explicit limit, and the model reads which limit and
what to do instead.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import Script, fast_settings, is_child, tool

from rlm_graph import answer
from rlm_graph.offline.stub_server import StubServer, is_root_request
from rlm_graph.repl.session import Limits, Sandbox
from rlm_graph.settings import Settings
from rlm_graph.storage.contexts import store_value
from rlm_graph.subcalls.broker import SubCallBroker
from rlm_graph.subcalls.scope import LocalBudget, Scope

LIMITS = Limits(cell_timeout=30.0, cpu_instructions=20_000_000_000, memory_mb=1024)


def broker_box(server: StubServer, budget: int = 1_000, **overrides: Any) -> Sandbox:
    settings = Settings(**fast_settings(server, **overrides))
    sandbox = Sandbox(store_value("ctx"), LIMITS)
    sandbox.handler = SubCallBroker(settings, Scope(0, settings.max_depth, LocalBudget(budget)))
    return sandbox


def sub_requests(server: StubServer) -> int:
    return sum(1 for r in server.requests if r.body and not is_root_request(r.body))


@pytest.mark.parametrize(
    ("code", "budget", "overrides", "message"),
    [
        pytest.param(
            "await llm_batch([f'item {i}' for i in range(100_000)])",
            1_000_000,
            {},
            "SubCallFailed: llm_batch of 100,000 prompts exceeds max_batch_size=1,000",
            id="batch-of-100000",
        ),
        pytest.param(
            "await llm_batch([f'item {i}' for i in range(50)])",
            10,
            {},
            "sub-call budget exhausted: 50 requested, 10 of 10 left (max_sub_calls)",
            id="batch-over-budget",
        ),
        pytest.param(
            "await llm_query('x' * 50_000_000)",
            1_000,
            {"max_depth": 1},
            "prompt of 50,000,000 characters exceeds max_prompt_chars=10,000,000: pass a slice",
            id="50MB-prompt",
        ),
        pytest.param(
            "await llm_query('x' * 50_000_000)",
            1_000,
            {"max_depth": 2},
            "prompt of 50,000,000 characters exceeds max_prompt_chars=10,000,000: pass a slice",
            id="50MB-prompt-to-a-sub-RLM",
        ),
    ],
)
def test_abuse_is_refused_before_any_model_call(
    stub: Any, code: str, budget: int, overrides: dict[str, Any], message: str
) -> None:
    server = stub(Script(["unused"]))
    sandbox = broker_box(server, budget=budget, **overrides)
    out = sandbox.run(code)
    assert message in out.output
    assert sub_requests(server) == 0
    assert not out.halted


def test_a_prompt_over_the_window_is_refused_with_the_chunk_size(stub: Any) -> None:
    server = stub(Script(["unused"]))
    sandbox = broker_box(server, sub_model_window_tokens=1_000)
    out = sandbox.run("r = await llm_batch(['y' * 3_001, 'y' * 3_000, 'short'])\nprint(r)")
    # 3,000 characters is the window exactly (3 a token): sent; one more is refused
    assert "prompt of 3,001 characters (~1,001 tokens)" in out.output
    assert "split it into chunks of at most 3,000 characters" in out.output
    assert "echo:short" in out.output  # the other items of the batch were still answered
    assert sub_requests(server) == 2


def test_an_endless_llm_query_loop_stops_at_the_sub_call_budget(stub: Any) -> None:
    server = stub(Script(["unused"], sub=lambda prompt: "ok"))
    sandbox = broker_box(server, budget=5)
    code = "n = 0\nwhile True:\n    await llm_query(f'call {n}')\n    n += 1"
    out = sandbox.run(code)
    assert "sub-call budget exhausted: 1 requested, 0 of 5 left (max_sub_calls)" in out.output
    assert sandbox.run("print(n)").stdout == "5\n"
    assert sub_requests(server) == 5


def test_recursion_through_llm_query_stops_at_max_depth(stub: Any) -> None:
    """Every level asks llm_query again; only max_depth levels become sub-RLMs."""
    dive = tool("r = await llm_query('dive ' + context[:30])\nFINAL(r)")
    server = stub(Script([dive], sub=lambda prompt: "bottom", child=[dive]))
    result = answer("q", "ctx", **fast_settings(server, max_depth=3))
    assert (result.answer, result.status) == ("bottom", "answered")
    children = [r for r in server.requests if r.body and is_child(r.body)]
    plain = [r for r in server.requests if r.body and not is_root_request(r.body)]
    assert len(children) == 2  # depth 1 and depth 2 each ran one root step
    assert len(plain) == 1  # depth 2's sub-call was a plain model call


def test_recursion_that_never_ends_is_capped_by_the_shared_budget(stub: Any) -> None:
    loop = tool("n = 0\nwhile True:\n    n += 1\n    await llm_query(f'again {n} {len(context)}')")
    server = stub(Script([loop, "FINAL(gave up)"], child=[loop, "FINAL(child done)"]))
    result = answer("q", "ctx", **fast_settings(server, max_depth=3, max_sub_calls=6))
    assert result.status == "answered"
    assert result.sub_calls <= 6
    # The root's two steps and the tree's six sub-calls: its llm_query, the depth-1
    # step, that step's llm_query, the depth-2 step and two plain calls. A budget per
    # sub-RLM instead of one per tree let this run make 302 requests.
    assert len(server.requests) == 2 + 4
    shown = json.dumps(server.requests[-1].body)
    assert "sub-call budget exhausted" in shown


def test_a_loop_on_one_cached_prompt_is_stopped_by_the_cpu_brake(stub: Any) -> None:
    """Repeated prompts are answered from the cache for free, so fuel is what stops it."""
    server = stub(Script(["unused"], sub=lambda prompt: "same"))
    settings = Settings(**fast_settings(server, cell_cpu_instructions=5_000_000_000))
    sandbox = Sandbox(store_value("ctx"), Limits(120.0, 5_000_000_000, 512))
    sandbox.handler = SubCallBroker(settings, Scope(0, settings.max_depth, LocalBudget(1_000)))
    out = sandbox.run("while True:\n    await llm_query('same prompt')")
    assert out.halted and out.error.startswith("ResourceLimitError")
    assert sub_requests(server) == 1
