"""Exact money: usage x price -> nano-dollars, with no float anywhere.

Prices are configured in US dollars per million tokens as exact decimals.
Settings accept only prices that are whole multiples of $0.001 per million
tokens, which makes the price of ONE token a whole number of nano-dollars
($1e-9). Every cost is then an integer, exact by construction, and maps
losslessly onto ``google.type.Money`` (units + nanos) and onto decimal strings
for traces and ledgers.

    >>> price = Price.per_million(Decimal("2.50"), Decimal("10"), Decimal("0.625"))
    >>> cost_nanos(Usage(input_tokens=1000, output_tokens=200), price)
    4500000
    >>> cost_nanos(Usage(input_tokens=1000, output_tokens=200, cached_input_tokens=800), price)
    3000000
    >>> format_usd(4500000)
    '0.0045'

Cached input tokens (the part of the input a provider served from its prompt
cache) are priced at the cached-input price; the rest of the input at the
input price.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from server.domain import Usage

NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are quoted per million tokens
# $1 per million tokens is 1,000 nano-dollars per token.
_NANOS_PER_TOKEN_PER_USD_PER_MILLION = NANOS_PER_USD // TOKENS_PER_PRICE_UNIT
PRICE_QUANTUM = Decimal("0.001")  # the finest price that keeps costs whole nanos


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price, held as whole nano-dollars per token.

    `cached_input_nanos` None means cached input costs the same as input.
    """

    input_nanos: int
    output_nanos: int
    cached_input_nanos: int | None = None

    @classmethod
    def per_million(
        cls, input_usd: Decimal, output_usd: Decimal, cached_input_usd: Decimal | None = None
    ) -> Price:
        """Build a price from USD per million tokens (see `nanos_per_token`)."""
        cached = None if cached_input_usd is None else nanos_per_token(cached_input_usd)
        return cls(nanos_per_token(input_usd), nanos_per_token(output_usd), cached)


def nanos_per_token(usd_per_million: Decimal) -> int:
    """Convert USD per million tokens to nano-dollars per token, exactly.

    Raises ValueError for negative prices or prices finer than $0.001 per
    million tokens, which could not be carried exactly.
    """
    if not usd_per_million.is_finite() or usd_per_million < 0:
        raise ValueError(f"price must be a non-negative number, got {usd_per_million}")
    nanos = usd_per_million * _NANOS_PER_TOKEN_PER_USD_PER_MILLION
    if nanos != nanos.to_integral_value():
        raise ValueError(
            f"price {usd_per_million} USD per 1M tokens is finer than {PRICE_QUANTUM}; "
            "round it to 3 decimal places"
        )
    return int(nanos)


def cost_nanos(usage: Usage, price: Price) -> int:
    """The exact cost of `usage` at `price`, in nano-dollars."""
    cached = usage.cached_input_tokens
    if not cached or price.cached_input_nanos is None:
        return usage.input_tokens * price.input_nanos + usage.output_tokens * price.output_nanos
    return (
        (usage.input_tokens - cached) * price.input_nanos
        + cached * price.cached_input_nanos
        + usage.output_tokens * price.output_nanos
    )


def format_usd(nanos: int) -> str:
    """Render nano-dollars as an exact decimal string of dollars, e.g. '0.0045'."""
    sign = "-" if nanos < 0 else ""
    units, frac = divmod(abs(nanos), NANOS_PER_USD)
    if not frac:
        return f"{sign}{units}"
    return f"{sign}{units}.{frac:09d}".rstrip("0")


def display_usd(nanos: int) -> str:
    """Nano-dollars for people: '$5.00', '$0.000123' (exact, at least 2 decimals)."""
    text = format_usd(nanos)
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def usd_to_nanos(usd: Decimal) -> int:
    """Exact dollars as nano-dollars; ValueError when finer than a nano-dollar."""
    if not usd.is_finite():
        raise ValueError(f"expected an amount of US dollars, got {usd}")
    nanos = usd * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{usd} USD is finer than a nano-dollar; use at most 9 decimal places")
    return int(nanos)


def to_decimal(nanos: int) -> Decimal:
    """Nano-dollars as an exact Decimal of dollars."""
    return Decimal(nanos).scaleb(-9)
