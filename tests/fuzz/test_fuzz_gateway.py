"""Issue 16's fuzzer: generated calls over the whole gRPC surface of a real gateway, for a time.

SWITCHYARD_FUZZ_SECONDS of generated input (60 by default, as `make test`
runs it; `make fuzz` runs 600) against `python -m server` on its embedded
simulator: messages built from every request type's descriptor, raw bytes no
stub would send, hostile metadata, tiny, zero and huge deadlines,
cancellation mid-call and mid-stream (tests/fuzz/harness.py has the oracle).
The run fails on any answer outside the documented statuses (UNKNOWN or
INTERNAL above all), a traceback, type name or secret in a message, a call
left unanswered, health that stops answering SERVING, a traceback or an
ERROR line in the gateway's log, or memory that keeps growing. The seed is
in the summary line; SWITCHYARD_FUZZ_SEED=<seed> replays the inputs.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import resource

import grpc
import pytest

from tests.fuzz.conftest import SUMMARIES, FuzzedGateway
from tests.fuzz.errors_table import documented_statuses
from tests.fuzz.harness import fuzz

SECONDS = float(os.environ.get("SWITCHYARD_FUZZ_SECONDS") or 60)
SEED = int(os.environ.get("SWITCHYARD_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
# Memory the server may gain over the run, after its warm-up. What it keeps grows with
# what it has seen, up to fixed ceilings: the response cache's SWITCHYARD_CACHE_MAX_BYTES
# (64 MB of estimated bytes, more in Python objects), the key cache and the failure
# throttle (10,000 entries each), the state kept per caller; an allocator holding freed
# arenas adds tens of MB after calls of several MB each. 150 MB is above all of that for a
# 60 s run and far below what a leak of each call's request (up to 4 MB) would take.
RSS_GROWTH_LIMIT_MB = 150
# The fuzzer's own process (this one) may map this much while it runs: once, a run grew
# to 24 GB here and the kernel killed it, seed unprinted. Past the bound an allocation
# fails in this process, which fails the run instead of taking the machine.
ADDRESS_SPACE_LIMIT = 16 << 30
MIN_CALLS_PER_SECOND = 5  # far below any working run: proves the time went into calls
# The gateway's own RPCs must each have been served and refused at least once: the
# generator reaches past validation into the pipeline, and also hits validation.
GATEWAY_RPCS = ("GatewayService/Route", "GatewayService/Query", "GatewayService/StreamQuery")


@pytest.mark.timeout(SECONDS + 300)
async def test_fuzzing_every_rpc_gets_documented_statuses_and_the_gateway_stays_healthy(
    fuzzed_gateway: FuzzedGateway, request: pytest.FixtureRequest
):
    gateway = fuzzed_gateway
    # Said before the run, past pytest's capture: a run that dies still names its inputs.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nfuzzing with SWITCHYARD_FUZZ_SEED={SEED}", flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    bounded = (
        ADDRESS_SPACE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, ADDRESS_SPACE_LIMIT)
    )
    resource.setrlimit(resource.RLIMIT_AS, (bounded, hard))
    channel = grpc.insecure_channel(gateway.address)
    try:
        report = await asyncio.to_thread(
            fuzz,
            channel,
            seconds=SECONDS,
            seed=SEED,
            admin_key=gateway.admin_key,
            rss_kb=gateway.rss_kb,
        )
    except MemoryError:
        pytest.fail(f"the fuzzer itself ran out of memory (SWITCHYARD_FUZZ_SEED={SEED})")
    finally:
        channel.close()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    request.config.stash.setdefault(SUMMARIES, []).append(report.summary())
    print(report.summary())
    for name, codes in sorted(report.by_target.items()):
        print(f"  {name} ({report.busy[name]:.1f} s): {dict(codes.most_common())}")

    alive = gateway.process.returncode is None
    exit_code = await gateway.stop()
    log = await gateway.log_text()

    findings = "\n".join(str(finding) for finding in report.findings.values())
    assert not report.findings, f"{len(report.findings)} kinds of bad answer:\n{findings}"
    assert alive, f"the gateway died during the run (exit code {exit_code})"
    assert not report.health_failures, report.health_failures[:10]
    assert report.seconds >= SECONDS
    assert report.calls >= MIN_CALLS_PER_SECOND * SECONDS, report.summary()
    for name in GATEWAY_RPCS:
        assert report.by_target[name]["OK"], (name, report.by_target[name])
        assert report.by_target[name]["INVALID_ARGUMENT"], (name, report.by_target[name])
    undocumented = set(report.codes) - {"OK"} - documented_statuses()
    assert not undocumented, f"README ## Errors has no row for {undocumented}"
    growth_mb = (report.rss_end_kb - report.rss_start_kb) / 1024
    assert growth_mb < RSS_GROWTH_LIMIT_MB, report.summary()

    assert "Traceback" not in log, _around(log, "Traceback")
    errors = [line for line in log.splitlines() if re.search(r"^\S+ \S+ ERROR ", line)]
    assert not errors, errors[:10]
    assert exit_code == 0, log[-2000:]


def _around(text: str, needle: str) -> str:
    at = text.index(needle)
    return text[max(at - 500, 0) : at + 2500]
