"""S-NIAH: one RULER-style needle in a generated haystack, at one of 40 depths.

RULER's single-needle task (the paper's S-NIAH) hides "One of the special magic
numbers for {key} is: {value}." in essays. The essays are not ours to ship, so the
haystack here is prose generated from a small seeded grammar: varied enough that no
fixed string other than the needle's own words finds the needle, and free to make
at any size. The seed picks the depth (40 evenly spaced, as RULER sweeps them), the
key and the 7-digit value.
"""

from __future__ import annotations

import io
import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rlm_graph.eval import filler
from rlm_graph.eval.tasks import STREAM_TOKENS, TASK_CHARS_PER_TOKEN, Task, generated_file

NEEDLE = "One of the special magic numbers for {key} is: {value}."
QUESTION = (
    "A special magic number is hidden within the context. "
    "What is the special magic number for {key} mentioned in the provided text? "
    "Reply with the number only."
)
DEPTHS: tuple[float, ...] = tuple(i / 39 for i in range(40))
_QUESTION = re.compile(r"What is the special magic number for (\S+) mentioned")

_ADJECTIVES = (
    "harmonious", "quiet", "amber", "brisk", "candid", "dusty", "eager", "fragile",
    "gentle", "hollow", "icy", "jagged", "keen", "lucid", "mellow", "nimble", "opaque",
    "placid", "rustic", "sturdy", "tender", "uneven", "vivid", "wistful", "zealous",
)  # fmt: skip
_NOUNS = (
    "uniform", "lantern", "harbor", "meadow", "compass", "orchard", "violin", "glacier",
    "quarry", "ledger", "falcon", "pillar", "canyon", "thimble", "beacon", "saddle",
    "kettle", "anchor", "garnet", "hammock", "island", "jigsaw", "marble", "nectar",
)  # fmt: skip


@dataclass(frozen=True)
class NeedleQuery:
    """What the question asks: the value stored under ``key``."""

    key: str


def parse_question(question: str) -> NeedleQuery | None:
    """The needle's key, read back from the question (``None``: not a needle question)."""
    match = _QUESTION.search(question)
    return NeedleQuery(match.group(1)) if match else None


def needle_pattern(key: str) -> re.Pattern[str]:
    """The needle sentence of ``key``, with its value as group 1."""
    template = re.escape(NEEDLE).replace(re.escape("{key}"), re.escape(key))
    return re.compile(template.replace(re.escape("{value}"), r"(\d+)"))


def generate(size: int, seed: int) -> Task:
    """The needle task of ``size`` tokens for ``seed`` (depth ``DEPTHS[seed % 40]``).

    Above ``STREAM_TOKENS`` the haystack is written to a file (the task's context is its
    path, read lazily by the RLM): at 1b tokens it is 4 GB, which no str should hold.
    Both ways write the same text.
    """
    rng = random.Random(f"niah:{size}:{seed}")
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
    value = str(rng.randint(1_000_000, 9_999_999))
    needle = NEEDLE.format(key=key, value=value) + " "
    context: str | Path
    if size > STREAM_TOKENS:
        context = generated_file(f"niah-{size}-{seed}.txt")
        with context.open("w", encoding="utf-8") as out:
            _haystack(size, seed, rng, needle, out)
    else:
        buffer = io.StringIO()
        _haystack(size, seed, rng, needle, buffer)
        context = buffer.getvalue()
    return Task(
        family="niah",
        size=size,
        seed=seed,
        question=QUESTION.format(key=key),
        context=context,
        gold=value,
        kind="text",
    )


def _haystack(size: int, seed: int, rng: random.Random, needle: str, out: TextIO) -> None:
    """Filler sentences with ``needle`` at the seed's depth, written as they are made.

    Where the needle goes depends on how many sentences there are, so they are drawn
    twice from the same generator state: once to count them, once to write them.
    """
    chars = size * TASK_CHARS_PER_TOKEN - len(needle)
    state = rng.getstate()
    count = sum(1 for _ in filler.stream(chars, rng))
    rng.setstate(state)
    spot = round(DEPTHS[seed % len(DEPTHS)] * count)
    pieces = _with_needle(filler.stream(chars, rng), spot, needle)
    last = next(pieces)
    for piece in pieces:
        out.write(last)
        last = piece
    out.write(last.rstrip())


def _with_needle(sentences: Iterator[str], spot: int, needle: str) -> Iterator[str]:
    yield from itertools.islice(sentences, spot)
    yield needle
    yield from sentences
