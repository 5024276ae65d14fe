"""Filler prose from a small seeded grammar: the haystack of the needle and document tasks.

Real essays (RULER uses Paul Graham's) are not ours to ship; generated sentences are
free to make at any size, deterministic under a seed, and varied enough that only the
planted sentences carry the words a question asks about.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

_SUBJECTS = (
    "The founder", "A careful reader", "Every startup", "The old essay", "Our investor",
    "A good programmer", "The committee", "Most hackers", "The first customer",
    "A small team", "The language", "Nobody in the room", "The best idea", "Each draft",
)  # fmt: skip
_VERBS = (
    "learned", "rewrote", "ignored", "questioned", "borrowed", "shipped", "measured",
    "described", "doubted", "rebuilt", "noticed", "explained", "forgot", "defended",
)  # fmt: skip
_OBJECTS = (
    "the whole plan", "a stubborn bug", "the market", "every assumption",
    "the prototype", "a hard problem", "the user's complaint", "an unusual design",
    "the weekly numbers", "a quiet rival", "the spare office", "most of the code",
)  # fmt: skip
_TAILS = (
    "before lunch", "in the spring of that year", "without telling anyone",
    "after the demo", "twice over", "with surprising ease", "on a borrowed laptop",
    "while the others slept", "for no good reason", "as the deadline loomed",
)  # fmt: skip


def sentences(chars: int, rng: random.Random) -> list[str]:
    """Sentences (paragraph breaks folded in) adding up to about ``chars`` characters."""
    return list(stream(chars, rng))


def stream(chars: int, rng: random.Random) -> Iterator[str]:
    """:func:`sentences` one at a time, for haystacks too large to hold."""
    total = 0
    while total < chars:
        sentence = (
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_TAILS)}."
        )
        sentence += "\n\n" if rng.random() < 0.12 else " "
        total += len(sentence)
        yield sentence
