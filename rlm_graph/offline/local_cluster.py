"""A Ray cluster of several nodes on this one machine, for tests, benchmarks and trying Ray.

Each node is a ``ray start --block`` in a process group of its own (the head first,
then the others joining it), declaring ``rlm_sandbox`` slots, so a run with
``sub_rlm_executor="ray"`` and ``RLM_RAY_ADDRESS`` set to :attr:`LocalCluster.address`
spreads its sub-RLMs over the nodes exactly as on separate machines. Every process is
stopped by its id; nothing else on the machine is touched. Needs the ``ray`` extra.
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
import time
from contextlib import suppress
from pathlib import Path
from types import TracebackType

RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first), read from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with suppress(OSError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            found.extend(map(int, children))
            todo.extend(map(int, children))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every process below it."""
    total = 0
    for each in [pid, *descendants(pid)]:
        with suppress(OSError, StopIteration):
            status = Path(f"/proc/{each}/status").read_text().splitlines()
            total += int(next(ln for ln in status if ln.startswith("VmRSS:")).split()[1]) * 1024
    return total


class LocalCluster:
    """``nodes`` Ray nodes on this machine, ``cpus`` CPUs and ``slots`` sandbox slots each."""

    def __init__(self, nodes: int = 2, *, cpus: int = 1, slots: int = 2) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._flags = [f"--num-cpus={cpus}", "--resources=" + json.dumps({"rlm_sandbox": slots})]
        self._count = nodes
        # Short: Ray's socket paths under it must fit in 107 bytes.
        self._temp = tempfile.mkdtemp(prefix="rlmray")
        self.nodes: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 90.0) -> LocalCluster:
        """Start the head, wait until it listens, then start the other nodes."""
        head = [f"--port={self.port}", f"--temp-dir={self._temp}", "--include-dashboard=false"]
        self.nodes.append(self._node("--head", *head))
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if time.monotonic() > deadline or self.nodes[0].poll() is not None:
                self.stop()
                raise RuntimeError(f"the Ray head node did not start on port {self.port}")
            time.sleep(0.1)
        for _ in range(self._count - 1):
            self.nodes.append(self._node(f"--address={self.address}"))
        return self

    def _node(self, *flags: str) -> subprocess.Popen[bytes]:
        argv = [str(RAY), "start", "--block", "--disable-usage-stats", *self._flags, *flags]
        return subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def kill_node(self, index: int) -> None:
        """Node ``index`` dies: its ``ray start``, raylet and every worker below it.

        Ray puts each worker in a process group of its own, and a raylet killed alone
        leaves its workers to finish their tasks and report to the driver: nothing
        would be lost. A node that dies takes them all.
        """
        node = self.nodes[index]
        for pid in [node.pid, *descendants(node.pid)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.wait(30)

    def stop(self) -> None:
        """Kill every node (a clean ``ray stop`` would stop other clusters on the machine)."""
        for index in reversed(range(len(self.nodes))):
            self.kill_node(index)
        shutil.rmtree(self._temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
