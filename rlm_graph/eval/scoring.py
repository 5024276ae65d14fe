"""Scores in [0, 1], as the papers score their benchmarks.

OOLONG: exact match for labels and comparisons, and partial credit for numbers,
``0.75 ** |prediction - gold|`` (one off scores 0.75, three off 0.42). OOLONG-Pairs: F1
over the set of pairs. S-NIAH (RULER) and the multi-hop task: the gold string appears
in the answer, after normalising case, punctuation and spacing.

Answers arrive as model text ("Answer: 42", "The label is 'location'.") or as values
from FINAL (42, a list of pairs); each reader accepts both.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rlm_graph.eval import oolong, trec
from rlm_graph.eval.tasks import Kind

PARTIAL_CREDIT = 0.75
_INTEGER = re.compile(r"-?\d[\d,]*")
_PAIR = re.compile(r"(\d+)\s*,\s*(\d+)")


def as_text(answer: Any) -> str:
    """Any answer as text: strings as they are, values as JSON."""
    if isinstance(answer, str):
        return answer
    return json.dumps(answer, default=str)


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: how names and labels compare."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def read_number(answer: Any) -> int | None:
    """The number an answer gives: an int value, or the last integer in the text."""
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        return round(answer)
    found = _INTEGER.findall(as_text(answer))
    return int(found[-1].replace(",", "")) if found else None


def read_choice(answer: Any, choices: tuple[str, ...]) -> str | None:
    """The one choice an answer names: the whole answer, else the only choice it contains."""
    text = normalize(as_text(answer))
    if text in choices:
        return text
    named = [c for c in choices if re.search(rf"\b{re.escape(c)}\b", text)]
    return named[0] if len(named) == 1 else None


def read_pairs(answer: Any) -> set[tuple[int, int]]:
    """Every pair of integers the answer lists, each as (smaller, larger)."""
    pairs = set()
    for a, b in _PAIR.findall(as_text(answer)):
        first, second = int(a), int(b)
        pairs.add((min(first, second), max(first, second)))
    return pairs


def f1(predicted: set[tuple[int, int]], gold: set[tuple[int, int]]) -> float:
    """F1 of two sets; two empty sets agree perfectly."""
    if not predicted and not gold:
        return 1.0
    hits = len(predicted & gold)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


def score(kind: Kind, answer: Any, gold: Any) -> float:
    """The score of ``answer`` against ``gold`` for a task of this kind."""
    if answer is None:
        return 0.0
    if kind == "number":
        number = read_number(answer)
        return 0.0 if number is None else PARTIAL_CREDIT ** abs(number - int(gold))
    if kind == "label":
        return float(read_choice(answer, trec.LABEL_NAMES) == gold)
    if kind == "comparison":
        return float(read_choice(answer, oolong.COMPARISONS) == gold)
    if kind == "pairs":
        return f1(read_pairs(answer), {(a, b) for a, b in gold})
    return float(normalize(str(gold)) in normalize(as_text(answer)))
