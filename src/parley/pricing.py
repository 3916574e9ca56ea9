"""The model price table: what an observation without ``cost_usd`` costs.

Prices are USD per million input and output tokens. Parley ships a table
(``data/model_prices.json``); the operator's file (``PARLEY_MODEL_PRICES``) adds
models or overrides shipped ones. Prices become integer pico-dollars per token, so
a cost is an exact integer however many tokens are summed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, Field, ValidationError

PICO_PER_USD = 10**12
TOKENS_PER_MILLION = 10**6


class ModelPrice(BaseModel):
    input: Decimal = Field(ge=0, le=100_000, description="USD per million input tokens")
    output: Decimal = Field(ge=0, le=100_000, description="USD per million output tokens")


def _read(text: str, source: str) -> dict[str, ModelPrice]:
    try:
        raw = json.loads(text, parse_float=Decimal)
        return {
            name.strip().lower(): ModelPrice.model_validate(price)
            for name, price in raw.items()
            if not name.startswith("_")
        }
    except (ValueError, AttributeError, ValidationError) as err:
        raise ValueError(f"{source}: not a model price table ({err})") from None


def load_prices(override: Path | None = None) -> dict[str, ModelPrice]:
    shipped = resources.files("parley").joinpath("data/model_prices.json").read_text()
    prices = _read(shipped, "the shipped price table")
    if override is not None:
        prices |= _read(Path(override).read_text(), str(override))
    return prices


def pico_per_token(usd_per_million: Decimal) -> int:
    return int(usd_per_million * PICO_PER_USD / TOKENS_PER_MILLION)


def as_rows(prices: dict[str, ModelPrice]) -> list[tuple[str, int, int]]:
    """(lower-case model prefix, input and output pico-dollars per token)."""
    return [(name, pico_per_token(p.input), pico_per_token(p.output)) for name, p in sorted(prices.items())]


def price_of(model: str | None, prices: list[tuple[str, int, int]]) -> tuple[int, int] | None:
    """The (input, output) price of ``model`` in ``prices`` (``as_rows``), or None.

    A model takes the price of the longest entry its name, lower-cased, starts with, or
    that follows a ``/`` or a ``.`` in it (of equally long ones, the first): a dated name
    such as ``gpt-4o-2024-08-06`` takes the ``gpt-4o`` price, and so do a router's
    ``openai/gpt-4o`` and a cloud's ``us.anthropic.claude-3-5-sonnet-20241022-v2:0`` theirs.
    """
    if model is None:
        return None
    name = model.lower()
    best: tuple[str, int, int] | None = None
    for prefix, input_price, output_price in prices:
        if (best is None or len(prefix) > len(best[0])) and (
            name.startswith(prefix) or f"/{prefix}" in name or f".{prefix}" in name
        ):
            best = (prefix, input_price, output_price)
    return None if best is None else best[1:]


class Unpriced(NamedTuple):
    """What a model's observations without a cost carried that no price could value."""

    observations: int  # of the model, without a cost (those without tokens too)
    input_tokens: int
    output_tokens: int


def price_by_model(rows: list[tuple], prices: list[tuple[str, int, int]]) -> tuple[int, dict[str | None, Unpriced]]:
    """(total cost in pico-dollars, what was left unpriced by model, None for observations
    that name none) of a user's cost by model: rows (model, cost of the observations that
    carry one, input and output tokens of those that do not, how many do not), the sums as
    text or integers.

    A model is left unpriced when its observations without a cost carry tokens and the
    table has no price for it. Those without tokens (a span, an event) cost 0 whatever the
    price, so they leave nothing unpriced: the demo's spans, with no model, no cost and no
    tokens, were reported as unpriced until 2026-12-06.

    The store sums the observations per model in the database; the price table, the
    operator's, is applied here to those few sums. Priced in SQL, the table's entries
    matched against the models in the statement, a user's cost took 3 to 4 ms more at
    scale M (docs/benchmarks.md, "A user's cost by a scan of the user's rows").
    """
    total, unpriced = 0, {}
    for model, known, input_tokens, output_tokens, uncosted in rows:
        total += int(known)
        tokens = int(input_tokens), int(output_tokens)
        if tokens == (0, 0):
            continue
        price = price_of(model, prices)
        if price is None:
            unpriced[model] = Unpriced(int(uncosted), *tokens)
        else:
            total += tokens[0] * price[0] + tokens[1] * price[1]
    return total, unpriced
