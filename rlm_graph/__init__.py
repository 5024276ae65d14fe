"""rlm-graph: Recursive Language Models as a LangGraph graph with an eryx sandbox.

The public names are imported on first use, so a process that needs only a part (the
sandbox zygote imports only the sandbox) does not pay for LangGraph and LangChain.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlm_graph.api import RLMResult, aanswer, answer, reference
    from rlm_graph.graph import build_graph
    from rlm_graph.settings import Settings

__all__ = ["RLMResult", "Settings", "aanswer", "answer", "build_graph", "reference"]
_HOMES = {
    "RLMResult": "rlm_graph.api",
    "aanswer": "rlm_graph.api",
    "answer": "rlm_graph.api",
    "reference": "rlm_graph.api",
    "Settings": "rlm_graph.settings",
    "build_graph": "rlm_graph.graph",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module 'rlm_graph' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
