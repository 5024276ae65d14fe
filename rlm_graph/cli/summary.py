"""What a finished run cost, in the words ``rlm run`` and ``rlm demo`` print on stderr."""

from __future__ import annotations

from rlm_graph.graph.runner import RLMResult
from rlm_graph.models.pricing import CostReport, is_free
from rlm_graph.models.usage import total_tokens
from rlm_graph.observe.progress import count


def summary(result: RLMResult) -> str:
    """One line on what the run cost."""
    return (
        f"{result.status.replace('_', ' ')} in {count(result.iterations, 'iteration')}, "
        f"{count(result.sub_calls, 'sub-call')}, {count(total_tokens(result.tokens), 'token')}, "
        f"{dollars_text(result.cost)}, {result.seconds:.1f} s"
    )


def dollars_text(cost: CostReport | None) -> str:
    """The cost in dollars, saying which models had no price."""
    if cost is None:
        return "cost unknown"
    if not cost["models"]:
        text = "cost unknown"
    elif is_free(cost):
        text = "$0 (free, local)"
    else:
        text = f"${cost['dollars']:.4f}"
    if cost["unpriced"]:
        text += f" (no price for {', '.join(cost['unpriced'])}: see --prices)"
    return text


def token_lines(tokens: dict[str, dict[str, int]], cost: CostReport | None = None) -> list[str]:
    """Per-model usage and cost, because root and sub model are priced differently."""
    priced = cost["models"] if cost else {}
    return [
        f"{model}: {count(t.get('calls', 0), 'call')}, {t.get('input_tokens', 0):,} in "
        f"({t.get('cached_tokens', 0):,} cached) / {t.get('output_tokens', 0):,} out"
        + (f", ${priced[model]:.4f}" if model in priced else "")
        for model, t in sorted(tokens.items())
    ]
