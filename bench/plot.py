"""The small PNG in docs/benchmarks.md: overhead per iteration and batch wall time."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PNG = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.png"


def save(
    per_iter_ms: Mapping[str, float],
    batch_s: Mapping[str, float],
    ideal_s: Mapping[str, float],
    path: Path = PNG,
) -> Path | None:
    """Draw both panels to ``path``; None when matplotlib (the bench extra) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    peers = list(per_iter_ms)
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3), dpi=100)
    left.bar(peers, [max(0.0, per_iter_ms[p]) for p in peers], color="#4c72b0")
    left.set_title("overhead per iteration (ms)")
    right.bar(peers, [batch_s[p] for p in peers], color="#dd8452", label="measured")
    right.scatter(
        peers,
        [ideal_s[p] for p in peers],
        color="black",
        marker="_",
        s=400,
        label="ideal ceil(200/c) x 0.3 s",
        zorder=3,
    )
    right.set_title("200 sub-calls x 0.3 s, wall (s)")
    right.legend(fontsize=7)
    for axis in (left, right):
        axis.tick_params(labelsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
