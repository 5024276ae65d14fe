"""Token usage per model, read from replies and summed over a run and its recursion tree.

The shape is ``{model: {"calls", "input_tokens", "output_tokens", "cached_tokens"}}``;
``input_tokens`` includes the cached ones, as providers report them.
"""

from __future__ import annotations

Usage = dict[str, dict[str, int]]
# Characters per token when checking whether a prompt fits a window: conservative, since
# refusing a prompt that would fit costs a smaller chunk while sending one that does not
# costs a failed request (English prose runs ~4 characters a token, code and JSON ~3).
WINDOW_CHARS_PER_TOKEN = 3


def add_usage(left: Usage, right: Usage) -> Usage:
    """Sum token usage per model, so parallel writers and sub-calls never overwrite."""
    merged = {model: dict(counts) for model, counts in (left or {}).items()}
    for model, counts in (right or {}).items():
        target = merged.setdefault(model, {})
        for key, value in counts.items():
            target[key] = target.get(key, 0) + value
    return merged


def usage_since(now: Usage, before: Usage) -> Usage:
    """The usage added since ``before`` (both cumulative), e.g. by the current question."""
    return {
        model: {key: value - before.get(model, {}).get(key, 0) for key, value in counts.items()}
        for model, counts in now.items()
    }


def total_tokens(usage: Usage) -> int:
    """Prompt plus completion tokens over all models."""
    return sum(c.get("input_tokens", 0) + c.get("output_tokens", 0) for c in usage.values())
