"""Short names for stored contexts: given back only for what was stored and named."""

from __future__ import annotations

import pytest

from rlm_graph.storage.context_ids import context_id, find_context
from rlm_graph.storage.contexts import ContextError, store_value


def test_a_named_context_is_found_again_and_nothing_else_is() -> None:
    ref = store_value({"report": "numbers"})
    name = context_id(ref)
    assert name == f"ctx-{ref['hash'][:16]}"
    assert find_context(f" {name}\n") == ref
    with pytest.raises(ContextError, match="no stored context"):
        find_context("ctx-" + "0" * 16)
    for bad in ("ctx-../../etc", ref["hash"], "ctx-" + ref["hash"][:15]):
        with pytest.raises(ContextError, match="malformed"):
            find_context(bad)
