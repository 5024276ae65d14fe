"""The break list (tests/breaks.py) still applies to the source and names real tests.

Running the breaks takes minutes; this only checks that each one could run, so a
refactor that moves a guarded line makes its break be updated, not silently skipped.
"""

from __future__ import annotations

import ast

import pytest
from breaks import BREAKS, PROJECT, Break


@pytest.mark.parametrize("brk", BREAKS, ids=lambda brk: brk.name)
def test_each_break_applies_once_and_names_existing_tests(brk: Break) -> None:
    for edit in brk.edits:
        assert (PROJECT / edit.path).read_text().count(edit.old) == 1, edit.old
    for test in brk.tests:
        path, _, name = test.partition("::")
        tree = ast.parse((PROJECT / path).read_text())
        assert name in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
