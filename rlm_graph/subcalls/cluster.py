"""The Ray side of a recursion tree: the connection to the cluster and the shared budget.

With ``sub_rlm_executor="ray"`` a tree's sub-RLMs run as Ray tasks on any node, so its
:class:`~rlm_graph.subcalls.scope.Budget` cannot live in one process's memory: it is a
Ray actor (:class:`RayBudget`), opened by the root for each cell and reached by every
sub-RLM through the scope it is handed. Ray is an optional extra (``rlm-graph[ray]``):
this module imports it only when a run asks for the cluster.
"""

from __future__ import annotations

import os
from typing import Any

from rlm_graph.models.usage import Usage
from rlm_graph.settings import MISSING_RAY
from rlm_graph.subcalls.scope import LocalBudget

ADDRESS_ENV = "RLM_RAY_ADDRESS"


class ClusterError(RuntimeError):
    """The cluster cannot be used; the message says what to change."""


def ray_module() -> Any:
    """The ``ray`` package, or a one-line error naming the extra that installs it.

    Ray's crash handler is turned off first (it is read when ``ray`` is imported): it
    replaces the signal handlers wasmtime traps through, and measured, a sandbox running
    in this process (``RLM_SANDBOX_ISOLATION=inline``, the tests) that hit a trap after
    ``ray.init`` killed the process with "Illegal instruction". It only prints a
    crash's stack.
    """
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(MISSING_RAY) from exc
    return ray


def connect() -> Any:
    """``ray``, connected to the deployment's cluster (``RLM_RAY_ADDRESS``).

    The address comes from the environment of the process, never from a run's
    settings: a caller of a server chooses the executor, the operator chooses the
    cluster. ``local`` starts a Ray instance inside this process's machine.
    """
    ray = ray_module()
    if not ray.is_initialized():
        address = os.environ.get(ADDRESS_ENV, "")
        if not address:
            raise ClusterError(
                f"sub_rlm_executor='ray' needs {ADDRESS_ENV} in the environment: a cluster's "
                "host:port, 'auto' for the cluster this machine belongs to, or 'local'"
            )
        ray.init(address=address, log_to_driver=False)
    return ray


class _BudgetActor:
    """The tree's :class:`LocalBudget`, held by one Ray actor that every node can call."""

    def __init__(self, limit: int, spent: Usage) -> None:
        self._budget = LocalBudget(limit, spent)

    def take(self, count: int) -> bool:
        return self._budget.take(count)

    def give_back(self, count: int) -> None:
        self._budget.give_back(count)

    def spend(self, usage: Usage) -> None:
        self._budget.spend(usage)

    def state(self) -> tuple[int, Usage]:
        return self._budget.used, self._budget.spent


class RayBudget:
    """A :class:`~rlm_graph.subcalls.scope.Budget` in a Ray actor, shared by a whole tree.

    The actor takes one call at a time, so ``take`` is all-or-nothing across every node
    exactly as the in-process budget is across threads. It is pinned to the node that
    opened it (the root's): it lives as long as the run that needs it, and a lost
    worker node takes no budget with it. Each read or write is one actor call (about a
    millisecond on one machine), made from the sub-call thread, never the model's.
    """

    def __init__(self, actor: Any, limit: int) -> None:
        self._actor = actor
        self._limit = limit

    @classmethod
    def open(cls, limit: int, spent: Usage | None = None) -> RayBudget:
        """A budget of ``limit`` calls in a new actor on this process's node."""
        ray = connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = (
            ray.remote(_BudgetActor)
            .options(num_cpus=0, scheduling_strategy=here)
            .remote(limit, dict(spent or {}))
        )
        return cls(actor, limit)

    @property
    def limit(self) -> int:
        """Calls the tree had when this budget was opened."""
        return self._limit

    @property
    def used(self) -> int:
        """Calls taken since then, by any run of the tree on any node."""
        used: int = self._call("state")[0]
        return used

    @property
    def left(self) -> int:
        """Calls still allowed."""
        return self._limit - self.used

    @property
    def spent(self) -> Usage:
        """The tree's token usage so far."""
        spent: Usage = self._call("state")[1]
        return spent

    def take(self, count: int = 1) -> bool:
        """Reserve ``count`` calls, all or nothing."""
        taken: bool = self._call("take", count)
        return taken

    def give_back(self, count: int) -> None:
        """Return ``count`` reserved calls that were never made."""
        self._call("give_back", count)

    def spend(self, usage: Usage) -> None:
        """Add one model call's usage to the tree's spend."""
        self._call("spend", usage)

    def _call(self, method: str, *args: Any) -> Any:
        return ray_module().get(getattr(self._actor, method).remote(*args))
