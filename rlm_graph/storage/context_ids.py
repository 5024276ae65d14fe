"""Short names for stored contexts, so an agent can ask again without sending one again.

``context_id(ref)`` remembers a stored context's reference and names it ``ctx-`` and the
first 16 hex digits of its content hash; ``find_context(name)`` gives the reference
back. A name comes from the content, so only whoever was given it (or holds the content
already) can use it, and it says nothing about where the content came from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from rlm_graph.storage.contexts import ContextError, ContextRef, check_ref
from rlm_graph.storage.home import home

_NAME = re.compile(r"ctx-([0-9a-f]{16})")


def _index() -> Path:
    return home() / "context-ids"


def context_id(ref: ContextRef) -> str:
    """The name of a stored context, remembered so :func:`find_context` finds it."""
    short = ref["hash"][:16]
    entry = _index() / f"{short}.json"
    if not entry.exists():
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(ref))
        os.replace(tmp, entry)
    return f"ctx-{short}"


def find_context(name: str) -> ContextRef:
    """The reference a :func:`context_id` name stands for; ContextError if there is none."""
    match = _NAME.fullmatch(name.strip())
    if match is None:
        raise ContextError(f"context id {name!r} is malformed: ids are ctx- and 16 hex digits")
    try:
        ref: ContextRef = json.loads((_index() / f"{match[1]}.json").read_text())
    except FileNotFoundError:
        raise ContextError(f"no stored context is named {name.strip()}") from None
    return check_ref(ref)
