"""Where rlm-graph keeps files on this machine: the runtime snapshot, contexts, records."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The directory for caches and blobs (``RLM_GRAPH_HOME``, else ~/.cache/rlm-graph)."""
    configured = os.environ.get("RLM_GRAPH_HOME")
    return Path(configured) if configured else Path.home() / ".cache" / "rlm-graph"
