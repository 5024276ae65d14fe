"""The results file: one JSON line per finished run, which is what makes evals resumable.

A line is appended (and flushed) as soon as a run ends, so a crash or Ctrl-C loses at
most the run in progress; the next ``rlm eval`` with the same file skips every run
already recorded. A torn last line (a crash mid-write) is ignored and that run is
simply done again. A file records one pair of models: resuming it with other models
would mix their scores, so that is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]


@dataclass(frozen=True, order=True)
class RunKey:
    """What names a run: the task, its size and seed, and the method."""

    task: str
    size: str
    seed: int
    method: str

    @classmethod
    def of(cls, row: Row) -> RunKey:
        """The key a recorded row was written under."""
        return cls(row["task"], row["size"], row["seed"], row["method"])


class ResultsFile:
    """Rows of finished runs, on disk and in memory."""

    def __init__(self, path: Path, models: dict[str, str]) -> None:
        self.path = path
        self.models = models
        self.rows: dict[RunKey, Row] = {}
        self._torn = False  # the file ends inside a line: start the next one on a new line
        if path.exists():
            self._load()

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        self._torn = bool(text) and not text.endswith("\n")
        for number, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
                key = RunKey.of(row)
            except (ValueError, KeyError, TypeError):
                continue  # a torn line from a crash: that run is done again
            if row.get("models") != self.models:
                raise ValueError(
                    f"results file {self.path} line {number} is a run of {row.get('models')}, "
                    f"not {self.models}: pass another --out, or the same models"
                )
            self.rows[key] = row

    def __contains__(self, key: RunKey) -> bool:
        return key in self.rows

    def add(self, row: Row) -> None:
        """Record a finished run, on disk first."""
        row = {**row, "models": self.models}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            if self._torn:
                out.write("\n")
                self._torn = False
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            out.flush()
        self.rows[RunKey.of(row)] = row
