"""Exact money: every cost Switchyard computes, from usage x price, with no float.

Prices are configured in US dollars per million tokens as exact decimals.
Settings accept only prices that are whole multiples of $0.001 per million
tokens, which makes the price of ONE token a whole number of nano-dollars
($1e-9; see `server.domain.Price`). Every cost is then an integer, exact by
construction, and maps losslessly onto ``google.type.Money`` (units + nanos)
and onto decimal strings for traces and ledgers.

    >>> price = Price.per_million(Decimal("2.50"), Decimal("10"), Decimal("0.625"))
    >>> cost_nanos(Usage(input_tokens=1000, output_tokens=200), price)
    4500000
    >>> cost_nanos(Usage(input_tokens=1000, output_tokens=200, cached_input_tokens=800), price)
    3000000
    >>> format_usd(4500000)
    '0.0045'

Cached input tokens (the part of the input a provider served from its prompt
cache) are priced at the cached-input price, prompt-cache writes (the part it
stored in that cache) at the cache-write price, the rest of the input at the
input price. Reasoning tokens are part of the output and priced as output.
Estimates made before a call (Route's range, the budget hold, the cost
report) price the same way through `cost_nanos`; the worst case assumes no
cache read or write, since nothing says one will happen.

This module is the one owner of cost: the relay attempt, the router, the
budget stage and the report all call it, and nothing else multiplies a
token count by a price.
"""

from __future__ import annotations

from decimal import Decimal

from server.domain import NANOS_PER_USD, ModelSpec, Price, RouteDecision, Usage


def cost_nanos(usage: Usage, price: Price) -> int:
    """The exact cost of `usage` at `price`, in nano-dollars."""
    cached = usage.cached_input_tokens
    written = usage.cache_write_tokens
    if not cached and not written:
        return usage.input_tokens * price.input_nanos + usage.output_tokens * price.output_nanos
    input_nanos = price.input_nanos
    read_nanos = input_nanos if price.cached_input_nanos is None else price.cached_input_nanos
    write_nanos = input_nanos if price.cache_write_nanos is None else price.cache_write_nanos
    return (
        (usage.input_tokens - cached - written) * input_nanos
        + cached * read_nanos
        + written * write_nanos
        + usage.output_tokens * price.output_nanos
    )


def input_cost(model: ModelSpec, input_tokens: int) -> int:
    """What `input_tokens` of uncached input cost on `model`: the least a call can cost."""
    return input_tokens * model.price.input_nanos


def worst_case_cost(model: ModelSpec, input_tokens: int, max_tokens: int) -> int:
    """The most one try of `model` can cost: all input uncached, all of max_tokens produced."""
    price = model.price
    return input_tokens * price.input_nanos + max_tokens * price.output_nanos


def largest_cost(route: RouteDecision) -> int:
    """The most one try of `route` can cost on any model of its chain (the budget hold)."""
    tokens = route.input_tokens
    return max(
        worst_case_cost(model, tokens, max_tokens)
        for model, max_tokens in zip(route.chain, route.chain_max_tokens, strict=True)
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
