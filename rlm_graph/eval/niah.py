"""S-NIAH: one RULER-style needle in a generated haystack, at one of 40 depths.

RULER's single-needle task (the paper's S-NIAH) hides "One of the special magic
numbers for {key} is: {value}." in essays. The essays are not ours to ship, so the
haystack here is prose generated from a small seeded grammar: varied enough that no
fixed string other than the needle's own words finds the needle, and free to make
at any size. The seed picks the depth (40 evenly spaced, as RULER sweeps them), the
key and the 7-digit value.
"""

from __future__ import annotations

import itertools
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rlm_graph.eval import filler
from rlm_graph.eval.tasks import TASK_CHARS_PER_TOKEN, Task, Writer, generated_file, written

NEEDLE = "One of the special magic numbers for {key} is: {value}."
QUESTION = (
    "A special magic number is hidden within the context. "
    "What is the special magic number for {key} mentioned in the provided text? "
    "Reply with the number only."
)
DEPTHS: tuple[float, ...] = tuple(i / 39 for i in range(40))
FILE_CHARS = 10_000  # per file of the folder variant
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

    Above ``STREAM_TOKENS`` the haystack is written to a file as it is made (``written``).
    """
    rng, key, value = _draw(size, seed)
    needle = NEEDLE.format(key=key, value=value) + " "
    context, _ = written(
        size, f"niah-{size}-{seed}.txt", lambda out: _haystack(size, seed, rng, needle, out)
    )
    return _task("niah", size, seed, key, value, context)


def generate_files(size: int, seed: int) -> Task:
    """The needle task as a folder of files, always on disk.

    The same haystack as :func:`generate`'s, cut after sentences into files of about
    ``FILE_CHARS`` characters: 250m tokens make 100,000 files.
    """
    rng, key, value = _draw(size, seed)
    folder = generated_file(f"niah-files-{size}-{seed}")
    shutil.rmtree(folder, ignore_errors=True)
    with _Files(folder) as out:
        _haystack(size, seed, rng, NEEDLE.format(key=key, value=value) + " ", out)
    return _task("niah-files", size, seed, key, value, folder)


def _draw(size: int, seed: int) -> tuple[random.Random, str, str]:
    """The task's seeded generator, after drawing its key and value."""
    rng = random.Random(f"niah:{size}:{seed}")
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
    return rng, key, str(rng.randint(1_000_000, 9_999_999))


def _task(family: str, size: int, seed: int, key: str, value: str, context: str | Path) -> Task:
    question = QUESTION.format(key=key)
    return Task(family, size, seed, question, context, gold=value, kind="text")


class _Files:
    """Text written to numbered files, a new one once a file holds ``FILE_CHARS``."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._count = 0
        self._held = FILE_CHARS
        self._file: TextIO | None = None

    def write(self, text: str) -> None:
        if self._held >= FILE_CHARS:
            self.close()
            path = self._folder / f"{self._count // 1000:03d}" / f"{self._count:06d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", encoding="utf-8")
            self._count, self._held = self._count + 1, 0
        assert self._file is not None
        self._file.write(text)
        self._held += len(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _haystack(size: int, seed: int, rng: random.Random, needle: str, out: Writer) -> None:
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
