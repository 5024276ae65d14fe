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
import itertools
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

from rlm_graph.eval import trec
from rlm_graph.eval.tasks import TASK_CHARS_PER_TOKEN, Kind, Task, Writer, written

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


class Record(NamedTuple):
    """One context line, and what questions ask of it: its hidden label, user and month."""

    line: str  # as the model sees it: no label
    label: str
    user: int
    month: str  # "March 2024"


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


@dataclass
class Tally:
    """What the gold answers need of the records, counted as the lines are written.

    A 1b-token context has ~47 million records: they are never held, only these counts
    (a few thousand users by six labels).
    """

    by_user: Counter[tuple[int, str]] = field(default_factory=Counter)
    by_month: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, record: Record) -> None:
        """Count one record."""
        self.by_user[record.user, record.label] += 1
        self.by_month[record.month, record.label] += 1

    def labels(self) -> Counter[str]:
        """Records per label."""
        return _sum_by(self.by_month, 1)

    def users(self) -> Counter[int]:
        """Records per user, in the order users first appear."""
        return _sum_by(self.by_user, 0)

    def months(self) -> Counter[str]:
        """Records per month, in date order."""
        return _sum_by(self.by_month, 0)


def _sum_by(counts: Counter[tuple[Any, str]], part: int) -> Counter[Any]:
    summed: Counter[Any] = Counter()
    for key, count in counts.items():
        summed[key[part]] += count
    return summed


@cache
def _days() -> tuple[tuple[str, str], ...]:
    """Each day's date as lines write it and its month as questions name it."""
    dates = (FIRST_DAY + datetime.timedelta(days=day) for day in range(DAYS))
    return tuple((date.strftime(DATE_FORMAT), month_name(date)) for date in dates)


def records(size: int, rng: random.Random) -> Iterator[Record]:
    """Dated, attributed TREC questions filling about ``size`` tokens, in date order.

    Dates advance with the position in the text over ``DAYS`` days (as if sorted), so
    the lines can be written as they are drawn: sorting random dates would need them all.
    """
    pools = trec.questions_by_label()
    labels = list(trec.LABEL_NAMES)
    label_weights = list(itertools.accumulate(rng.uniform(0.3, 1.0) for _ in labels))
    target = size * TASK_CHARS_PER_TOKEN
    users = rng.sample(range(10_000, 100_000), max(8, int(2 * math.sqrt(target / 85))))
    # cumulative weights: a draw is a bisection, not a sum over ~14,000 users at 1b tokens
    user_weights = list(itertools.accumulate(rng.uniform(0.2, 1.0) for _ in users))
    days, total = _days(), 0
    while total < target:
        label = rng.choices(labels, cum_weights=label_weights)[0]
        user = rng.choices(users, cum_weights=user_weights)[0]
        date, month = days[DAYS * total // target]
        line = LINE.format(date=date, user=user, question=rng.choice(pools[label]))
        total += len(line) + 1
        yield Record(line, label, user, month)


def write_records(size: int, rng: random.Random, out: Writer) -> Tally:
    """The context, one line per record, written to ``out`` as drawn; their tally."""
    tally = Tally()
    separator = ""
    for record in records(size, rng):
        out.write(separator + record.line)
        separator = "\n"
        tally.add(record)
    return tally


def month_name(date: datetime.date) -> str:
    """How questions name a month: "March 2024"."""
    return f"{calendar.month_name[date.month]} {date.year}"


# -- gold answers -----------------------------------------------------------------------


def _unique_extreme(counts: Counter[str], pick: Callable[..., int]) -> str | None:
    """The label with the max (or min) count, if no other label ties it."""
    value = pick(counts[label] for label in trec.LABEL_NAMES)
    winners = [label for label in trec.LABEL_NAMES if counts[label] == value]
    return winners[0] if len(winners) == 1 else None


def gold_answer(query: Query, tally: Tally) -> tuple[Any, Kind] | None:
    """The true answer and how it is scored; ``None`` when it would be ambiguous (a tie)."""
    counts = tally.labels()
    if query.kind == "count":
        return counts[query.label], "number"
    if query.kind in ("most", "least"):
        winner = _unique_extreme(counts, max if query.kind == "most" else min)
        return (winner, "label") if winner else None
    if query.kind == "compare":
        a, b = counts[query.label], counts[query.other]
        return COMPARISONS[0 if a > b else 1 if a < b else 2], "comparison"
    if query.kind == "user":
        return tally.by_user[query.user, query.label], "number"
    if query.kind == "month":
        return tally.by_month[query.month, query.label], "number"
    return qualifying_pairs(query, tally), "pairs"


def per_user(tally: Tally, label: str) -> Counter[int]:
    """How many questions of ``label`` each user asked (users with none included)."""
    return Counter({user: tally.by_user[user, label] for user in tally.users()})


def qualifying_pairs(query: Query, tally: Tally) -> list[list[int]]:
    """The gold pairs of a pairs query, each as [smaller ID, larger ID], sorted."""
    first = {u for u, n in per_user(tally, query.label).items() if n >= query.at_least}
    if query.kind == "both":
        second = first
    else:
        counts = per_user(tally, query.other)
        second = {u for u, n in counts.items() if n >= query.other_at_least}
    return sorted([min(u, v), max(u, v)] for u, v in _distinct_pairs(first, second))


def _distinct_pairs(first: set[int], second: set[int]) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u in first for v in second if u != v}


# -- drawing a question -----------------------------------------------------------------


def _weighted(counts: Counter[Any], rng: random.Random) -> Any:
    """A key drawn by its count: what picking a random record's user (or month) gives."""
    return rng.choices(list(counts), weights=list(counts.values()))[0]


def draw_query(tally: Tally, rng: random.Random) -> Query:
    """A random aggregation question; ties fall back to a plain count."""
    label, other = rng.sample(trec.LABEL_NAMES, 2)
    query = Query(
        kind=rng.choice(tuple(ASKS)),
        label=label,
        other=other,
        user=_weighted(tally.users(), rng),
        month=_weighted(tally.months(), rng),
    )
    if gold_answer(query, tally) is None:
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


def draw_pairs_query(tally: Tally, rng: random.Random) -> Query:
    """A pairs question whose thresholds fit this data."""
    label, other = rng.sample(trec.LABEL_NAMES, 2)
    kind = rng.choice(tuple(PAIRS_ASKS))
    at_least = threshold(per_user(tally, label), rng)
    if kind == "both":
        return Query(kind=kind, label=label, at_least=at_least)
    other_at_least = threshold(per_user(tally, other), rng)
    return Query(kind, label, other, at_least=at_least, other_at_least=other_at_least)


def _task(family: str, size: int, seed: int, draw: Callable[[Tally, random.Random], Query]) -> Task:
    """The task; above ``STREAM_TOKENS`` its lines go to a file as they are drawn."""
    rng = random.Random(f"{family}:{size}:{seed}")
    name = f"{family}-{size}-{seed}.txt"
    context, tally = written(size, name, lambda out: write_records(size, rng, out))
    query = draw(tally, rng)
    gold = gold_answer(query, tally)
    assert gold is not None  # draw_query replaces ambiguous questions
    return Task(family, size, seed, query.text(), context, gold[0], gold[1])


def generate(size: int, seed: int) -> Task:
    """The OOLONG-style task of ``size`` tokens for ``seed``."""
    return _task("oolong", size, seed, draw_query)


def generate_pairs(size: int, seed: int) -> Task:
    """The OOLONG-Pairs-style task of ``size`` tokens for ``seed``."""
    return _task("pairs", size, seed, draw_pairs_query)
