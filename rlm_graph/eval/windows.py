"""Context windows of models an eval may be given: whether the plain model can run at all.

The paper's base model is "not run" where the context cannot fit its window (GPT-5 at
272K tokens, so from about 1M tokens up). Windows are OpenAI's as of late 2025; others
take ``--window`` or a conservative default. Prices live in ``rlm_graph.models.pricing``.
"""

from __future__ import annotations

DEFAULT_WINDOW = 128_000
WINDOWS: dict[str, int] = {
    "gpt-5": 272_000,
    "gpt-5.1": 272_000,
    "gpt-5-mini": 272_000,
    "gpt-5-nano": 272_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
}


def window_of(model: str) -> int:
    """The model's context window in tokens (a conservative default when unknown)."""
    return WINDOWS.get(model.rpartition(":")[2], DEFAULT_WINDOW)
