"""Sub-RLMs on a two-node Ray cluster on this machine: both nodes, one budget, a lost node.

The cluster is real (``rlm_graph.offline.local_cluster``: `ray start --head` and `ray
start --address`, stopped by their ids); the models are the HTTP stub, reached from
every node.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import Script, fast_settings, is_child, rlm, stub_flags, tool, wait_for

from rlm_graph import answer
from rlm_graph.offline.local_cluster import LocalCluster
from rlm_graph.offline.stub_server import (
    Responder,
    StubReply,
    StubServer,
    is_root_request,
    last_user_text,
)
from rlm_graph.settings import Settings
from rlm_graph.subcalls.cluster import ADDRESS_ENV, ClusterError, connect, ray_module

Start = Callable[[Responder], StubServer]
SLOTS = 2  # sandbox slots per node
PARTS = [f"part {i}" for i in range(8)]
FAN_OUT = [
    tool("answers = await llm_batch([f'part {i}' for i in range(8)])\nprint(answers)"),
    tool("FINAL(sorted(answers))"),
]
# A sub-RLM: one plain sub-call on its context, then its answer. With the sub-RLM
# itself, four sub-calls of the tree: the run, its two steps, its plain call.
CHILD = [tool("sub = await llm_query('leaf ' + context)"), tool("FINAL(sub)")]


def needs_ray() -> Any:
    """``ray`` as rlm-graph imports it (see ``ray_module``); skip without the extra."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed")
    return ray_module()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A head node and a worker node, two sandbox slots each, this process connected."""
    ray = needs_ray()
    with LocalCluster(nodes=2, slots=SLOTS) as local:
        os.environ[ADDRESS_ENV] = local.address
        try:
            ray.init(address=local.address, log_to_driver=False)
            wait_for(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, "two nodes")
            yield local
        finally:
            os.environ.pop(ADDRESS_ENV, None)
            ray.shutdown()


class Events:
    """A progress sink that keeps the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def custom(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def values(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def leaf(prompt: str) -> str:
    return prompt.replace("leaf ", "plain:")


def ray_settings(server: StubServer, **overrides: Any) -> dict[str, Any]:
    return fast_settings(
        server, max_depth=2, sub_rlm_executor="ray", cell_timeout=120.0, **overrides
    )


def test_without_ray_the_executor_fails_at_once_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stub: Start
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does when it is absent
    with pytest.raises(
        ValueError, match=r"^sub_rlm_executor='ray' needs Ray: pip install 'rlm-graph\[ray\]'$"
    ):
        Settings(sub_rlm_executor="ray")
    server = stub(Script(FAN_OUT))
    code, _, err = rlm(
        capsys, "run", *stub_flags(server), "--sub-rlm-executor", "ray", "--context", "-", "q"
    )
    assert code == 2 and server.requests == []
    assert err.count("\n") == 1 and "pip install 'rlm-graph[ray]'" in err


def test_the_cluster_is_named_by_the_deployment_never_guessed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not needs_ray().is_initialized()
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    with pytest.raises(ClusterError, match=f"needs {ADDRESS_ENV} in the environment"):
        connect()


@pytest.mark.slow
def test_sub_rlms_run_on_both_nodes_and_answer(stub: Start, cluster: LocalCluster) -> None:
    server = stub(Script(FAN_OUT, sub=leaf, child=CHILD))
    sink = Events()
    result = answer("q", "ctx", progress=sink, **ray_settings(server))
    assert result.answer == sorted(f"plain:{p}" for p in PARTS), result.error
    nodes = {e["node"] for e in sink.events if e["event"] == "final" and "node" in e}
    assert len(nodes) == 2  # the eight sub-RLMs ran on both nodes
    assert result.sub_calls == 8 * 4


@pytest.mark.slow
def test_the_whole_tree_stops_at_max_sub_calls(stub: Start, cluster: LocalCluster) -> None:
    server = stub(Script(FAN_OUT, sub=leaf, child=CHILD))
    result = answer("q", "ctx", **ray_settings(server, max_sub_calls=20))
    # The batch took 8 calls for its sub-RLMs; their steps and plain calls, on both
    # nodes, took the 12 left and not one more.
    assert result.sub_calls == 20
    children = [r.body for r in server.requests if is_child(r.body)]
    plain = [r.body for r in server.requests if not is_root_request(r.body)]
    assert len(children) + len(plain) == 12


TWO_WAVES = [
    tool("first = await llm_batch([f'part {i}' for i in range(4)])"),
    tool("second = await llm_batch([f'part {i}' for i in range(4, 8)])"),
    tool("FINAL(sorted(first + second))"),
]


def part_of(leaf_prompt: str) -> int:
    return int(leaf_prompt.split()[-1])


class NodeLossModel:
    """Two waves of four sub-RLMs; the leaves of the second hang until released."""

    def __init__(self) -> None:
        self.leaves: list[str] = []
        self.release = threading.Event()
        self._script = Script(TWO_WAVES, sub=leaf, child=CHILD)

    def __call__(self, body: dict[str, Any]) -> StubReply | str:
        if not is_root_request(body):
            self.leaves.append(last_user_text(body))
            if part_of(self.leaves[-1]) >= 4:
                self.release.wait(60)
        return self._script(body)


@pytest.mark.slow
def test_a_lost_node_s_sub_rlms_run_again_elsewhere_and_finished_ones_do_not(
    stub: Start, cluster: LocalCluster
) -> None:
    # Runs last in this module: the cluster has one node left after it.
    model = NodeLossModel()
    server = stub(model)
    result: list[Any] = []
    run = threading.Thread(target=lambda: result.append(answer("q", "ctx", **ray_settings(server))))
    run.start()
    try:
        # Four hanging sub-RLMs on four slots, two per node: the worker node holds two.
        wait_for(lambda: sum(part_of(p) >= 4 for p in model.leaves) == 4, "4 hanging leaves")
        cluster.kill_node(1)  # the worker node dies: raylet, workers, sandboxes
    finally:
        model.release.set()
        run.join(180)
    assert result and result[0].answer == sorted(f"plain:{p}" for p in PARTS), result
    # The first wave finished before the loss and was not asked again; of the second,
    # the two sub-RLMs on the lost node ran again, from the start, on the head node.
    asked = Counter(part_of(p) for p in model.leaves)
    assert [asked[i] for i in range(4)] == [1, 1, 1, 1], asked
    assert sorted(asked[i] for i in range(4, 8)) == [1, 1, 2, 2], asked
