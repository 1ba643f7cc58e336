"""Latency profiles: the log-normal fit and how scaling and overrides combine."""

from __future__ import annotations

from statistics import NormalDist

import pytest

from server.simulator.profiles import CATALOG, ModelProfile, plan_timing

P99_DRAW = NormalDist().cdf(2.326)


@pytest.mark.parametrize("profile", list(CATALOG.values()), ids=lambda p: p.name)
def test_draw_quantiles_match_the_table(profile: ModelProfile) -> None:
    assert profile.first_token_ms(0.5) == pytest.approx(profile.ttft_p50_ms)
    assert profile.first_token_ms(P99_DRAW) == pytest.approx(profile.ttft_p99_ms, rel=1e-3)
    assert profile.first_token_ms(0.1) < profile.ttft_p50_ms < profile.first_token_ms(0.9)


def test_catalog_is_the_documented_table() -> None:
    rows = {(p.name, p.ttft_p50_ms, p.ttft_p99_ms, p.max_concurrent) for p in CATALOG.values()}
    assert rows == {
        ("claude-sonnet-4-20250514", 850, 2100, 10),
        ("gpt-4.1", 620, 1800, 20),
        ("gemini-2.5-flash", 180, 450, 30),
        ("deepseek-v3.2", 320, 900, 5),
    }


def test_scale_multiplies_every_delay() -> None:
    profile = CATALOG["gpt-4.1"]
    one = plan_timing(profile, 0.5, latency_scale=1.0, tokens_per_second=50)
    two = plan_timing(profile, 0.5, latency_scale=2.0, tokens_per_second=50)
    assert one.first_token_s == pytest.approx(0.620)
    assert one.token_interval_s == pytest.approx(0.02)
    assert two.first_token_s == pytest.approx(1.240)
    assert two.token_interval_s == pytest.approx(0.04)
    assert one.unary_s(11) == pytest.approx(0.620 + 10 * 0.02)


def test_scale_zero_means_no_delay_but_latency_ms_stays_absolute() -> None:
    profile = CATALOG["gpt-4.1"]
    zero = plan_timing(profile, 0.99, latency_scale=0, tokens_per_second=60)
    assert (zero.first_token_s, zero.token_interval_s) == (0, 0)
    forced = plan_timing(profile, 0.99, latency_scale=0, tokens_per_second=60, latency_ms=2000)
    assert forced.first_token_s == 2.0
    assert forced.token_interval_s == 0
