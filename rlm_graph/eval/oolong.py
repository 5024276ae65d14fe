"""OOLONG-style aggregation over TREC questions (trec_coarse), and its pairs variant.

Each context line is ``Date: Mar 04, 2025 || User: 53460 || Instance: <question>`` with
the question's label hidden, as in OOLONG's trec_coarse split. Answering needs the
label of every line (semantic work for a sub-model) and then counting (work for code):
the paper's showcase for chunk + ``llm_batch`` + aggregate. Label proportions are drawn
per task, so "which label is most common" differs from task to task.

OOLONG-Pairs asks for every pair of users meeting label conditions. The paper's pairs
queries are fixed for 32K-token contexts; here the thresholds are chosen from the data
so that, at any size, a handful of users qualify and the answer stays a short list.
"""

from __future__ import annotations

import calendar
import datetime
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlm_graph.eval import trec
from rlm_graph.eval.tasks import TASK_CHARS_PER_TOKEN, Kind, Task

LINE = "Date: {date} || User: {user} || Instance: {question}"
DATE_FORMAT = "%b %d, %Y"
FIRST_DAY = datetime.date(2023, 1, 1)
DAYS = 3 * 365
PREAMBLE = (
    "The context lists general-knowledge questions, one per line, as "
    "'Date: ... || User: ... || Instance: <question>'. Each question belongs to exactly "
    "one of these labels, which the data does not show: "
    + ", ".join(trec.LABEL_NAMES)
    + "; decide each label from the question's meaning. "
)
NUMBER_REPLY = " Reply with the number only."
COMPARISONS = ("more common than", "less common than", "same frequency as")
ASKS: dict[str, str] = {
    "count": "How many questions in the data should be labelled '{label}'?" + NUMBER_REPLY,
    "most": "Which label is the most common in the data? Reply with the label only.",
    "least": "Which label is the least common in the data? Reply with the label only.",
    "compare": "Is the label '{label}' more common than, less common than, or the same "
    "frequency as the label '{other}'? Reply with one of: " + ", ".join(COMPARISONS) + ".",
    "user": "How many questions from User {user} should be labelled '{label}'?" + NUMBER_REPLY,
    "month": "How many questions dated in {month} should be labelled '{label}'?" + NUMBER_REPLY,
}
PAIRS_ASKS: dict[str, str] = {
    "both": "List every pair of users in which both users have at least {at_least} "
    "questions that should be labelled '{label}'.",
    "cross": "List every pair of different users in which one user has at least "
    "{at_least} questions labelled '{label}' and the other has at least "
    "{other_at_least} questions labelled '{other}'.",
}
PAIRS_REPLY = (
    " Reply with one pair per line as (smaller user ID, larger user ID), or NONE if no "
    "pair qualifies."
)
MAX_QUALIFYING = 8  # users meeting a pairs condition: keeps answers short at any size


@dataclass(frozen=True)
class Record:
    """One context line and its hidden label."""

    date: datetime.date
    user: int
    question: str
    label: str

    def line(self) -> str:
        """The line as the model sees it: no label."""
        return LINE.format(
            date=self.date.strftime(DATE_FORMAT), user=self.user, question=self.question
        )


@dataclass(frozen=True)
class Query:
    """An aggregation question: ``kind`` is a key of ``ASKS`` or ``PAIRS_ASKS``."""

    kind: str
    label: str = ""
    other: str = ""
    user: int = 0
    month: str = ""  # "March 2024"
    at_least: int = 0
    other_at_least: int = 0

    def text(self) -> str:
        """The question the model reads."""
        if self.kind in PAIRS_ASKS:
            return PREAMBLE + PAIRS_ASKS[self.kind].format(**vars(self)) + PAIRS_REPLY
        return PREAMBLE + ASKS[self.kind].format(**vars(self))


def _pattern(template: str) -> re.Pattern[str]:
    """A regex reading a template's fields back (labels quoted, numbers as digits)."""
    fields = {
        "label": "(?P<label>[a-z ]+)",
        "other": "(?P<other>[a-z ]+)",
        "user": r"(?P<user>\d+)",
        "month": r"(?P<month>[A-Z][a-z]+ \d{4})",
        "at_least": r"(?P<at_least>\d+)",
        "other_at_least": r"(?P<other_at_least>\d+)",
    }
    parts = re.split(r"(\{\w+\})", template)
    return re.compile(
        "".join(fields[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts)
    )


_PARSERS = {kind: _pattern(ask) for kind, ask in {**ASKS, **PAIRS_ASKS}.items()}


def parse_question(question: str) -> Query | None:
    """The query a question asks, read back from its text (``None``: not an OOLONG one)."""
    for kind, pattern in _PARSERS.items():
        if match := pattern.search(question):
            values: dict[str, Any] = {k: v for k, v in match.groupdict().items() if v}
            for name in ("user", "at_least", "other_at_least"):
                if name in values:
                    values[name] = int(values[name])
            return Query(kind=kind, **values)
    return None


# -- the context ------------------------------------------------------------------------


def make_records(size: int, rng: random.Random) -> list[Record]:
    """Dated, attributed TREC questions filling about ``size`` tokens, sorted by date."""
    pools = trec.questions_by_label()
    labels = list(trec.LABEL_NAMES)
    label_weights = [rng.uniform(0.3, 1.0) for _ in labels]
    target = size * TASK_CHARS_PER_TOKEN
    users = rng.sample(range(10_000, 100_000), max(8, int(2 * math.sqrt(target / 85))))
    user_weights = [rng.uniform(0.2, 1.0) for _ in users]
    records: list[Record] = []
    total = 0
    while total < target:
        label = rng.choices(labels, label_weights)[0]
        record = Record(
            date=FIRST_DAY + datetime.timedelta(days=rng.randrange(DAYS)),
            user=rng.choices(users, user_weights)[0],
            question=rng.choice(pools[label]),
            label=label,
        )
        records.append(record)
        total += len(record.line()) + 1
    records.sort(key=lambda r: r.date)
    return records


def context_of(records: Sequence[Record]) -> str:
    """The context text: one line per record."""
    return "\n".join(record.line() for record in records)


def month_name(date: datetime.date) -> str:
    """How questions name a month: "March 2024"."""
    return f"{calendar.month_name[date.month]} {date.year}"


# -- gold answers -----------------------------------------------------------------------


def _unique_extreme(counts: Counter[str], pick: Callable[..., int]) -> str | None:
    """The label with the max (or min) count, if no other label ties it."""
    value = pick(counts[label] for label in trec.LABEL_NAMES)
    winners = [label for label in trec.LABEL_NAMES if counts[label] == value]
    return winners[0] if len(winners) == 1 else None


def gold_answer(query: Query, records: Sequence[Record]) -> tuple[Any, Kind] | None:
    """The true answer and how it is scored; ``None`` when it would be ambiguous (a tie)."""
    counts = Counter(r.label for r in records)
    if query.kind == "count":
        return counts[query.label], "number"
    if query.kind in ("most", "least"):
        winner = _unique_extreme(counts, max if query.kind == "most" else min)
        return (winner, "label") if winner else None
    if query.kind == "compare":
        a, b = counts[query.label], counts[query.other]
        return COMPARISONS[0 if a > b else 1 if a < b else 2], "comparison"
    if query.kind == "user":
        return sum(r.user == query.user and r.label == query.label for r in records), "number"
    if query.kind == "month":
        hits = (month_name(r.date) == query.month and r.label == query.label for r in records)
        return sum(hits), "number"
    return qualifying_pairs(query, records), "pairs"


def per_user(records: Sequence[Record], label: str) -> Counter[int]:
    """How many questions of ``label`` each user asked (users with none included)."""
    counts: Counter[int] = Counter({r.user: 0 for r in records})
    counts.update(r.user for r in records if r.label == label)
    return counts


def qualifying_pairs(query: Query, records: Sequence[Record]) -> list[list[int]]:
    """The gold pairs of a pairs query, each as [smaller ID, larger ID], sorted."""
    first = {u for u, n in per_user(records, query.label).items() if n >= query.at_least}
    if query.kind == "both":
        second = first
    else:
        counts = per_user(records, query.other)
        second = {u for u, n in counts.items() if n >= query.other_at_least}
    return sorted([min(u, v), max(u, v)] for u, v in _distinct_pairs(first, second))


def _distinct_pairs(first: set[int], second: set[int]) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u in first for v in second if u != v}


# -- drawing a question -----------------------------------------------------------------


def draw_query(records: Sequence[Record], rng: random.Random) -> Query:
    """A random aggregation question; ties fall back to a plain count."""
    label, other = rng.sample(trec.LABEL_NAMES, 2)
    record = rng.choice(records)
    query = Query(
        kind=rng.choice(tuple(ASKS)),
        label=label,
        other=other,
        user=record.user,
        month=month_name(record.date),
    )
    if gold_answer(query, records) is None:
        query = Query(kind="count", label=label)
    return _only_its_fields(query)


def _only_its_fields(query: Query) -> Query:
    """Drop the fields its question does not mention, so parse(text) gives it back."""
    template = {**ASKS, **PAIRS_ASKS}[query.kind]
    used = {name for name in vars(query) if "{" + name + "}" in template}
    return Query(kind=query.kind, **{k: v for k, v in vars(query).items() if k in used})


def threshold(counts: Counter[int], rng: random.Random) -> int:
    """A per-user minimum that between 2 and ``MAX_QUALIFYING`` users meet, if one exists."""
    ranked = sorted(counts.values(), reverse=True)
    wanted = rng.randint(2, min(6, len(ranked)))
    at_least = max(1, ranked[wanted - 1])
    while sum(n >= at_least for n in ranked) > MAX_QUALIFYING:
        at_least += 1
    return at_least


def draw_pairs_query(records: Sequence[Record], rng: random.Random) -> Query:
    """A pairs question whose thresholds fit this data."""
    label, other = rng.sample(trec.LABEL_NAMES, 2)
    kind = rng.choice(tuple(PAIRS_ASKS))
    at_least = threshold(per_user(records, label), rng)
    if kind == "both":
        return Query(kind=kind, label=label, at_least=at_least)
    other_at_least = threshold(per_user(records, other), rng)
    return Query(kind, label, other, at_least=at_least, other_at_least=other_at_least)


def _task(family: str, size: int, seed: int, draw: Callable[..., Query]) -> Task:
    rng = random.Random(f"{family}:{size}:{seed}")
    records = make_records(size, rng)
    query = draw(records, rng)
    gold = gold_answer(query, records)
    assert gold is not None  # draw_query replaces ambiguous questions
    return Task(family, size, seed, query.text(), context_of(records), gold[0], gold[1])


def generate(size: int, seed: int) -> Task:
    """The OOLONG-style task of ``size`` tokens for ``seed``."""
    return _task("oolong", size, seed, draw_query)


def generate_pairs(size: int, seed: int) -> Task:
    """The OOLONG-Pairs-style task of ``size`` tokens for ``seed``."""
    return _task("pairs", size, seed, draw_pairs_query)
