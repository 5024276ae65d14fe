"""What a run's tokens cost, and whether the run may spend more.

Usage is kept per model name as ``{"calls", "input_tokens", "output_tokens",
"cached_tokens"}`` (see ``models.usage``); ``input_tokens`` includes the cached ones,
as providers report them. Prices are US dollars per million tokens. The built-in table
holds list prices of common models when this was written; providers change them, so
users override or extend it with the ``prices`` setting (``rlm run --prices FILE``).
"""

from __future__ import annotations

from typing import Any, TypedDict

from rlm_graph.models.usage import Usage, total_tokens

PriceTable = dict[str, dict[str, float]]
PRICE_KEYS = ("input", "output", "cached_input")
TOKENS_PER_UNIT = 1_000_000
# The price of a model on a server people run themselves (settings.server_profile):
# known to cost nothing, which is not the same as "no price" (cost unknown).
FREE = {key: 0.0 for key in PRICE_KEYS}

# Dollars per million tokens: input, output, cached input.
DEFAULT_PRICES: PriceTable = {
    name: {"input": i, "output": o, "cached_input": c}
    for name, (i, o, c) in {
        "gpt-5": (1.25, 10.0, 0.125),
        "gpt-5.1": (1.25, 10.0, 0.125),
        "gpt-5-mini": (0.25, 2.0, 0.025),
        "gpt-5-nano": (0.05, 0.40, 0.005),
        "gpt-4.1": (2.0, 8.0, 0.50),
        "gpt-4.1-mini": (0.40, 1.60, 0.10),
        "gpt-4o": (2.50, 10.0, 1.25),
        "gpt-4o-mini": (0.15, 0.60, 0.075),
        "o3": (2.0, 8.0, 0.50),
        "o4-mini": (1.10, 4.40, 0.275),
        "claude-sonnet-4-5": (3.0, 15.0, 0.30),
        "claude-haiku-4-5": (1.0, 5.0, 0.10),
    }.items()
}


class CostReport(TypedDict):
    """Dollars per model and in total; models without a price are listed, not guessed."""

    dollars: float
    models: dict[str, float]
    unpriced: list[str]


def check_prices(prices: Any) -> None:
    """Reject a malformed price table with one line that shows the expected shape."""
    shape = 'use {"model": {"input": 1.25, "output": 10, "cached_input": 0.125}} ($ per 1M tokens)'
    if not isinstance(prices, dict):
        raise ValueError(f"setting prices must be a mapping: {shape}")
    for model, price in prices.items():
        if not isinstance(price, dict) or not set(price) <= set(PRICE_KEYS) or "input" not in price:
            raise ValueError(f"setting prices[{model!r}] is malformed: {shape}")
        for key, value in price.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"setting prices[{model!r}][{key!r}]={value!r}: use dollars >= 0")


def price_of(model: str, overrides: PriceTable) -> dict[str, float] | None:
    """The price of ``model``: the user's table first, by full name, then without provider."""
    bare = model.rpartition(":")[2]
    for table in (overrides, DEFAULT_PRICES):
        for name in (model, bare):
            if name in table:
                price = table[name]
                input_price = float(price["input"])
                return {
                    "input": input_price,
                    "output": float(price.get("output", input_price)),
                    "cached_input": float(price.get("cached_input", input_price)),
                }
    return None


def dollars(counts: dict[str, int], price: dict[str, float]) -> float:
    """The cost of one model's usage; cached prompt tokens are billed at their own rate."""
    cached = counts.get("cached_tokens", 0)
    fresh = max(counts.get("input_tokens", 0) - cached, 0)
    total = (
        fresh * price["input"]
        + cached * price["cached_input"]
        + counts.get("output_tokens", 0) * price["output"]
    )
    return total / TOKENS_PER_UNIT


def cost_of(usage: Usage, overrides: PriceTable) -> CostReport:
    """What ``usage`` cost under the price table."""
    models: dict[str, float] = {}
    unpriced: list[str] = []
    for model, counts in sorted(usage.items()):
        price = price_of(model, overrides)
        if price is None:
            unpriced.append(model)
        else:
            models[model] = round(dollars(counts, price), 6)
    return CostReport(dollars=round(sum(models.values()), 6), models=models, unpriced=unpriced)


def is_free(cost: CostReport) -> bool:
    """Whether every model of ``cost`` is priced at $0: local models (settings.FREE)."""
    return bool(cost["models"]) and not any(cost["models"].values())


def unpriced_models(models: list[str], overrides: PriceTable) -> list[str]:
    """The models a dollar budget could not price."""
    return [m for m in models if price_of(m, overrides) is None]


def over_budget(usage: Usage, max_tokens: int, max_dollars: float, prices: PriceTable) -> str:
    """Why the spend in ``usage`` is over a budget, or "" while it is within (0: no limit)."""
    tokens = total_tokens(usage)
    if max_tokens and tokens >= max_tokens:
        return f"token budget reached: {tokens:,} of max_tokens={max_tokens:,} used"
    if max_dollars:
        spent = cost_of(usage, prices)["dollars"]
        if spent >= max_dollars:
            return f"dollar budget reached: ${spent:.4f} of max_dollars={max_dollars:g} spent"
    return ""
