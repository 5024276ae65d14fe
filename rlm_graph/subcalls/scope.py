"""How recursion works: where a run sits in its tree, and what the whole tree may spend.

An RLM's sub-call is either a plain model call or, while ``depth + 1 < max_depth``, a
whole sub-RLM (the same graph one level deeper) whose own steps and sub-calls are
sub-calls of the tree too. Every run of a tree holds a :class:`Scope`: its depth, the
depth limit and the tree's one :class:`Budget`. The root makes the scope at each cell
from its durable state; a sub-RLM receives its parent's scope one level deeper
(:meth:`Scope.child`), explicitly, so no process-global registry is needed and the
budget can live elsewhere (a store, a cluster actor) behind the same protocol.

This module is the one place that knows what depth means: whether a sub-call is a
sub-RLM (:attr:`Scope.recursive`), whether a run's step is drawn from the tree's
budget, and what a run reports as its own sub-call count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from rlm_graph.deployment import TRUSTED, Deployment
from rlm_graph.models.usage import Usage, add_usage
from rlm_graph.settings import Settings


class Budget(Protocol):
    """Sub-calls left for a whole recursion tree, and its spend, shared by every run in it."""

    @property
    def limit(self) -> int:
        """Calls the tree had when this budget was opened."""
        ...

    @property
    def used(self) -> int:
        """Calls taken since then."""
        ...

    @property
    def left(self) -> int:
        """Calls still allowed."""
        ...

    @property
    def spent(self) -> Usage:
        """The tree's token usage so far (what cost limits are checked against)."""
        ...

    def take(self, count: int = 1) -> bool:
        """Reserve ``count`` calls, all or nothing."""
        ...

    def give_back(self, count: int) -> None:
        """Return ``count`` reserved calls that were never made (refused at a cost limit)."""
        ...

    def spend(self, usage: Usage) -> None:
        """Add one model call's usage to the tree's spend, as it happens."""
        ...


class LocalBudget:
    """A :class:`Budget` in this process's memory, safe to share between threads.

    ``spent`` starts at what the root had spent before and grows with every model call
    anywhere in the tree as it happens, so a cost limit stops a fan-out midway rather
    than after it.
    """

    def __init__(self, limit: int, spent: Usage | None = None) -> None:
        self._limit = limit
        self._used = 0
        self._spent: Usage = dict(spent or {})
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        """Calls the tree had when this budget was opened."""
        return self._limit

    @property
    def used(self) -> int:
        """Calls taken since then."""
        with self._lock:
            return self._used

    @property
    def left(self) -> int:
        """Calls still allowed."""
        with self._lock:
            return self._limit - self._used

    @property
    def spent(self) -> Usage:
        """The tree's token usage so far."""
        with self._lock:
            return self._spent

    def take(self, count: int = 1) -> bool:
        """Reserve ``count`` calls, all or nothing."""
        with self._lock:
            if self._used + count > self._limit:
                return False
            self._used += count
            return True

    def give_back(self, count: int) -> None:
        """Return ``count`` reserved calls that were never made."""
        with self._lock:
            self._used -= count

    def spend(self, usage: Usage) -> None:
        """Add one model call's usage to the tree's spend."""
        with self._lock:
            self._spent = add_usage(self._spent, usage)


# Opens a tree's budget: (calls allowed, what the tree had spent before) -> Budget.
OpenBudget = Callable[[int, Usage], Budget]


@dataclass(frozen=True)
class Scope:
    """A run's place in its recursion tree: depth, depth limit, budget, deployment.

    Every run of a tree answers to its root's deployment (a sub-RLM inherits it).
    """

    depth: int
    max_depth: int
    budget: Budget
    deployment: Deployment = TRUSTED

    @classmethod
    def root(
        cls,
        settings: Settings,
        calls_made: int,
        spent: Usage,
        deployment: Deployment = TRUSTED,
        open_budget: OpenBudget = LocalBudget,
    ) -> Scope:
        """The scope of a root run's step, from what its durable state says it has used.

        ``open_budget`` makes the tree's budget where its sub-RLMs can reach it: in this
        process by default, in a cluster actor when they run on a cluster.
        """
        budget = open_budget(settings.max_sub_calls - calls_made, spent)
        return cls(0, settings.max_depth, budget, deployment)

    @property
    def recursive(self) -> bool:
        """Whether a sub-call from this run is a sub-RLM rather than a plain model call."""
        return self.depth + 1 < self.max_depth

    def child(self) -> Scope:
        """The scope of a sub-RLM started by this run: one level deeper, the same budget."""
        return replace(self, depth=self.depth + 1)

    def blocked(self, settings: Settings) -> str:
        """Why this run may not make another model call, or "" while it may.

        A cost limit blocks any run; a sub-RLM is also blocked once its tree has no
        sub-calls left, since each of its model calls is one.
        """
        if reason := settings.over_budget(self.budget.spent):
            return reason
        if self.depth > 0 and self.budget.left <= 0:
            return "sub-call budget exhausted"
        return ""

    def begin_step(self, settings: Settings) -> str:
        """Start a model step: "" when it may go on, else why not.

        The root's steps are bounded by ``max_iterations``; a sub-RLM's every step is a
        sub-call of its tree, drawn from the shared budget.
        """
        if reason := self.blocked(settings):
            return reason
        if self.depth > 0 and not self.budget.take(1):
            return "sub-call budget exhausted"
        return ""

    @property
    def answers_partially(self) -> bool:
        """Whether a run stopped by a limit answers with the last output its code printed.

        The root does: a person reads it, marked as cut off. A sub-RLM answers nothing,
        so its caller's code sees that it was cut off, not a stray traceback.
        """
        return self.depth == 0

    def counted(self, own_calls: int) -> int:
        """What a cell adds to this run's ``sub_calls``.

        The root counts its whole tree (``max_sub_calls`` bounds the tree, and the next
        cell's budget is opened from this count); a sub-RLM counts the calls it made.
        """
        return self.budget.used if self.depth == 0 else own_calls

    def memo_key(self, settings: Settings) -> list[object]:
        """What answers this run's sub-calls: a changed answerer must not reuse answers."""
        answerer: list[object] = [settings.effective_sub_model, settings.effective_sub_base_url]
        if self.recursive:  # sub-RLMs: the root model answers too, with their depth left
            answerer += [settings.model, settings.base_url, self.max_depth - self.depth]
        return answerer
