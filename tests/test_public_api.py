"""Every name the README and docs show exists, and so do the entry points."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and walk the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def shown_names() -> set[str]:
    """``from rlm_graph... import a, b`` lines and dotted ``rlm_graph.x.y`` names in docs."""
    names: set[str] = set()
    for doc in DOCS:
        text = doc.read_text()
        for module, imported in re.findall(r"from (rlm_graph[\w.]*) import ([\w, ]+)", text):
            names.update(f"{module}.{name.strip()}" for name in imported.split(","))
        names.update(re.findall(r"`(rlm_graph(?:\.\w+)+)(?:\(\))?`", text))
    return names


@pytest.mark.parametrize("dotted", sorted(shown_names()))
def test_a_documented_name_exists(dotted: str) -> None:
    resolve(dotted)


def test_the_entry_points_resolve() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    targets = [*project["scripts"].values(), *project["entry-points"]["llm"].values()]
    for target in targets:
        module, _, attribute = target.partition(":")
        resolve(f"{module}.{attribute}" if attribute else module)
    graphs = importlib.import_module("json").loads((ROOT / "langgraph.json").read_text())
    for spec in graphs["graphs"].values():
        path, _, attribute = spec.partition(":")
        assert (ROOT / path).exists() and attribute == "graph"


def test_the_package_exports_the_public_names() -> None:
    import rlm_graph

    for name in rlm_graph.__all__:
        assert getattr(rlm_graph, name) is not None
