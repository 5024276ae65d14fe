"""Which generator makes each task family: the one place that lists them."""

from __future__ import annotations

from collections.abc import Callable

from rlm_graph.eval import multihop, niah, oolong
from rlm_graph.eval.tasks import Task

Generator = Callable[[int, int], Task]

GENERATORS: dict[str, Generator] = {
    "niah": niah.generate,
    "niah-files": niah.generate_files,
    "oolong": oolong.generate,
    "pairs": oolong.generate_pairs,
    "multihop": multihop.generate,
}
FAMILIES: tuple[str, ...] = tuple(GENERATORS)
# Families whose large contexts are written to disk as they are made (``tasks.written``);
# the others build theirs in memory, up to ``IN_MEMORY_TOKENS``.
STREAMED: tuple[str, ...] = ("niah", "niah-files", "oolong", "pairs")


def generate(family: str, size: int, seed: int) -> Task:
    """The task of ``family`` at ``size`` tokens for ``seed``."""
    if family not in GENERATORS:
        raise ValueError(f"unknown task {family!r}: choose from {', '.join(FAMILIES)}")
    return GENERATORS[family](size, seed)
