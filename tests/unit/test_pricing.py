from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.catalog import default_catalog
from server.domain import Message, Price, Request, Role, Usage, nanos_per_token
from server.pipeline.router import Router
from server.pricing import (
    cost_nanos,
    display_usd,
    format_usd,
    largest_cost,
    to_decimal,
    usd_to_nanos,
)
from server.settings import RoutingSettings


def test_catalog_prices_become_whole_nanos_per_token():
    catalog = default_catalog()
    # $15/M = 15,000 nanos a token; cache reads $1.50/M = 1,500; cache writes $18.75/M
    assert catalog.models["claude-sonnet-4-20250514"].price == Price(15_000, 75_000, 1_500, 18_750)
    assert catalog.models["gpt-4.1"].price == Price(8_000, 32_000, 2_000)
    assert catalog.models["gemini-2.5-flash"].price == Price(2_500, 10_000, 625)
    assert catalog.models["deepseek-v3.2"].price == Price(420, 420, 42)


def test_cost_is_exact_by_hand():
    # 1,234 input tokens at $2.50/M and 567 output at $10/M:
    # 1234 * 0.0000025 + 567 * 0.00001 = 0.003085 + 0.00567 = 0.008755 USD
    price = Price.per_million(Decimal("2.50"), Decimal("10"))
    nanos = cost_nanos(Usage(1234, 567), price)
    assert nanos == 8_755_000
    assert format_usd(nanos) == "0.008755"
    assert to_decimal(nanos) == Decimal("0.008755")


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "0"),
        (1, "0.000000001"),
        (1_000_000_000, "1"),
        (1_500_000_000, "1.5"),
        (-42, "-0.000000042"),
    ],
)
def test_format_usd(nanos, text):
    assert format_usd(nanos) == text


def test_prices_finer_than_a_thousandth_per_million_are_refused():
    with pytest.raises(ValueError, match="round it to 3 decimal places"):
        nanos_per_token(Decimal("0.0005"))
    with pytest.raises(ValueError, match="non-negative"):
        nanos_per_token(Decimal("-1"))
    assert nanos_per_token(Decimal("0.001")) == 1


@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.decimals(0, 1000, places=3, allow_nan=False, allow_infinity=False),
    st.decimals(0, 1000, places=3, allow_nan=False, allow_infinity=False),
)
def test_integer_cost_equals_decimal_arithmetic(inp, out, price_in, price_out):
    price = Price.per_million(price_in, price_out)
    exact = (inp * price_in + out * price_out) / Decimal(1_000_000)
    assert to_decimal(cost_nanos(Usage(inp, out), price)) == exact
    assert Decimal(format_usd(cost_nanos(Usage(inp, out), price))) == exact


def test_cached_input_is_priced_apart_by_hand():
    # claude-sonnet-4: 1,000 input of which 900 cache reads, 50 output:
    # 100 * $15/M + 900 * $1.50/M + 50 * $75/M = 0.0015 + 0.00135 + 0.00375 = $0.0066
    price = Price.per_million(Decimal(15), Decimal(75), Decimal("1.50"))
    assert cost_nanos(Usage(1000, 50, cached_input_tokens=900), price) == 6_600_000
    # without a cached price, cached input costs the input price
    plain = Price.per_million(Decimal(15), Decimal(75))
    assert cost_nanos(Usage(1000, 50, cached_input_tokens=900), plain) == 18_750_000


def test_display_and_parse_dollars():
    assert display_usd(5_000_000_000) == "$5.00"
    assert display_usd(4_500_000) == "$0.0045"
    assert display_usd(1_234_567_891) == "$1.234567891"
    assert usd_to_nanos(Decimal("5.00")) == 5_000_000_000
    with pytest.raises(ValueError, match="finer than a nano-dollar"):
        usd_to_nanos(Decimal("0.0000000001"))


def test_largest_cost_is_the_priciest_model_of_the_chain():
    router = Router(default_catalog(), RoutingSettings())
    request = Request(messages=(Message.of(Role.USER, "hi"),), task=None, max_tokens=100)
    route = router.decide(request)  # simple: gemini-2.5-flash, falling back to gpt-4.1
    assert [m.name for m in route.chain] == ["gemini-2.5-flash", "gpt-4.1"]
    # "hi" = 1 + 4 = 5 input tokens; gemini: 5*2,500 + 100*10,000 = 1,012,500
    # gpt-4.1: 5*8,000 + 100*32,000 = 3,240,000 -> the reservation
    assert largest_cost(route) == 3_240_000
    alone = router.decide(Request(messages=request.messages, max_tokens=100, fallback=False))
    assert largest_cost(alone) == 1_012_500
    # Route's range on the chosen model: uncached input only, then all of max_tokens
    assert (route.cost_min, route.cost_max) == (5 * 2_500, 1_012_500)


def test_cache_writes_reads_and_reasoning_are_priced_exactly():
    claude = default_catalog().models["claude-sonnet-4-20250514"]
    # 1,000 uncached at $15/M + 4,000 written at $18.75/M (1.25x) + 2,000 read at $1.50/M,
    # and 500 output (300 of them reasoning) at $75/M:
    # 0.015 + 0.075 + 0.003 + 0.0375 = 0.1305 USD
    usage = Usage(
        7_000, 500, cached_input_tokens=2_000, reasoning_tokens=300, cache_write_tokens=4_000
    )
    assert cost_nanos(usage, claude.price) == 130_500_000
    # Reasoning tokens are output tokens already: counting them apart changes nothing.
    assert cost_nanos(usage, claude.price) == cost_nanos(
        Usage(7_000, 500, cached_input_tokens=2_000, cache_write_tokens=4_000), claude.price
    )


def test_cache_writes_cost_the_input_price_unless_the_model_says():
    gpt = default_catalog().models["gpt-4.1"]  # OpenAI charges nothing extra for writes
    assert gpt.price.cache_write_nanos is None
    written = Usage(1_000, 0, cache_write_tokens=1_000)
    assert cost_nanos(written, gpt.price) == cost_nanos(Usage(1_000, 0), gpt.price) == 8_000_000
    plain = Price.per_million(Decimal(3), Decimal(15))
    assert cost_nanos(Usage(10, 0, cached_input_tokens=4, cache_write_tokens=6), plain) == 30_000
