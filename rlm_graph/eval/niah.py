"""S-NIAH: one RULER-style needle in a generated haystack, at one of 40 depths.

RULER's single-needle task (the paper's S-NIAH) hides "One of the special magic
numbers for {key} is: {value}." in essays. The essays are not ours to ship, so the
haystack here is prose generated from a small seeded grammar: varied enough that no
fixed string other than the needle's own words finds the needle, and free to make
at any size. The seed picks the depth (40 evenly spaced, as RULER sweeps them), the
key and the 7-digit value.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rlm_graph.eval import filler
from rlm_graph.eval.tasks import TASK_CHARS_PER_TOKEN, Task

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
    """The needle task of ``size`` tokens for ``seed`` (depth ``DEPTHS[seed % 40]``)."""
    rng = random.Random(f"niah:{size}:{seed}")
    key = f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}"
    value = str(rng.randint(1_000_000, 9_999_999))
    needle = NEEDLE.format(key=key, value=value) + " "
    sentences = filler.sentences(size * TASK_CHARS_PER_TOKEN - len(needle), rng)
    spot = round(DEPTHS[seed % len(DEPTHS)] * len(sentences))
    sentences.insert(spot, needle)
    return Task(
        family="niah",
        size=size,
        seed=seed,
        question=QUESTION.format(key=key),
        context="".join(sentences).rstrip(),
        gold=value,
        kind="text",
    )
