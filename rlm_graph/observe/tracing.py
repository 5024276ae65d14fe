"""LangSmith: one run tree per question, sub-calls nested under the cell that made them.

LangChain nests runs through context variables, which do not cross threads. Sub-calls
run on the sub-call loop's thread (subcalls.py), so without help each would start a
tree of its own. The execute node therefore opens a ``cell`` span and hands it to the
sub-call broker, which re-enters it (``tracing_context(parent=...)``) around every model
call and sub-RLM it makes. All of this is inert unless ``LANGSMITH_TRACING=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from langsmith import run_helpers, utils
from langsmith.run_trees import RunTree


def run_metadata(depth: int, iteration: int, sandbox_id: str) -> dict[str, Any]:
    """What each traced run says about where it sits in the recursion."""
    return {"rlm_depth": depth, "rlm_iteration": iteration, "sandbox_id": sandbox_id}


@contextmanager
def cell_span(code: str, metadata: dict[str, Any]) -> Iterator[RunTree | None]:
    """A ``cell`` run under the current node's run while the code runs (None: not tracing)."""
    if not utils.tracing_is_enabled():
        yield None
        return
    with run_helpers.trace(
        "cell", run_type="chain", inputs={"code": code}, metadata=metadata
    ) as span:
        yield span


def under(parent: RunTree | None) -> Any:
    """Make ``parent`` the current run on this thread (e.g. the sub-call loop's)."""
    return run_helpers.tracing_context(parent=parent) if parent is not None else nullcontext()
