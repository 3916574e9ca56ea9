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
