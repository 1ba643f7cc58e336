"""The bench's target checks: ratios to the floor, from paired rounds when the run has them."""

# ruff: noqa: RUF001 - the report writes ratios with the multiplication sign

from __future__ import annotations

from typing import Any

from bench.report import FLOOR, OTLP, OTLP_KEEP, REDIS, Check, checks, checks_text, pairs_text


def _row(cpu: float, p50: float, p99: float, ttft: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "available": True,
        "unary_cpu_ms": cpu,
        "c1": {"latency_ms": {"p50": p50, "p99": p99}},
        "idle": {},
    }
    if ttft is not None:
        row["ttft"] = {"ttft_ms": {"p50": ttft}}
    return row


def _results(pairs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "subject": "switchyard",
        "rows": {
            FLOOR: _row(1.0, 1.0, 2.0, ttft=2.0),
            # As measured minutes later on a machine running at half speed.
            "switchyard": _row(2.0, 1.17, 3.2, ttft=2.2),
            REDIS: _row(1.5, 1.5, 3.0),
            OTLP: _row(1.7, 1.2, 3.0),
            OTLP_KEEP: _row(1.6, 1.2, 3.0),
        },
        "pairs": pairs,
    }


def _pair(**figures: list[float]) -> dict[str, Any]:
    return {"available": True, "errors": 0, **figures}


def _by_name(found: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in found}


def test_without_pairs_the_targets_are_ratios_of_the_rows() -> None:
    found = _by_name(checks(_results()))

    cpu = found["unary CPU/req vs floor"]
    assert (cpu.goal, cpu.value, cpu.ok) == ("≤ 1.3×", "2.00×", False)
    p50 = found["c=1 p50 vs floor"]
    assert (p50.goal, p50.value, p50.ok) == ("≤ 1.2×", "1.17× (+0.17 ms)", True)
    ttft = found["TTFT p50 vs floor"]
    assert (ttft.goal, ttft.value, ttft.ok) == ("≤ 1.15×", "1.10× (+0.20 ms)", True)
    p99 = found["c=1 p99 added over floor"]
    assert (p99.goal, p99.value, p99.ok) == ("≤ 1.5 ms", "+1.200 ms", True)
    # The old absolute targets are gone; the other issues' targets stay as stated.
    assert "c=1 p50 added over floor" not in found
    assert "TTFT p50 added over floor" not in found
    redis = found["c=1 p50 added over floor, with Redis"]
    assert (redis.goal, redis.value, redis.ok) == ("≤ 0.6 ms", "+0.500 ms", True)
    assert found["unary CPU/req with Redis (shared state) vs floor"].ok is True  # 1.5 ≤ 1.6
    assert found["unary CPU/req, OTLP export of every trace, vs floor"].ok is True  # 1.7 ≤ 1.8
    assert found["unary CPU/req, OTLP export, default keep policy, vs floor"].ok is False
    assert "from the rows" in checks_text(_results())


def test_with_pairs_each_target_is_the_median_of_the_rounds_ratios() -> None:
    pairs = {
        # The machine slows down round by round; each round's ratio still compares like
        # with like, while the ratio of the medians (2.6 / 2.0 = 1.30) would not.
        FLOOR: _pair(
            unary_cpu_ms=[1.0, 2.0, 3.0],
            c1_p50_ms=[1.0, 1.5, 2.0],
            c1_p99_ms=[2.0, 3.0, 4.0],
            ttft_p50_ms=[2.0, 2.0, 4.0],
        ),
        "switchyard": _pair(
            unary_cpu_ms=[1.2, 2.6, 3.6],
            c1_p50_ms=[1.3, 1.65, 2.2],
            c1_p99_ms=[3.0, 5.0, 5.0],
            ttft_p50_ms=[2.2, 2.4, 4.4],
        ),
        REDIS: _pair(unary_cpu_ms=[1.7, 3.0, 4.5], c1_p50_ms=[1.7, 2.2, 2.8], c1_p99_ms=[1, 1, 1]),
        OTLP: _pair(unary_cpu_ms=[1.9, 3.6, 5.1], c1_p50_ms=[1, 1, 1], c1_p99_ms=[4.0, 4.0, 6.0]),
        OTLP_KEEP: {"available": False, "reason": "did not start"},
    }
    results = _results(pairs)
    found = _by_name(checks(results))

    cpu = found["unary CPU/req vs floor"]
    assert (cpu.value, cpu.ok) == ("1.20× (rounds 1.20, 1.30, 1.20)", True)
    p50 = found["c=1 p50 vs floor"]
    assert (p50.value, p50.ok) == ("1.10× (+0.20 ms; rounds 1.30, 1.10, 1.10)", True)
    ttft = found["TTFT p50 vs floor"]
    assert (ttft.value, ttft.ok) == ("1.10× (+0.40 ms; rounds 1.10, 1.20, 1.10)", True)
    p99 = found["c=1 p99 added over floor"]
    assert (p99.value, p99.ok) == ("+1.000 ms (rounds +1.00, +2.00, +1.00)", True)
    redis_cpu = found["unary CPU/req with Redis (shared state) vs floor"]
    assert (redis_cpu.value, redis_cpu.ok) == ("1.50× (rounds 1.70, 1.50, 1.50)", True)
    redis_p50 = found["c=1 p50 added over floor, with Redis"]
    assert (redis_p50.value, redis_p50.ok) == ("+0.700 ms (rounds +0.70, +0.70, +0.80)", False)
    otlp = found["unary CPU/req, OTLP export of every trace, vs floor"]
    assert (otlp.value, otlp.ok) == ("1.80× (rounds 1.90, 1.80, 1.70)", True)
    otlp_p99 = found["c=1 p99 added over floor, OTLP export of every trace"]
    assert (otlp_p99.value, otlp_p99.ok) == ("+2.000 ms (rounds +2.00, +1.00, +2.00)", False)
    # A target missing from the pairs falls back to its row.
    keep = found["unary CPU/req, OTLP export, default keep policy, vs floor"]
    assert (keep.value, keep.ok) == ("1.60×", False)
    # Streaming is not paired: it stays a ratio of the rows.
    assert found["stream CPU/token vs floor"].value == "not measured"

    text = checks_text(results)
    assert "median over 3 paired round(s)" in text
    table = pairs_text(results)
    assert "1.00 2.00 3.00" in table and "1.20 2.60 3.60" in table
    assert "did not start" in table


def test_a_round_without_a_figure_is_left_out() -> None:
    pairs = {
        FLOOR: _pair(unary_cpu_ms=[1.0, 0.0, 1.0], c1_p50_ms=[1.0], c1_p99_ms=[1.0]),
        "switchyard": _pair(unary_cpu_ms=[1.1, 1.0, 1.5], c1_p50_ms=[1.1], c1_p99_ms=[1.0]),
    }
    found = _by_name(checks(_results(pairs)))
    assert found["unary CPU/req vs floor"].value == "1.30× (rounds 1.10, 1.50)"
