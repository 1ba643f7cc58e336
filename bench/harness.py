"""The measurement plan: which phases run against which target, and how figures are taken.

Every phase follows one protocol: start the load workers (separate processes), let them
warm up, snapshot the server's and the relay's CPU from /proc, say ``go``, wait for every
worker's ``done``, snapshot again. CPU per request is the CPU delta of the server's
process tree over that window divided by the requests completed in it; latencies come
from the clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import procstat, profile
from bench.load import Spec
from bench.targets import ROOT, Target

UNARY_SHAPE = "[relay chunks=16]"
FOREIGN_WARNING = 0.10  # share of the machine's CPU used by others that taints a phase
# Idle streams trickle: a token every 10 s, well inside Switchyard's 30 s idle-read
# timeout (a relay silent for longer is, rightly, treated as stalled and retried).
IDLE_SHAPE = "[relay chunks=400 delay=10]"
TTFT_SHAPE = "[relay chunks=8]"


@dataclass(frozen=True, slots=True)
class Plan:
    """Durations and sizes of every phase; ``full`` for ``make bench``, ``smoke`` for CI."""

    c1_seconds: float = 3.0
    throughput_seconds: float = 5.0
    throughput_concurrency: int = 32
    rate: float = 100.0
    open_seconds: float = 5.0
    stream_seconds: float = 4.0
    stream_concurrency: int = 32
    stream_shape: str = "[relay chunks=64 delay=0.005]"
    burst_shape: str = "[relay chunks=64 burst=1]"
    ttft_seconds: float = 3.0
    probe_seconds: float = 3.0
    probes: int = 5
    sustain_seconds: float = 8.0
    sustain_fraction: float = 0.8
    idle_counts: tuple[int, ...] = (1000, 10000)
    idle_per_worker: int = 5000
    idle_streams_per_channel: int = 500
    warmup: int = 300
    load_processes: int = 1
    quiet_retries: int = 1
    # The paired rounds of the targets (``python -m bench``'s pairs step): shorter
    # phases than the rows', so the floor and each gateway are measured seconds apart.
    pairs_rounds: int = 3
    pairs_cpu_seconds: float = 3.0
    pairs_c1_seconds: float = 2.0
    pairs_ttft_seconds: float = 2.0

    @classmethod
    def smoke(cls) -> Plan:
        """Tiny counts: proves the harness runs, in seconds; figures are not meaningful."""
        return cls(
            c1_seconds=0.2,
            throughput_seconds=0.3,
            throughput_concurrency=8,
            rate=50.0,
            open_seconds=0.3,
            stream_seconds=0.3,
            stream_concurrency=4,
            stream_shape="[relay chunks=16 delay=0.002]",
            burst_shape="[relay chunks=16 burst=1]",
            ttft_seconds=0.2,
            probe_seconds=0.2,
            probes=1,
            sustain_seconds=0.3,
            idle_counts=(50,),
            warmup=10,
            quiet_retries=0,
            pairs_rounds=1,
            pairs_cpu_seconds=0.3,
            pairs_c1_seconds=0.2,
            pairs_ttft_seconds=0.2,
        )


@dataclass(slots=True)
class Phase:
    """Merged figures of one phase against one target."""

    name: str
    requests: int = 0
    errors: int = 0
    error_sample: str = ""
    error_kinds: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    relay_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    client_busiest: float = 0.0  # the busiest worker's CPU / wall: near 1.0 means client-bound
    # CPU used on the machine by anything but the server, relay and load workers, as a
    # share of all cores: other work on a shared machine makes latencies unreliable.
    foreign_share: float = 0.0
    attempts: int = 1
    tokens: int = 0
    messages: int = 0
    cached: int = 0
    max_lateness_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Figures for the JSON: counts, CPU and percentiles, not raw samples."""
        out = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "ttft_ms")}
        out["throughput_rps"] = self.requests / self.wall_s if self.wall_s else 0.0
        out["cpu_ms_per_request"] = per(self.server_cpu_s * 1000, self.requests)
        out["relay_cpu_ms_per_request"] = per(self.relay_cpu_s * 1000, self.requests)
        out["cpu_us_per_token"] = per(self.server_cpu_s * 1e6, self.tokens)
        out["latency_ms"] = percentiles(self.latencies_ms)
        if self.ttft_ms:
            out["ttft_ms"] = percentiles(self.ttft_ms)
        return out


def per(total: float, count: int) -> float | None:
    """total / count, or None when nothing was counted."""
    return total / count if count else None


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def percentiles(values: list[float]) -> dict[str, Any]:
    """p50/p90/p99/p99.9/max and a 101-point quantile curve (for CDF charts)."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "p999": percentile(ordered, 99.9),
        "max": ordered[-1],
        "quantiles": [round(percentile(ordered, q), 4) for q in range(101)],
    }


class WorkerProcess:
    """One ``bench.load`` child and its line protocol."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, spec: Spec, log: Path) -> WorkerProcess:
        """Spawn a worker for one spec; its stderr goes to ``log``."""
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.load",
                json.dumps(asdict(spec)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                limit=2**28,  # "done" carries every latency sample on one line
            )
        return cls(process, log)

    async def expect(self, event: str, within: float) -> dict[str, Any]:
        """Read lines until a message with this event; fail with the worker's stderr."""
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    tail = self.log.read_text(errors="replace").splitlines()[-10:]
                    raise RuntimeError(f"load worker died waiting for {event!r}: {tail}")
                try:
                    message: dict[str, Any] = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if message.get("event") == event:
                    return message

    async def send(self, word: str) -> None:
        """Write one command line to the worker."""
        assert self.process.stdin is not None
        self.process.stdin.write(word.encode() + b"\n")
        await self.process.stdin.drain()

    async def close(self) -> None:
        """Close stdin and reap the worker (killing it if it hangs)."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def _split(spec: Spec, parts: int) -> list[Spec]:
    """Share one spec's concurrency or rate between ``parts`` workers."""
    if parts <= 1:
        return [spec]
    out = []
    for index in range(parts):
        share = spec.concurrency // parts + (1 if index < spec.concurrency % parts else 0)
        out.append(
            replace(
                spec,
                worker=spec.worker * 100 + index,
                concurrency=max(1, share),
                rate=spec.rate / parts,
                warmup=max(1, spec.warmup // parts),
            )
        )
    return out


class Runner:
    """Runs phases against targets while watching the relay's CPU too."""

    def __init__(
        self,
        plan: Plan,
        relay_pid: int,
        logs: Path,
        verbose: bool = True,
        profile: tuple[str, ...] = (),
        out: Path | None = None,
    ) -> None:
        self.plan = plan
        self.profile = profile
        self.out = out or logs
        self.relay_pid = relay_pid
        self.logs = logs
        self.verbose = verbose
        self._serial = 0

    def say(self, text: str) -> None:
        """Progress on stderr, so stdout carries only the table."""
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def spec(self, target: Target, **kwargs: Any) -> Spec:
        """A spec aimed at a target, with a fresh worker number (unique prompts)."""
        self._serial += 1
        return Spec(
            protocol=target.protocol,
            address=target.address,
            api_key=target.api_key,
            bearer=target.bearer,
            worker=self._serial,
            **kwargs,
        )

    async def latency_phase(
        self, name: str, target: Target, spec: Spec, processes: int = 1
    ) -> Phase:
        """A headline phase: rerun once if other processes used over 10% of the machine,
        keeping the quieter attempt (latencies suffer most, but CPU per request too)."""
        best = await self.phase(name, target, spec, processes)
        for _ in range(self.plan.quiet_retries):
            if best.foreign_share <= FOREIGN_WARNING:
                break
            again = await self.phase(
                name, target, replace(spec, worker=spec.worker + 50_000), processes
            )
            again.attempts = best.attempts + 1
            best = min(best, again, key=lambda p: p.foreign_share)
        return best

    async def phase(self, name: str, target: Target, spec: Spec, processes: int = 1) -> Phase:
        """Run one measured phase; CPU is sampled around the measured window only."""
        workers = [
            await WorkerProcess.start(s, self.logs / "load.log") for s in _split(spec, processes)
        ]
        result = Phase(name)
        try:
            warm_timeout = 120.0 + spec.warmup * 0.1
            await asyncio.gather(*(w.expect("ready", warm_timeout) for w in workers))
            cpu0 = procstat.cpu_seconds(target.pid)
            relay0 = procstat.cpu_seconds(self.relay_pid)
            busy0 = procstat.machine_busy_seconds()
            start = time.perf_counter()
            for worker in workers:
                await worker.send("go")
            done_timeout = spec.duration + 120.0
            outcomes = await asyncio.gather(*(w.expect("done", done_timeout) for w in workers))
            result.wall_s = time.perf_counter() - start
            result.server_cpu_s = procstat.cpu_seconds(target.pid) - cpu0
            result.relay_cpu_s = procstat.cpu_seconds(self.relay_pid) - relay0
            busy = procstat.machine_busy_seconds() - busy0
        finally:
            for worker in workers:
                await worker.close()
        _alive(target, name)
        client_cpu = sum(o["client_cpu_s"] for o in outcomes)
        ours = result.server_cpu_s + client_cpu
        if target.pid != self.relay_pid:
            ours += result.relay_cpu_s
        cores = os.cpu_count() or 1
        result.foreign_share = max(0.0, busy - ours) / (result.wall_s * cores)
        for outcome in outcomes:
            result.requests += outcome["completed"]
            result.errors += outcome["errors"]
            result.error_sample = result.error_sample or outcome["error_sample"]
            for kind, count in outcome["error_kinds"].items():
                result.error_kinds[kind] = result.error_kinds.get(kind, 0) + count
            result.client_cpu_s += outcome["client_cpu_s"]
            result.client_busiest = max(
                result.client_busiest, outcome["client_cpu_s"] / max(outcome["wall_s"], 1e-9)
            )
            result.tokens += outcome["tokens"]
            result.messages += outcome["messages"]
            result.cached += outcome["cached"]
            result.max_lateness_ms = max(result.max_lateness_ms, outcome["max_lateness_ms"])
            result.latencies_ms.extend(outcome["latencies_ms"])
            result.ttft_ms.extend(outcome["ttft_ms"])
        self._report(target, result)
        return result

    def _report(self, target: Target, result: Phase) -> None:
        summary = result.summary()
        lat = summary["latency_ms"]
        parts = [
            f"  {target.name:<20} {result.name:<9} n={result.requests:<6}",
            f"{summary['throughput_rps']:8.0f}/s",
            f"cpu {fmt(summary['cpu_ms_per_request'], 3)} ms/req",
        ]
        if result.tokens and result.ttft_ms:
            parts.append(f"{fmt(summary['cpu_us_per_token'], 1)} µs/tok")
        if lat.get("n"):
            parts.append(f"p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} ms")
        parts.append(f"client {result.client_busiest:.0%}")
        if result.foreign_share > FOREIGN_WARNING:
            parts.append(f"BUSY MACHINE: {result.foreign_share:.0%} of CPU used by others")
        if result.errors:
            parts.append(f"ERRORS {result.errors} ({result.error_sample})")
        self.say(" ".join(parts))

    async def idle(self, target: Target, count: int) -> dict[str, Any]:
        """Hold ``count`` streams open after their first token and read the tree's RSS."""
        plan = self.plan
        parts = max(1, -(-count // plan.idle_per_worker))
        spec = self.spec(
            target,
            mode="idle",
            stream=True,
            concurrency=count,
            shape=IDLE_SHAPE,
            channels=max(1, -(-count // parts // plan.idle_streams_per_channel)),
            open_timeout=30.0 + count / 200,
        )
        before = procstat.memory(target.pid)
        workers = [
            await WorkerProcess.start(s, self.logs / "load.log") for s in _split(spec, parts)
        ]
        try:
            await asyncio.gather(*(w.expect("ready", 60) for w in workers))
            start = time.perf_counter()
            for worker in workers:
                await worker.send("go")
            held = await asyncio.gather(
                *(w.expect("holding", spec.open_timeout + 30) for w in workers)
            )
            opened_s = time.perf_counter() - start
            await asyncio.sleep(1.0)  # let allocations settle before reading RSS
            during = procstat.memory(target.pid)
            for worker in workers:
                await worker.send("release")
            done = await asyncio.gather(*(w.expect("done", 120) for w in workers))
        finally:
            for worker in workers:
                await worker.close()
        _alive(target, f"idle {count}")
        opened = sum(h["open"] for h in held)
        figures = {
            "streams": count,
            "opened": opened,
            "failed": count - opened,
            "error_sample": next((d["error_sample"] for d in done if d["error_sample"]), ""),
            "open_seconds": opened_s,
            "rss_before_mb": before.rss / 2**20,
            "rss_mb": during.rss / 2**20,
            "hwm_mb": during.hwm / 2**20,
            "kb_per_stream": (during.rss - before.rss) / 1024 / max(opened, 1),
        }
        self.say(
            f"  {target.name:<20} idle {count:>6}: opened {opened} in {opened_s:.1f}s,"
            f" RSS {figures['rss_mb']:.0f} MB (was {figures['rss_before_mb']:.0f} MB,"
            f" peak {figures['hwm_mb']:.0f} MB)"
            + (f" FAILED {count - opened}: {figures['error_sample']}" if opened < count else "")
        )
        return figures


class TargetExitedError(RuntimeError):
    """The process under test exited in the middle of a measurement."""


def _alive(target: Target, phase: str) -> None:
    code = target.process.returncode
    if code is not None:
        tail = target.log.read_text(errors="replace").splitlines()[-3:]
        raise TargetExitedError(f"{target.name} exited ({code}) during {phase}: {tail}")


def fmt(value: float | None, digits: int) -> str:
    """A number with fixed digits, or an en dash when absent."""
    return "–" if value is None else f"{value:.{digits}f}"


def sustainable(phase: Phase, rate: float, unloaded_p50_ms: float) -> bool:
    """Did the target keep up with an open-loop rate? No errors, every request done in
    about the window, and a median still near the unloaded one (a growing queue shows
    there first)."""
    if phase.errors or not phase.latencies_ms or phase.wall_s <= 0:
        return False
    p50 = percentile(sorted(phase.latencies_ms), 50)
    achieved = phase.requests / phase.wall_s
    return achieved >= 0.95 * rate and p50 <= max(5 * unloaded_p50_ms, unloaded_p50_ms + 5)


def unary_cpu_spec(runner: Runner, target: Target, seconds: float) -> Spec:
    """The closed-loop unary phase CPU per request is read from (32 calls in flight)."""
    plan = runner.plan
    return runner.spec(
        target,
        mode="closed",
        concurrency=plan.throughput_concurrency,
        duration=seconds,
        warmup=plan.warmup,
        shape=UNARY_SHAPE,
    )


def ttft_spec(runner: Runner, target: Target, seconds: float) -> Spec:
    """The time-to-first-token phase: one stream at a time."""
    return runner.spec(
        target,
        mode="closed",
        stream=True,
        duration=seconds,
        warmup=runner.plan.warmup // 4,
        shape=TTFT_SHAPE,
    )


async def find_saturation(
    runner: Runner, target: Target, ceiling: float, unloaded_p50_ms: float
) -> tuple[float, list[dict[str, Any]]]:
    """The highest open-loop rate sustained, searched by bisection under the closed-loop
    throughput (closed loops batch better than scheduled arrivals, so they overestimate:
    the floor sustained about 80% of its closed-loop figure)."""
    plan = runner.plan
    low, high = 0.0, ceiling
    rate = ceiling * 0.7
    probes: list[dict[str, Any]] = []
    for _ in range(plan.probes):
        # A failed probe gets one retry: a single hiccup of a shared machine must not
        # halve the answer, while a real overload fails twice.
        for _attempt in range(2):
            phase = await runner.phase(
                f"{rate:.0f}/s",
                target,
                runner.spec(
                    target,
                    mode="open",
                    rate=rate,
                    duration=plan.probe_seconds,
                    warmup=plan.warmup // 2,
                    concurrency=plan.throughput_concurrency,
                    shape=UNARY_SHAPE,
                ),
                plan.load_processes,
            )
            kept_up = sustainable(phase, rate, unloaded_p50_ms)
            probes.append({"rate": rate, "sustained": kept_up, **phase.summary()})
            if kept_up or plan.probes == 1:
                break
        if kept_up:
            low = rate
        else:
            high = rate
        rate = (low + high) / 2
    # Never zero: if even the lowest probe failed, report it as an upper bound.
    return (low or high / 2), probes


async def measure_target(
    runner: Runner, target: Target, idle: bool, sustain: bool = True
) -> dict[str, Any]:
    """Every phase against one target; returns its row of figures.

    ``sustain`` adds the open-loop saturation search and the run at 80% of it; ``idle``
    adds the idle-stream RSS phases."""
    plan = runner.plan
    runner.say(f"{target.name}: measuring")
    unary = {"shape": UNARY_SHAPE}
    procs = plan.load_processes
    c1 = await runner.latency_phase(
        "c=1",
        target,
        runner.spec(
            target, mode="closed", duration=plan.c1_seconds, warmup=plan.warmup // 2, **unary
        ),
    )
    tput = await runner.latency_phase(
        "saturate",
        target,
        runner.spec(
            target,
            mode="closed",
            concurrency=plan.throughput_concurrency,
            duration=plan.throughput_seconds,
            warmup=plan.warmup,
            **unary,
        ),
        procs,
    )
    fixed = await runner.latency_phase(
        "open",
        target,
        runner.spec(
            target, mode="open", rate=plan.rate, duration=plan.open_seconds, warmup=20, **unary
        ),
    )
    streams: dict[str, Any] = {
        "mode": "closed",
        "stream": True,
        "concurrency": plan.stream_concurrency,
        "duration": plan.stream_seconds,
        "warmup": plan.stream_concurrency,
    }
    stream = await runner.latency_phase(
        "stream", target, runner.spec(target, shape=plan.stream_shape, **streams), procs
    )
    burst = await runner.phase(
        "burst", target, runner.spec(target, shape=plan.burst_shape, **streams), procs
    )
    ttft = await runner.latency_phase("ttft", target, ttft_spec(runner, target, plan.ttft_seconds))
    closed_rps = tput.requests / tput.wall_s if tput.wall_s else 0.0
    row: dict[str, Any] = {
        "available": True,
        "description": target.description,
        "unary_cpu_ms": tput.summary()["cpu_ms_per_request"],
        "closed_loop_rps": closed_rps,
        "saturation_rps": None,
        "c1": c1.summary(),
        "saturate": tput.summary(),
        "open": fixed.summary(),
        "stream": stream.summary(),
        "burst": burst.summary(),
        "ttft": ttft.summary(),
        "stream_cpu_us_per_token": stream.summary()["cpu_us_per_token"],
        "burst_cpu_us_per_token": burst.summary()["cpu_us_per_token"],
        "relay_cpu_ms_per_request": tput.summary()["relay_cpu_ms_per_request"],
        "idle": {},
    }
    if sustain:
        unloaded = percentile(sorted(c1.latencies_ms), 50)
        saturation, probes = await find_saturation(runner, target, closed_rps, unloaded)
        rate = max(1.0, saturation * plan.sustain_fraction)
        sustained = await runner.latency_phase(
            "sustain",
            target,
            runner.spec(
                target,
                mode="open",
                rate=rate,
                duration=plan.sustain_seconds,
                warmup=plan.warmup,
                concurrency=plan.throughput_concurrency,
                **unary,
            ),
            procs,
        )
        row["saturation_rps"] = saturation
        row["saturation_probes"] = probes
        row["sustained"] = {**sustained.summary(), "rate": rate}
    if idle:
        for count in plan.idle_counts:
            row["idle"][str(count)] = await runner.idle(target, count)
    row["rss_mb_end"] = procstat.memory(target.pid).rss / 2**20
    if target.name in runner.profile:
        row["profile"] = await profile_target(runner, target)
    return row


async def soak(runner: Runner, target: Target, seconds: float) -> dict[str, Any]:
    """Steady unary and streaming load for ``seconds``, sampling the tree's RSS every 5 s."""
    plan = runner.plan
    runner.say(f"{target.name}: soak for {seconds:.0f}s at {plan.rate:.0f}/s unary + streams")
    unary = runner.spec(
        target, mode="open", rate=plan.rate, duration=seconds, warmup=50, shape=UNARY_SHAPE
    )
    streams = runner.spec(
        target,
        mode="open",
        stream=True,
        rate=plan.rate / 4,
        duration=seconds,
        warmup=10,
        shape=plan.stream_shape,
    )
    samples: list[tuple[float, float]] = []

    async def sample() -> None:
        start = time.perf_counter()
        while True:
            samples.append((time.perf_counter() - start, procstat.memory(target.pid).rss / 2**20))
            await asyncio.sleep(5.0)

    sampler = asyncio.create_task(sample())
    try:
        phases = await asyncio.gather(
            runner.phase("soak-unary", target, unary), runner.phase("soak-stream", target, streams)
        )
    finally:
        sampler.cancel()
    # The first fifth is warm-up (pools, caches and the allocator filling up).
    settled = [rss for at, rss in samples if at >= seconds / 5] or [s[1] for s in samples]
    baseline = settled[0]
    return {
        "seconds": seconds,
        "samples": samples,
        "baseline_mb": baseline,
        "max_mb": max(settled),
        "end_mb": settled[-1],
        "growth": max(settled) / baseline - 1,
        "errors": sum(p.errors for p in phases),
        "requests": sum(p.requests for p in phases),
    }


async def profile_target(runner: Runner, target: Target) -> dict[str, Any]:
    """Unary and streaming load under py-spy; the figures of these phases are not used."""
    plan = runner.plan
    seconds = max(plan.throughput_seconds, 1.0)
    found: dict[str, Any] = {}
    phases = {
        "unary": {"concurrency": plan.throughput_concurrency, "shape": UNARY_SHAPE},
        "stream": {
            "concurrency": plan.stream_concurrency,
            "shape": plan.stream_shape,
            "stream": True,
        },
    }
    for kind, options in phases.items():
        raw = runner.out / f"profile-{target.name}-{kind}.txt"
        sampler = await profile.record(target.pid, seconds + 1, raw)
        await runner.phase(
            f"prof-{kind}",
            target,
            runner.spec(target, mode="closed", duration=seconds, warmup=0, **options),
        )
        _, errors = await sampler.communicate()
        if sampler.returncode != 0 or not raw.exists():
            runner.say(f"  py-spy failed: {errors.decode(errors='replace')[-300:]}")
            continue
        summary = profile.summarise(raw)
        runner.say(profile.summary_text(f"{target.name} {kind} profile ({raw})", summary))
        found[kind] = {"raw": raw.name, **summary}
    return found
