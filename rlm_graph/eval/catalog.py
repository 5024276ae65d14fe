"""What an eval knows about models it may be given: list prices and context windows.

Dollars are what makes a comparison with the plain model honest (the paper reports
cost per query next to accuracy), and the window decides whether the plain model can
be run at all. Prices are OpenAI's list prices per million tokens as of late 2025;
they change, so ``--price`` overrides them and an unknown model's cost is reported
as unknown rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WINDOW = 128_000


@dataclass(frozen=True)
class Price:
    """Dollars per million input and output tokens."""

    input: float
    output: float


PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4o": Price(2.50, 10.0),
    "gpt-4o-mini": Price(0.15, 0.60),
}
WINDOWS: dict[str, int] = {
    "gpt-5": 272_000,
    "gpt-5-mini": 272_000,
    "gpt-5-nano": 272_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
}


def bare_name(model: str) -> str:
    """``openai:gpt-5`` -> ``gpt-5``: prices are per model, whatever the provider prefix."""
    return model.rpartition(":")[2]


def parse_price(text: str) -> tuple[str, Price]:
    """``MODEL=IN,OUT`` (dollars per million tokens) from the command line."""
    model, _, numbers = text.partition("=")
    parts = numbers.split(",")
    try:
        if not model or len(parts) != 2:
            raise ValueError
        return bare_name(model), Price(float(parts[0]), float(parts[1]))
    except ValueError:
        raise ValueError(
            f"price {text!r} is not MODEL=IN,OUT in dollars per million tokens, e.g. gpt-5=1.25,10"
        ) from None


def window_of(model: str) -> int:
    """The model's context window in tokens (a conservative default when unknown)."""
    return WINDOWS.get(bare_name(model), DEFAULT_WINDOW)


def dollars(usage: dict[str, dict[str, int]], prices: dict[str, Price]) -> float | None:
    """What the usage cost; ``None`` when a model in it has no known price."""
    total = 0.0
    for model, tokens in usage.items():
        price = prices.get(bare_name(model))
        if price is None:
            return None
        total += tokens.get("input_tokens", 0) * price.input / 1e6
        total += tokens.get("output_tokens", 0) * price.output / 1e6
    return total
