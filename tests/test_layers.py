"""The package's layers: which part may import which, checked on every import.

Run ``python tests/test_layers.py`` to print the import graph between the parts; the
test fails on any import a part is not allowed (lazy imports inside functions count).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rlm_graph"

# What each part may import, lowest layers first. A part never imports one above it,
# so the sandbox and storage can be used (and tested) without the graph.
BASE = {"redact", "text", "offload", "allocator"}
ALLOWED: dict[str, set[str]] = {
    "redact": set(),
    "offload": set(),
    "allocator": set(),
    "text": {"redact"},
    "offline": set(),
    "models": BASE,
    "storage": BASE,
    "settings": {"models"} | BASE,
    "deployment": {"models", "settings", "storage"} | BASE,
    "repl": {"storage"} | BASE,
    "observe": {"models", "settings"} | BASE,
    "subcalls": {"deployment", "models", "settings", "storage", "observe"} | BASE,
    "graph": {"deployment", "models", "settings", "storage", "repl", "subcalls", "observe"} | BASE,
    "api": {"deployment", "graph", "models", "settings", "storage", "observe"} | BASE,
    "eval": {"api", "graph", "models", "settings", "storage", "observe", "offline"} | BASE,
    "cli": {
        "api",
        "eval",
        "graph",
        "integrations",  # `rlm mcp` serves integrations.mcp
        "models",
        "settings",
        "storage",
        "repl",
        "observe",
        "offline",
    }
    | BASE,
}
ALLOWED["integrations"] = set(ALLOWED) | {"cli"}


def part_of(module: str) -> str | None:
    """The part a dotted ``rlm_graph`` module belongs to (None: the package root)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "rlm_graph" else None


def imports_of(path: Path) -> set[str]:
    """Every ``rlm_graph`` module ``path`` imports, at top level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("rlm_graph.")}


def import_graph() -> dict[str, dict[str, set[str]]]:
    """part -> imported part -> the files that make that import."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("rlm_graph", *path.relative_to(PACKAGE).with_suffix("").parts))
        source = part_of(module.removesuffix(".__init__"))
        if source is None:
            continue  # rlm_graph/__init__.py: the public names, imported lazily
        for name in imports_of(path):
            target = part_of(name)
            if target is not None and target != source and target in ALLOWED:
                edges[source][target].add(str(path.relative_to(PACKAGE.parent)))
    return edges


def test_every_part_is_known() -> None:
    parts = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__"}
    assert parts <= set(ALLOWED), f"parts with no layer rule: {sorted(parts - set(ALLOWED))}"


def test_no_part_imports_a_higher_one() -> None:
    upward = [
        f"{source} -> {target} ({', '.join(sorted(files))})"
        for source, targets in import_graph().items()
        for target, files in targets.items()
        if target not in ALLOWED[source]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def main() -> int:
    """Print the import graph between the parts, marking forbidden edges."""
    bad = 0
    for source, targets in sorted(import_graph().items()):
        for target in sorted(targets):
            allowed = target in ALLOWED[source]
            bad += not allowed
            print(f"{source:>12} -> {target}{'' if allowed else '   FORBIDDEN'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
