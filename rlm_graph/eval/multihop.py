"""Multi-hop questions over a generated corpus: the stand-in for BrowseComp-Plus.

BrowseComp-Plus gives a model a fixed corpus of web documents and questions whose
answer joins facts from several of them. Here the corpus is generated: one document
per person, company, city and river, each holding a few facts among filler prose and
mentions of other entities (so a name search finds more than the one document that
answers). A question chains two or three facts ("the river of the city where the
company that X works for is headquartered"), so no single document answers it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rlm_graph.eval import filler
from rlm_graph.eval.tasks import TASK_CHARS_PER_TOKEN, Task

# A relation's fact as the documents state it, and as a one-hop question asks it.
FACTS: dict[str, str] = {
    "employer": "{subject} works at {object}.",
    "birthplace": "{subject} was born in {object}.",
    "headquarters": "{subject} is headquartered in {object}.",
    "river": "{subject} lies on the {object}.",
}
FACT_QUESTIONS: dict[str, str] = {
    "employer": "Which company does {subject} work for?",
    "birthplace": "In which city was {subject} born?",
    "headquarters": "In which city is {subject} headquartered?",
    "river": "On which river does {subject} lie?",
}
CHAINS: dict[tuple[str, ...], str] = {
    ("employer", "headquarters"): "In which city is the company that {subject} works for "
    "headquartered?",
    ("birthplace", "river"): "On which river lies the city where {subject} was born?",
    ("employer", "headquarters", "river"): "On which river lies the city where the company "
    "that {subject} works for is headquartered?",
}
PREAMBLE = (
    "The context is a corpus of documents, each starting with a line "
    "'### Document N: <title>'. Answer from the documents only. "
)
REPLY = " Reply with the name only."
HEADER = "### Document {number}: {title}"
DOC_CHARS = 1_200

_SYLLABLES = (
    "ka", "ren", "mo", "li", "ta", "vi", "son", "del", "ar", "bel", "cor", "dan", "el",
    "fin", "gar", "hol", "is", "jor", "kel", "lan", "mar", "nor", "or", "pel", "quin",
    "ros", "sel", "tor", "ul", "ven", "wil", "yar", "zen",
)  # fmt: skip
_COMPANY_SUFFIXES = ("Labs", "Works", "Systems", "Holdings", "Group", "Industries")
_CITY_SUFFIXES = ("ford", "ton", "bury", "haven", "stead", "mouth")


@dataclass(frozen=True)
class ChainQuery:
    """A question as the chain of relations it follows from ``subject``."""

    chain: tuple[str, ...]
    subject: str


@dataclass(frozen=True)
class FactQuery:
    """A one-hop question: ``relation`` of ``subject``."""

    relation: str
    subject: str


def _subject_pattern(template: str) -> re.Pattern[str]:
    head, _, tail = re.escape(template).partition(re.escape("{subject}"))
    return re.compile(head + "(?P<subject>.+?)" + tail)


_CHAIN_PARSERS = {chain: _subject_pattern(text) for chain, text in CHAINS.items()}
_FACT_PARSERS = {rel: _subject_pattern(text) for rel, text in FACT_QUESTIONS.items()}


def parse_question(question: str) -> ChainQuery | None:
    """The chain a multi-hop question follows (``None``: not a multi-hop question)."""
    for chain, pattern in _CHAIN_PARSERS.items():
        if match := pattern.search(question):
            return ChainQuery(chain, match.group("subject"))
    return None


def parse_fact_question(question: str) -> FactQuery | None:
    """The relation and subject of a one-hop question."""
    for relation, pattern in _FACT_PARSERS.items():
        if match := pattern.search(question):
            return FactQuery(relation, match.group("subject"))
    return None


def fact_pattern(relation: str, subject: str) -> re.Pattern[str]:
    """The fact sentence of ``relation`` about ``subject``, its object as group 1.

    The subject must start a word, so "Ann Lee" never matches inside "Joann Lee".
    """
    head, _, tail = FACTS[relation].partition("{subject}")
    before, _, after = tail.partition("{object}")
    return re.compile(
        r"(?<!\w)" + re.escape(head + subject + before) + r"([^.\n]+?)" + re.escape(after)
    )


# -- the corpus -------------------------------------------------------------------------


class _Names:
    """Unique pronounceable names, so every entity is found by its name alone."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self) -> str:
        """Two or three syllables: 37,000 words, so even 10M-token corpora stay unique."""
        count = self.rng.randint(2, 3)
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(count)).capitalize()

    def unique(self, kind: str) -> str:
        """A name for an entity of ``kind`` that no other entity has."""
        while True:
            if kind == "person":
                name = f"{self.word()} {self.word()}"
            elif kind == "company":
                name = f"{self.word()} {self.rng.choice(_COMPANY_SUFFIXES)}"
            elif kind == "city":
                name = self.word() + self.rng.choice(_CITY_SUFFIXES)
            else:
                name = f"{self.word()} River"
            if name not in self.used:
                self.used.add(name)
                return name


@dataclass
class World:
    """Every entity and the facts that link them."""

    people: list[str]
    companies: list[str]
    cities: list[str]
    rivers: list[str]
    facts: dict[tuple[str, str], str]  # (relation, subject) -> object


def make_world(documents: int, rng: random.Random) -> World:
    """Entities in proportions that give every company and city several links."""
    names = _Names(rng)
    rivers = [names.unique("river") for _ in range(max(2, documents // 20))]
    cities = [names.unique("city") for _ in range(max(3, documents // 8))]
    companies = [names.unique("company") for _ in range(max(3, documents // 6))]
    people_count = max(3, documents - len(rivers) - len(cities) - len(companies))
    people = [names.unique("person") for _ in range(people_count)]
    facts: dict[tuple[str, str], str] = {}
    for city in cities:
        facts["river", city] = rng.choice(rivers)
    for company in companies:
        facts["headquarters", company] = rng.choice(cities)
    for person in people:
        facts["employer", person] = rng.choice(companies)
        facts["birthplace", person] = rng.choice(cities)
    return World(people, companies, cities, rivers, facts)


def _other(names: list[str], entity: str, rng: random.Random) -> str:
    """A random name from ``names`` that is not ``entity`` (lists hold at least two)."""
    while (name := rng.choice(names)) == entity:
        pass
    return name


def _mentions(entity: str, world: World, rng: random.Random) -> list[str]:
    """Sentences naming other entities without stating a fact a question asks about."""
    people, cities = world.people, world.cities
    if ("employer", entity) in world.facts:
        return [
            f"{entity} has collaborated with {_other(people, entity, rng)}.",
            f"{entity} once gave a talk in {rng.choice(cities)}.",
            f"{entity} admires the work of {rng.choice(world.companies)}.",
        ]
    if ("headquarters", entity) in world.facts:
        return [
            f"{entity} opened a branch office in {rng.choice(cities)}.",
            f"{entity} competes with {_other(world.companies, entity, rng)}.",
            f"{rng.choice(people)} consulted for {entity} one summer.",
        ]
    if ("river", entity) in world.facts:
        return [
            f"{entity} is twinned with {_other(cities, entity, rng)}.",
            f"{entity} is a day's journey from the {rng.choice(world.rivers)}.",
        ]
    return [f"The {entity} is crossed by a ferry near {rng.choice(cities)}."]


def planted(entity: str, world: World, rng: random.Random) -> list[str]:
    """The sentences an entity's document must hold: its facts and its mentions."""
    facts = [
        FACTS[relation].format(subject=entity, object=world.facts[relation, entity])
        for relation in FACTS
        if (relation, entity) in world.facts
    ]
    return facts + _mentions(entity, world, rng)


def document(title: str, sentences: list[str], filler_chars: int, rng: random.Random) -> str:
    """One document: the planted sentences spread through filler prose."""
    body = [s.strip() for s in filler.sentences(filler_chars, rng)]
    for sentence in sentences:
        body.insert(rng.randint(0, len(body)), sentence)
    return title + "\n" + " ".join(body)


def corpus(world: World, target: int, rng: random.Random) -> str:
    """Every entity's document, in random order, filled out to ``target`` characters."""
    entities = world.people + world.companies + world.cities + world.rivers
    rng.shuffle(entities)
    titles = [HEADER.format(number=i + 1, title=e) for i, e in enumerate(entities)]
    plants = [planted(e, world, rng) for e in entities]
    fixed = sum(
        len(t) + 3 + sum(len(s) + 1 for s in p) for t, p in zip(titles, plants, strict=True)
    )
    share = max(100, (target - fixed) // len(entities))
    return "\n\n".join(document(t, p, share, rng) for t, p in zip(titles, plants, strict=True))


def generate(size: int, seed: int) -> Task:
    """The multi-hop task of ``size`` tokens for ``seed``."""
    rng = random.Random(f"multihop:{size}:{seed}")
    target = size * TASK_CHARS_PER_TOKEN
    world = make_world(max(8, target // DOC_CHARS), rng)
    text = corpus(world, target, rng)
    chain = rng.choice(tuple(CHAINS))
    subject = rng.choice(world.people)
    answer = subject
    for relation in chain:
        answer = world.facts[relation, answer]
    return Task(
        family="multihop",
        size=size,
        seed=seed,
        question=PREAMBLE + CHAINS[chain].format(subject=subject) + REPLY,
        context=text,
        gold=answer,
        kind="text",
    )
