"""Which runs an eval makes: the methods the paper compares, and every task x size x seed.

Methods (arXiv 2512.24601, section 4):
- ``base``: the plain model with the whole context in its prompt; "not run" when the
  context cannot fit the model's window (the paper's base model at 1M+ tokens);
- ``rlm-no-sub``: the REPL without sub-calls (``max_sub_calls=0``), the paper's ablation;
- ``rlm``: the RLM as the paper runs it, sub-calls are plain model calls (depth 1);
- ``rlm-depth2``: sub-calls are sub-RLMs themselves (``max_depth=2``).

Light (no LangChain, no graph), so ``rlm eval``'s flags are built without the graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rlm_graph.eval.results import RunKey
from rlm_graph.eval.tasks import format_size

METHODS: tuple[str, ...] = ("base", "rlm-no-sub", "rlm", "rlm-depth2")
OFFLINE_METHODS: tuple[str, ...] = ("rlm", "rlm-depth2")


@dataclass(frozen=True)
class Plan:
    """Which runs an eval makes: every task x size x seed x method."""

    tasks: Sequence[str]
    sizes: Sequence[int]
    seeds: Sequence[int]
    methods: Sequence[str]

    def keys(self, task: str, size: int, seed: int) -> list[RunKey]:
        """The runs of one generated task, one per method."""
        return [RunKey(task, format_size(size), seed, m) for m in self.methods]

    def instances(self) -> Iterator[tuple[str, int, int]]:
        """Every (task, size, seed) to generate, in order."""
        for task in self.tasks:
            for size in self.sizes:
                for seed in self.seeds:
                    yield task, size, seed

    @property
    def total(self) -> int:
        """How many runs in all."""
        return len(self.tasks) * len(self.sizes) * len(self.seeds) * len(self.methods)
