"""The benchmark harness drives every framework correctly (not how fast: bench/ does that).

Each framework runs one tiny workload through the stub: a sub-call, a batch
and a depth-2 sub-RLM, in its own answer protocol. rlms and dspy come with the
``bench`` extra, which .ci/run installs: a peer that is not installed fails the test in
CI and skips it elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import missing

from bench.cold import NEEDLE, cold_run, command, write_context
from bench.peers import (
    PEERS,
    ROOT_MARK,
    Job,
    available,
    is_root_model,
    prompt_tokens,
    responder,
    run,
    step_of,
    translate,
)
from rlm_graph.offline.stub_server import StubServer

CELLS = ["x = 1\nr = QUERY('hi')", "b = BATCH(['a', 'b'])", "DONE(str(x) + r + ''.join(b))"]
ROOT = ["parts = context.split('\\n\\n')", "r = [RECURSE(p) for p in parts]", "DONE(','.join(r))"]
CHILD = [
    "import re\nw = re.search(r'KEY (\\w+)', context).group(1)",
    "s = QUERY('leaf ' + w)",
    "DONE(s)",
]


def test_each_protocol_gets_its_own_dialect() -> None:
    cell = "r = QUERY('p')\nb = BATCH(['q'])\nDONE(r)"
    assert (
        translate("graph", cell) == "r = await llm_query('p')\nb = await llm_batch(['q'])\nFINAL(r)"
    )
    assert translate("floor", cell) == "r = llm_query('p')\nb = llm_batch(['q'])\nFINAL(r)"
    assert translate("rlms", cell) == (
        "r = llm_query('p')\nb = llm_query_batched(['q'])\n"
        'answer["content"] = r\nanswer["ready"] = True'
    )
    assert translate("dspy", cell) == "r = llm_query('p')\nb = llm_query_batched(['q'])\nSUBMIT(r)"
    assert translate("dspy", "y = RECURSE('p')").startswith("_sub_rlm = lambda p: ")


def test_steps_and_roles_are_read_off_the_request() -> None:
    dspy_body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": f"{ROOT_MARK} q\n[[ ## iteration ## ]]\n3/20"},
        ]
    }
    assert step_of(dspy_body) == 2
    assert is_root_model(dspy_body)
    child = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "c"}]}
    assert not is_root_model(child)
    with_tools = {**child, "tools": [{"name": "x" * 400}]}
    assert prompt_tokens(with_tools) > prompt_tokens(child) + 90


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dspy's own LM calls, not ours
@pytest.mark.parametrize("peer", PEERS)
def test_every_framework_runs_the_same_cells(peer: str) -> None:
    if peer not in available():
        missing(f"{peer} is not installed (pip install -e '.[bench]'; .ci/run does)")
    with StubServer(responder(peer, CELLS, sub=lambda p: f"<{p}>")) as server:
        assert str(run(peer, Job("q", "ctx"), server)) == "1<hi><a><b>"
    with StubServer(responder(peer, ROOT, sub=lambda p: f"[{p}]", child=CHILD)) as server:
        job = Job("q", "p1 KEY lemon\n\np2 KEY plum", max_depth=2)
        assert run(peer, job, server) == "[leaf lemon],[leaf plum]"


def test_unknown_framework_is_one_line_error() -> None:
    with (
        StubServer(responder("floor", CELLS)) as server,
        pytest.raises(ValueError, match="unknown"),
    ):
        run("langchain", Job("q", "ctx"), server)


def test_a_cold_run_is_the_whole_console_script_against_the_stub(tmp_path: Path) -> None:
    context = write_context(tmp_path / "ctx.txt", 20_000)
    # the half second keeps even the floor's process alive for the memory sampler to see
    needle = "import re, time\ntime.sleep(0.5)\nDONE(re.search(r'MAGIC=(\\d+)', context).group(1))"
    graph = cold_run("graph", needle, context)
    floor = cold_run("python", needle, context)
    assert graph.answer == NEEDLE
    assert cold_run("graph-str", needle, context).answer == NEEDLE  # answer() on a string
    assert command("graph-str", "http://x/v1", context)[1:4] == ["-m", "bench.calls", "graph"]
    assert graph.seconds > 0 and graph.cpu > floor.cpu > 0
    assert graph.tree_mb >= graph.host_mb > floor.host_mb > 0
    assert command("graph", "http://x/v1", context)[1:3] == ["run", "--quiet"]


def test_a_cold_run_that_fails_says_why(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cold graph failed"):
        cold_run("graph", "DONE(", tmp_path / "missing.txt")
