"""What an eval task is and how big it is.

A task is fully determined by (family, size, seed): generating it twice gives the same
context, question and gold answer, so a results file can name a run by those three
and a resumed eval regenerates exactly what it left. Sizes are in tokens at about 4
characters per token (the ratio of English text in GPT tokenizers), written as the
papers write them: "8k", "131k", "1m".
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from rlm_graph.storage.home import home

# The size unit of generated tasks (a "131k" task holds 131k x 4 characters, OOLONG's
# ratio), not a window estimate: that is models.usage.WINDOW_CHARS_PER_TOKEN, kept at a
# conservative 3 because it decides what is refused.
TASK_CHARS_PER_TOKEN = 4
MIN_TOKENS = 8_000
MAX_TOKENS = 1_000_000_000
IN_MEMORY_TOKENS = 10_000_000  # families that build their context as one str
# Larger haystacks are written to a file as they are made (the RLM reads them lazily):
# 4 GB of text at 1b tokens is no str to build, and its "base" run is never made.
STREAM_TOKENS = 25_000_000
# How an answer is scored: see ``scoring``.
Kind = Literal["label", "number", "comparison", "pairs", "text"]


class Writer(Protocol):
    """Where a generated context goes: a str buffer, a file or a folder of files."""

    def write(self, text: str, /) -> object:
        """Take the next piece of text."""
        ...


@dataclass(frozen=True)
class Task:
    """One generated question over one generated context, with its gold answer."""

    family: str
    size: int
    seed: int
    question: str
    context: str | Path  # a path: a generated file, read in place (``STREAM_TOKENS``)
    gold: Any
    kind: Kind

    @property
    def target_chars(self) -> int:
        """How long the context was meant to be."""
        return self.size * TASK_CHARS_PER_TOKEN


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmb]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}


def parse_size(text: str) -> int:
    """Tokens from "131k", "1m", "1.5m", "1b" or "8000"; a one-line ValueError otherwise."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"size {text!r} is not a token count: write e.g. 8k, 131k, 1m")
    tokens = round(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if not MIN_TOKENS <= tokens <= MAX_TOKENS:
        raise ValueError(
            f"size {text!r} is out of range: use {format_size(MIN_TOKENS)} to "
            f"{format_size(MAX_TOKENS)} tokens"
        )
    return tokens


def format_size(tokens: int) -> str:
    """The short form of a token count: 131000 -> "131k", 1000000 -> "1m"."""
    for unit, scale in (("b", 1_000_000_000), ("m", 1_000_000), ("k", 1_000)):
        if tokens >= scale and tokens % (scale // 10) == 0:
            return f"{tokens / scale:g}{unit}"
    return str(tokens)


def generated_file(name: str) -> Path:
    """Where a generated context too large to hold is written (removed after its runs)."""
    folder = home() / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def written[T](size: int, name: str, write: Callable[[Writer], T]) -> tuple[str | Path, T]:
    """The context ``write`` makes (and what it returns), as it fits ``size`` tokens.

    Above ``STREAM_TOKENS`` the text goes to the file ``name`` as it is made (the task's
    context is its path, read lazily by the RLM): at 1b tokens it is 4 GB, which no str
    should hold. Both ways write the same text.
    """
    if size > STREAM_TOKENS:
        path = generated_file(name)
        with path.open("w", encoding="utf-8") as out:
            return path, write(out)
    buffer = io.StringIO()
    made = write(buffer)
    return buffer.getvalue(), made
