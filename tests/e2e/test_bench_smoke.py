"""The benchmark harness still runs: `python -m bench --smoke` against the floor and Switchyard.

This is how CI proves `make bench` works without timing anything: the smoke measures with
tiny counts and the test asserts only that every figure exists and is positive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SWITCHYARD_PRESENT = (ROOT / "server" / "__main__.py").exists()


@pytest.mark.timeout(120)
def test_bench_smoke_reports_sane_figures(tmp_path: Path) -> None:
    """The smoke exits 0 and writes positive CPU, latency, token and RSS figures."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--quiet",
            "--only",
            "relay,floor(aiohttp),switchyard,switchyard(auth),auth",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [figures] = tmp_path.glob("*.json")
    results = json.loads(figures.read_text())
    assert "floor(aiohttp)" in run.stdout

    names = ["relay", "floor(aiohttp)"] + (["switchyard"] if SWITCHYARD_PRESENT else [])
    for name in names:
        row = results["rows"][name]
        assert row["available"], row
        # /proc counts CPU in 10 ms ticks; the relay may spend less than one per phase.
        least = 0 if name == "relay" else 1e-9
        assert row["unary_cpu_ms"] >= least
        assert row["stream_cpu_us_per_token"] >= least
        for phase in ("c1", "saturate", "open", "stream", "burst", "ttft"):
            assert row[phase]["requests"] > 0, (name, phase)
            assert row[phase]["errors"] == 0, (name, phase, row[phase]["error_sample"])
            assert 0 < row[phase]["latency_ms"]["p50"] <= row[phase]["latency_ms"]["p99"]
        assert row["ttft"]["ttft_ms"]["p50"] > 0
        assert row["stream"]["tokens"] > row["stream"]["requests"]
    for name in names[1:]:
        [(count, idle)] = results["rows"][name]["idle"].items()
        assert idle["opened"] == int(count), idle
        assert idle["rss_mb"] > 0
    if SWITCHYARD_PRESENT:  # with API keys: every call of every phase authenticated
        row = results["rows"]["switchyard(auth)"]
        assert row["available"], row
        for phase in ("c1", "saturate", "open", "stream", "burst", "ttft"):
            assert row[phase]["requests"] > 0 and row[phase]["errors"] == 0, (phase, row[phase])
        assert results["auth"]["caller_header_us"] > 0 and results["auth"]["api_key_us"] > 0
        assert "(set)" in row["description"] and "SWITCHYARD_ADMIN_KEY=(set)" in run.stdout
    if not SWITCHYARD_PRESENT:
        assert not results["rows"]["switchyard"]["available"]
        assert "not available" in run.stdout
    # The relay must be far cheaper than any gateway, or it would be the bottleneck.
    relay_cpu = results["rows"]["relay"]["unary_cpu_ms"]
    assert 0 <= relay_cpu < results["rows"]["floor(aiohttp)"]["unary_cpu_ms"]
    if SWITCHYARD_PRESENT:  # the targets in paired rounds: one round in a smoke
        pairs = results["pairs"]
        assert set(pairs) == {"floor(aiohttp)", "switchyard"}, pairs
        for name, pair in pairs.items():
            assert pair["available"] and pair["errors"] == 0, (name, pair)
            for key in ("unary_cpu_ms", "c1_p50_ms", "c1_p99_ms", "ttft_p50_ms"):
                [value] = pair[key]
                assert value > 0, (name, key)
            assert pair["c1_p50_ms"][0] <= pair["c1_p99_ms"][0]
        assert "median over 1 paired round(s)" in run.stdout
        assert "c=1 p50 vs floor" in run.stdout and "(rounds " in run.stdout


@pytest.mark.timeout(180)
def test_bench_smoke_measures_shared_state_with_one_and_two_workers(tmp_path: Path) -> None:
    """The Redis rows run: one gateway, then two workers, every phase without an error."""
    if not SWITCHYARD_PRESENT:
        pytest.skip("no gateway on this branch")
    rows = ("switchyard(redis)", "switchyard(redis, workers=2)")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--quiet",
            "--only",
            ",".join(("relay", "floor(aiohttp)", *rows)),
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [figures] = tmp_path.glob("*.json")
    results = json.loads(figures.read_text())
    for name in rows:
        row = results["rows"][name]
        assert row["available"], row
        for phase in ("c1", "saturate", "open", "stream", "burst", "ttft", "sustained"):
            assert row[phase]["requests"] > 0 and row[phase]["errors"] == 0, (name, phase)
        assert row["saturation_rps"] > 0 and row["redis_cpu_s"] > 0, row
    two = results["rows"]["switchyard(redis, workers=2)"]
    assert "SWITCHYARD_WORKERS=2" in two["description"]
    # Paired with the floor (no TTFT: that target is the default gateway's only).
    pairs = results["pairs"]
    assert set(pairs) == {"floor(aiohttp)", "switchyard(redis)"}, pairs
    redis = pairs["switchyard(redis)"]
    assert redis["available"] and redis["errors"] == 0, redis
    assert redis["unary_cpu_ms"][0] > 0 and 0 < redis["c1_p50_ms"][0] <= redis["c1_p99_ms"][0]
    assert "ttft_p50_ms" not in redis
    assert "redis://" not in run.stdout and "postgresql://" not in run.stdout  # no URL printed
