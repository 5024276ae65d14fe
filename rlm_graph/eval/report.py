"""What an eval prints: a progress bar while it runs, then a summary as a table or JSON.

The summary has one line per (task, size, method), with the numbers the paper puts
side by side: accuracy, time per run (mean and 95th percentile, because RLM runs have
long tails), tokens and dollars. Runs of the plain model that could not fit its window
are counted as "not run", never as zero, so they cannot drag an average down.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from rlm_graph.eval.results import Row, RunKey

NOT_RUN = "not_run"


@dataclass(frozen=True)
class Summary:
    """The numbers of one method on one task at one size."""

    task: str
    size: str
    method: str
    runs: int
    not_run: int
    failed: int
    accuracy: float | None
    mean_seconds: float | None
    p95_seconds: float | None
    mean_tokens: float | None
    dollars: float | None

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON, numbers rounded to what is worth reading."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, nearest rank: with 20 runs, the second slowest."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(0.95 * len(ranked)) - 1)]


def summarize(rows: Iterable[Row]) -> list[Summary]:
    """One summary per (task, size, method), in the order the rows came."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["size"], row["method"]), []).append(row)
    summaries = []
    for (task, size, method), group in groups.items():
        ran = [r for r in group if r["status"] != NOT_RUN]
        seconds = [r["seconds"] for r in ran]
        costs = [r["dollars"] for r in ran]
        summaries.append(
            Summary(
                task=task,
                size=size,
                method=method,
                runs=len(ran),
                not_run=len(group) - len(ran),
                failed=sum(r["status"] == "failed" for r in ran),
                accuracy=statistics.fmean(r["score"] for r in ran) if ran else None,
                mean_seconds=statistics.fmean(seconds) if ran else None,
                p95_seconds=p95(seconds) if ran else None,
                mean_tokens=statistics.fmean(r["tokens"] for r in ran) if ran else None,
                dollars=sum(costs) if ran and None not in costs else None,
            )
        )
    return summaries


def _cell(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def table(summaries: Sequence[Summary]) -> str:
    """The summary as an aligned plain-text table."""
    headers = ("task", "size", "method", "runs", "not run", "failed", "accuracy",
               "mean s", "p95 s", "tokens/run", "dollars")  # fmt: skip
    lines = [
        (
            s.task,
            s.size,
            s.method,
            str(s.runs),
            str(s.not_run),
            str(s.failed),
            _cell(None if s.accuracy is None else 100 * s.accuracy, "{:.1f}%"),
            _cell(s.mean_seconds, "{:.1f}"),
            _cell(s.p95_seconds, "{:.1f}"),
            _cell(s.mean_tokens, "{:,.0f}"),
            "n/a" if s.runs and s.dollars is None else _cell(s.dollars, "${:.4f}"),
        )
        for s in summaries
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    rendered = [headers, tuple("-" * w for w in widths), *lines]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rendered
    )


class ProgressBar:
    """Runs done out of all, on stderr: one redrawn line on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream: TextIO, *, live: bool, quiet: bool = False) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.live = live and not quiet
        self.quiet = quiet

    def start(self, key: RunKey) -> None:
        """A run begins: a terminal shows which."""
        if self.live:
            self._draw(f"{key.task} {key.size} seed {key.seed} {key.method}")

    def finish(self, key: RunKey, row: Row) -> None:
        """A run ended (or was found already done in the results file)."""
        self.done += 1
        outcome = row["status"] if row["status"] == NOT_RUN else f"score {row['score']:.2f}"
        label = f"{key.task} {key.size} seed {key.seed} {key.method}: {outcome}"
        if self.live:
            self._draw(label)
        elif not self.quiet:
            print(f"rlm eval: [{self.done}/{self.total}] {label}", file=self.stream, flush=True)

    def close(self) -> None:
        """Clear the bar so the table starts on a clean line."""
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _draw(self, label: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        filled = round(20 * self.done / max(self.total, 1))
        bar = f"rlm eval: [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} {label}"
        self.stream.write("\r" + bar[: max(width - 1, 0)] + "\x1b[K")
        self.stream.flush()
