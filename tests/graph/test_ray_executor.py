"""Sub-RLMs on a two-node Ray cluster on this machine: both nodes, one budget, a lost node.

The cluster is real (`ray start --head` and `ray start --address`, each a process group
of its own, stopped by its id); the models are the HTTP stub, reached from every node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from support import Script, fast_settings, is_child, rlm, stub_flags, tool, wait_for

from rlm_graph import answer
from rlm_graph.offline.stub_server import (
    Responder,
    StubReply,
    StubServer,
    is_root_request,
    last_user_text,
)
from rlm_graph.settings import Settings
from rlm_graph.subcalls.cluster import ADDRESS_ENV, ClusterError, connect

Start = Callable[[Responder], StubServer]
RAY = Path(sys.executable).parent / "ray"
SLOTS = 2  # sandbox slots per node
PARTS = [f"part {i}" for i in range(8)]
FAN_OUT = [
    tool("answers = await llm_batch([f'part {i}' for i in range(8)])\nprint(answers)"),
    tool("FINAL(sorted(answers))"),
]
# A sub-RLM: one plain sub-call on its context, then its answer. With the sub-RLM
# itself, four sub-calls of the tree: the run, its two steps, its plain call.
CHILD = [tool("sub = await llm_query('leaf ' + context)"), tool("FINAL(sub)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(*flags: str) -> subprocess.Popen[bytes]:
    """One `ray start --block`, in a process group of its own so that it stops by its id."""
    argv = [str(RAY), "start", "--block", "--num-cpus=1", "--disable-usage-stats", *flags]
    argv.append("--resources=" + json.dumps({"rlm_sandbox": SLOTS}))
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.extend(below := children.get(todo.pop(), []))
        todo.extend(below)
    return found


def kill_node(node: subprocess.Popen[bytes]) -> None:
    """A node dies: `ray start`, its raylet and every worker below it.

    Ray puts each worker in a process group of its own, and a raylet killed alone leaves
    its workers to finish their tasks and report to the driver: nothing would be lost.
    """
    for pid in [node.pid, *descendants(node.pid)]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_node(node: subprocess.Popen[bytes]) -> None:
    # Killed rather than stopped: SIGTERM leaves `ray start --block` waiting ~30 s on its
    # children, and nothing here needs a clean shutdown.
    if node.poll() is None:
        kill_node(node)
    node.wait(30)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A head node and a worker node, two sandbox slots each, this process connected."""
    ray = pytest.importorskip("ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rlmray")  # short: Ray's socket paths must fit 107 bytes
    nodes = [
        start_node("--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false")
    ]
    try:
        wait_for(lambda: port_open(port), "the head node")
        nodes.append(start_node(f"--address=127.0.0.1:{port}"))
        os.environ[ADDRESS_ENV] = f"127.0.0.1:{port}"
        ray.init(address=os.environ[ADDRESS_ENV], log_to_driver=False)
        wait_for(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, "two nodes")
        yield nodes
    finally:
        os.environ.pop(ADDRESS_ENV, None)
        ray.shutdown()
        for node in reversed(nodes):
            stop_node(node)
        shutil.rmtree(temp, ignore_errors=True)


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
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    with pytest.raises(ClusterError, match=f"needs {ADDRESS_ENV} in the environment"):
        connect()


@pytest.mark.slow
def test_sub_rlms_run_on_both_nodes_and_answer(stub: Start, cluster: Any) -> None:
    server = stub(Script(FAN_OUT, sub=leaf, child=CHILD))
    sink = Events()
    result = answer("q", "ctx", progress=sink, **ray_settings(server))
    assert result.answer == sorted(f"plain:{p}" for p in PARTS), result.error
    nodes = {e["node"] for e in sink.events if e["event"] == "final" and "node" in e}
    assert len(nodes) == 2  # the eight sub-RLMs ran on both nodes
    assert result.sub_calls == 8 * 4


@pytest.mark.slow
def test_the_whole_tree_stops_at_max_sub_calls(stub: Start, cluster: Any) -> None:
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
    stub: Start, cluster: list[subprocess.Popen[bytes]]
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
        kill_node(cluster[1])
    finally:
        model.release.set()
        run.join(180)
    assert result and result[0].answer == sorted(f"plain:{p}" for p in PARTS), result
    # The first wave finished before the loss and was not asked again; of the second,
    # the two sub-RLMs on the lost node ran again, from the start, on the head node.
    asked = Counter(part_of(p) for p in model.leaves)
    assert [asked[i] for i in range(4)] == [1, 1, 1, 1], asked
    assert sorted(asked[i] for i in range(4, 8)) == [1, 1, 2, 2], asked
