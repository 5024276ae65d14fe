"""The TREC questions behind the OOLONG-style tasks, and their hidden labels.

The files ship inside the package (see ``data/README.md``) so ``rlm eval`` works on a
machine without network. OOLONG's trec_coarse split names the six coarse classes in
words; the model sees only the words, never the TREC codes.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

FILES = ("train_5500.label", "TREC_10.label")
LABELS: dict[str, str] = {
    "ABBR": "abbreviation",
    "DESC": "description and abstract concept",
    "ENTY": "entity",
    "HUM": "human being",
    "LOC": "location",
    "NUM": "numeric value",
}
LABEL_NAMES: tuple[str, ...] = tuple(sorted(LABELS.values()))


def parse_label_file(text: str) -> dict[str, str]:
    """``question -> label name`` from one file's ``COARSE:fine question`` lines."""
    labelled: dict[str, str] = {}
    for line in text.splitlines():
        code, _, question = line.partition(" ")
        coarse = code.partition(":")[0]
        if coarse in LABELS and question.strip():
            labelled[question.strip()] = LABELS[coarse]
    return labelled


@cache
def labelled_questions() -> dict[str, str]:
    """Every shipped question with its label name, in a fixed order (seeded draws need it)."""
    folder = resources.files("rlm_graph.eval") / "data"
    labelled: dict[str, str] = {}
    for name in FILES:
        labelled.update(parse_label_file((folder / name).read_bytes().decode("latin-1")))
    return labelled


@cache
def questions_by_label() -> dict[str, tuple[str, ...]]:
    """The questions of each label, so a generator can draw a label first, then a question."""
    grouped: dict[str, list[str]] = {label: [] for label in LABEL_NAMES}
    for question, label in labelled_questions().items():
        grouped[label].append(question)
    return {label: tuple(questions) for label, questions in grouped.items()}
