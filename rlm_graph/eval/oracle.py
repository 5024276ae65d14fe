"""The oracle sub-model of offline evals: perfect, but only about what its prompt shows.

It stands in for ``llm_query`` / ``llm_batch`` sub-calls and understands three requests,
each an instruction followed by an excerpt between ``<<<`` and ``>>>``: label every
line's question (labels come from the hidden TREC labels, looked up by the question's
exact text), find a needle's value, and answer a one-hop question from documents.
Whatever the framework drops, cuts or reorders on the way into a prompt, the oracle
cannot see, so a chunking or off-by-one error becomes a wrong answer, not a pass.
"""

from __future__ import annotations

import json
import re

from rlm_graph.eval import multihop, niah, trec

ORACLE_MODEL = "eval-oracle"
LABEL_INSTRUCTION = (
    "Label the question of every line below with one of: "
    + ", ".join(trec.LABEL_NAMES)
    + ". Reply with a JSON list holding one label per line, in order."
)
NEEDLE_INSTRUCTION = (
    "Find the special magic number for the key below in the text. Reply with the "
    "number only, or NONE if the text does not give it."
)
FACT_INSTRUCTION = (
    "Answer the question from the documents below only. Reply with the name only, or "
    "NONE if the documents do not say."
)
NONE = "NONE"
UNKNOWN_LABEL = "unknown"
_INSTANCE = re.compile(r"\|\| Instance: (.*)$")
_FIELD = re.compile(r"^(Key|Question): (.*)$", re.MULTILINE)


def excerpt(prompt: str) -> str | None:
    """The text between the first ``<<<`` line and the last ``>>>`` line."""
    _, found, rest = prompt.partition("<<<\n")
    if not found or "\n>>>" not in rest:
        return None
    return rest.rsplit("\n>>>", 1)[0]


def field(prompt: str, name: str) -> str:
    """A ``Name: value`` line of the request, before the excerpt."""
    head = prompt.partition("<<<\n")[0]
    values: dict[str, str] = dict(_FIELD.findall(head))
    return values.get(name, "").strip()


def label_lines(text: str) -> str:
    """One label per line, from the question text each line carries."""
    labels = trec.labelled_questions()
    answers = []
    for line in text.split("\n"):
        match = _INSTANCE.search(line)
        answers.append(labels.get(match.group(1).strip(), UNKNOWN_LABEL) if match else "")
    return json.dumps(answers)


def find_needle(key: str, text: str) -> str:
    """The value the text gives for ``key``."""
    match = niah.needle_pattern(key).search(text) if key else None
    return match.group(1) if match else NONE


def answer_fact(question: str, text: str) -> str:
    """The object of the one-hop fact the question asks about, if the text states it."""
    query = multihop.parse_fact_question(question)
    if query is None:
        return NONE
    match = multihop.fact_pattern(query.relation, query.subject).search(text)
    return match.group(1) if match else NONE


def reply(prompt: str) -> str:
    """The oracle's answer to one sub-call prompt."""
    text = excerpt(prompt)
    if text is None:
        return "The oracle reads only requests with an excerpt between <<< and >>> lines."
    if prompt.startswith(LABEL_INSTRUCTION):
        return label_lines(text)
    if prompt.startswith(NEEDLE_INSTRUCTION):
        return find_needle(field(prompt, "Key"), text)
    if prompt.startswith(FACT_INSTRUCTION):
        return answer_fact(field(prompt, "Question"), text)
    return "The oracle only labels questions, finds needles and answers document questions."
