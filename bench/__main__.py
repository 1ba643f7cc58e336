"""``python -m bench``: the whole benchmark in one process tree and one run.

Starts the benchmark relay, then measures, one after the other and against that same
relay: the relay itself, the floor forwarders (raw aiohttp, httpx over httpx-aiohttp,
httpx's default transport), Switchyard started as users start it, and optional peers.
Then the pairs step runs the floor and the gateways the targets name side by side, in
rounds, so their ratios to the floor compare figures taken seconds apart. Prints a
table and the issue's target checks on stdout, writes the figures as JSON and a PNG
chart. It never fails because a target is missed; it exits non-zero only when the
harness itself could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import procstat, report
from bench.auth import AUTH_ROW, resolver_cost, start_switchyard_auth
from bench.floor import CLIENTS
from bench.harness import (
    UNARY_SHAPE,
    Phase,
    Plan,
    Runner,
    measure_target,
    soak,
    ttft_spec,
    unary_cpu_spec,
)
from bench.ledger import measure as measure_ledger
from bench.targets import (
    MODEL,
    OTLP_KEEP_ROW,
    OTLP_ROW,
    OTLP_ROWS,
    ROOT,
    Target,
    TargetUnavailableError,
    start_floor,
    start_litellm,
    start_otlp_sink,
    start_relay,
    start_switchyard,
    stop,
)
from tests.postgres import TempPostgres
from tests.redis_server import TempRedis

RESULTS = ROOT / "bench" / "results"
IDLE_CONFIG = ROOT / "bench" / "switchyard-idle.toml"
_NUMBERS = re.compile(r"\[\s*((?:-?[\d.eE+-]+,\s*)*-?[\d.eE+-]+)\s*\]")
PEERS = ("litellm",)


def _raise_file_limit() -> int:
    """10,000 streams need well over 10,000 descriptors in the gateway and the relay."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (max(hard, 65536), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            continue
    return soft


def _versions() -> dict[str, str]:
    found = {}
    for name in ("grpcio", "aiohttp", "httpx", "httpx-aiohttp", "protobuf", "uvloop"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.decode().strip()


async def _measure(
    runner: Runner,
    rows: dict[str, Any],
    name: str,
    starting: Any,
    idle: bool,
    sustain: bool = True,
) -> None:
    """Start one target, measure it, stop it; a failure becomes the row's reason."""
    target: Target | None = None
    try:
        target = await starting
        rows[name] = await measure_target(runner, target, idle=idle, sustain=sustain)
    except TargetUnavailableError as exc:
        runner.say(f"{name}: {exc}")
        rows[name] = {"available": False, "reason": str(exc)}
    except (RuntimeError, TimeoutError, OSError) as exc:
        runner.say(f"{name}: measurement failed: {exc!r}")
        rows[name] = {"available": False, "reason": f"failed: {exc!r}"[:300], "broken": True}
    finally:
        if target is not None:
            await stop(target.process)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every target, every phase; returns the results dictionary."""
    plan = Plan.smoke() if args.smoke else Plan()
    if args.processes:
        plan = replace(plan, load_processes=args.processes)
    logs = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    files = _raise_file_limit()
    relay_process, relay_port = await start_relay(logs)
    relay_url = f"http://127.0.0.1:{relay_port}/v1"
    runner = Runner(
        plan,
        relay_process.pid,
        logs,
        verbose=not args.quiet,
        # Split as --only is: a row's name may hold a comma inside its parentheses.
        profile=tuple(p.strip() for p in re.split(r",(?![^()]*\))", args.profile) if p.strip()),
    )
    runner.say(f"logs in {logs}; relay on {relay_url}; file limit {files}")
    rows: dict[str, Any] = {}
    only = {n.strip() for n in re.split(r",(?![^()]*\))", args.only)} if args.only else None
    soak_figures: dict[str, Any] | None = None
    ledger_figures: dict[str, Any] | None = None
    auth_figures: dict[str, Any] | None = None
    pairs_figures: dict[str, Any] | None = None
    try:
        if only is None or "relay" in only:
            relay = Target("relay", "http", relay_url, relay_process, logs / "relay.log")
            relay.description = "bench.relay on uvloop (asyncio.Protocol, prebuilt answers)"
            # Python HTTP clients cannot saturate the relay: no saturation search.
            rows["relay"] = await measure_target(runner, relay, idle=False, sustain=False)
        for client in CLIENTS:
            name = f"floor({client})"
            if only is None or name in only:
                await _measure(
                    runner,
                    rows,
                    name,
                    start_floor(client, relay_url, logs),
                    # The transport variants are CPU and latency references only.
                    idle=not args.no_idle and client == "aiohttp",
                    sustain=client == "aiohttp",
                )
        if only is None or "switchyard" in only:
            await _measure(
                runner,
                rows,
                "switchyard",
                start_switchyard(relay_url, logs, args.switchyard_env),
                idle=False,
            )
            if not args.no_idle and rows["switchyard"].get("available"):
                await _switchyard_idle(runner, rows["switchyard"], relay_url, logs, args)
        if only is None or "switchyard(memory)" in only:
            # The reference for the ledger's cost: the same gateway, its ledger in memory.
            await _measure(
                runner,
                rows,
                "switchyard(memory)",
                start_switchyard(
                    relay_url,
                    logs,
                    {"SWITCHYARD_DATABASE_URL": "memory", **args.switchyard_env},
                    name="switchyard(memory)",
                ),
                idle=False,
                sustain=False,
            )
        if only is None or AUTH_ROW in only:
            # The default gateway with API keys: what authenticating each call costs.
            await _measure(
                runner,
                rows,
                AUTH_ROW,
                start_switchyard_auth(relay_url, logs, args.switchyard_env),
                idle=False,
                sustain=False,
            )
        if only is None or "auth" in only or AUTH_ROW in only:
            auth_figures = await resolver_cost(args.smoke)
        if only is None or "switchyard(postgres)" in only:
            with TempPostgres() as postgres:
                await _measure(
                    runner,
                    rows,
                    "switchyard(postgres)",
                    start_switchyard(
                        relay_url,
                        logs,
                        {"SWITCHYARD_DATABASE_URL": postgres.url, **args.switchyard_env},
                        name="switchyard(postgres)",
                    ),
                    idle=False,
                    sustain=False,
                )
        if only is None or REDIS_ROW in only or REDIS_WORKERS_ROW in only:
            await _measure_redis(runner, rows, relay_url, logs, args, only)
        if only is None or "ledger" in only:
            ledger_figures = await measure_ledger(args.smoke, runner.say)
            ledger_figures["paired_cpu_ms"] = await _ledger_pairs(runner, relay_url, logs, args)
        if only is None or only & set(OTLP_ROWS):
            sink, sink_port = await start_otlp_sink(logs)
            try:
                # What exporting traces and metrics costs: every trace, then the default
                # keep policy (tail sampling: troubled calls and 10% of the rest).
                for name, keep in OTLP_ROWS.items():
                    if only is not None and name not in only:
                        continue
                    await _measure(
                        runner,
                        rows,
                        name,
                        start_switchyard(
                            relay_url, logs, {**args.switchyard_env, **keep}, sink_port, name
                        ),
                        idle=False,
                        sustain=False,
                    )
            finally:
                await stop(sink)
        paired = _pairs_selected(only)
        if paired:
            pairs_figures = await _target_pairs(runner, relay_url, logs, args, paired)
        if "litellm" in args.peers:
            await _measure(
                runner, rows, "litellm", start_litellm(relay_url, logs), idle=not args.no_idle
            )
        if args.soak:
            soak_figures = await _soak(runner, args, relay_url, logs)
    finally:
        await stop(relay_process)
    return {
        "date": datetime.date.today().isoformat(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "subject": args.subject,
        "switchyard_env": args.switchyard_env,
        "model": MODEL,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "packages": _versions(),
            "commit": _commit(),
        },
        "plan": asdict(plan),
        "rows": rows,
        "soak": soak_figures,
        "ledger": ledger_figures,
        "auth": auth_figures,
        "pairs": pairs_figures,
        "_logs": str(logs),  # printed, never written: a path of this machine only
    }


REDIS_ROW = "switchyard(redis)"
REDIS_WORKERS_ROW = "switchyard(redis, workers=2)"


async def _measure_redis(
    runner: Runner,
    rows: dict[str, Any],
    relay_url: str,
    logs: Path,
    args: argparse.Namespace,
    only: set[str] | None,
) -> None:
    """Shared state: one gateway, then two workers, on a Redis and a PostgreSQL of their own.

    The gateway's CPU is its own process tree (both workers and their supervisor);
    Redis's CPU is reported apart, like the relay's: it is a server of its own.
    """
    with TempPostgres() as postgres, TempRedis() as redis:
        env = {
            "SWITCHYARD_DATABASE_URL": postgres.url,
            "SWITCHYARD_REDIS_URL": redis.url,
            **args.switchyard_env,
        }
        for name, extra in ((REDIS_ROW, {}), (REDIS_WORKERS_ROW, {"SWITCHYARD_WORKERS": "2"})):
            if only is not None and name not in only:
                continue
            redis.flushall()
            cpu0 = procstat.cpu_seconds(redis.pid)
            await _measure(
                runner,
                rows,
                name,
                start_switchyard(relay_url, logs, {**env, **extra}, name=name),
                idle=False,
                sustain=True,  # the saturation search: 2 workers against 1
            )
            if rows[name].get("available", True):
                rows[name]["redis_cpu_s"] = procstat.cpu_seconds(redis.pid) - cpu0


PAIRED = ("switchyard(memory)", "switchyard", "switchyard(postgres)", AUTH_ROW)


async def _ledger_pairs(
    runner: Runner, relay_url: str, logs: Path, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Unary CPU per request of the three ledgers and of API keys, in turn, three rounds.

    The rows above measure each gateway minutes apart, and the machine drifts by a
    few percent in that time: the ledger's cost, and authentication's, are about
    that size. Here the gateways run side by side and take turns, so the ratios
    compare like with like (the checks use the medians of the rounds)."""
    targets: list[Target] = []
    figures: dict[str, list[float]] = {name: [] for name in PAIRED}
    with TempPostgres() as postgres:
        urls = {"switchyard(memory)": "memory", "switchyard(postgres)": postgres.url}
        try:
            for name in PAIRED:
                env = dict(args.switchyard_env)
                if name == AUTH_ROW:
                    targets.append(await start_switchyard_auth(relay_url, logs, env))
                    continue
                if name in urls:
                    env["SWITCHYARD_DATABASE_URL"] = urls[name]
                targets.append(await start_switchyard(relay_url, logs, env, name=name))
            plan = runner.plan
            for round_ in range(1 if args.smoke else 3):
                turn = round_ % len(targets)
                for target in targets[turn:] + targets[:turn]:
                    phase = await runner.phase(
                        "paired",
                        target,
                        unary_cpu_spec(runner, target, plan.throughput_seconds),
                        plan.load_processes,
                    )
                    figures[target.name].append(phase.summary()["cpu_ms_per_request"])
        finally:
            for target in targets:
                await stop(target.process)
    return figures


PAIRS_FLOOR = "floor(aiohttp)"
PAIRS = (PAIRS_FLOOR, "switchyard", REDIS_ROW, OTLP_ROW, OTLP_KEEP_ROW)
PAIRS_TTFT = (PAIRS_FLOOR, "switchyard")  # the TTFT target is the default gateway's only
PAIRS_FIGURES = ("unary_cpu_ms", "c1_p50_ms", "c1_p99_ms", "ttft_p50_ms", "foreign_share")


def _pairs_selected(only: set[str] | None) -> list[str]:
    """The pairs step's targets: all in a full run; under --only the floor and the rows
    named ("pairs" names them all); none when no gateway of the step is named."""
    if only is None or "pairs" in only:
        return list(PAIRS)
    subjects = [name for name in PAIRS[1:] if name in only]
    return [PAIRS_FLOOR, *subjects] if subjects else []


async def _target_pairs(
    runner: Runner, relay_url: str, logs: Path, args: argparse.Namespace, names: list[str]
) -> dict[str, Any]:
    """The targets' figures in paired rounds: the floor and the gateways side by side.

    The rows measure each target minutes apart, and this machine's speed drifts by 2-3x
    over minutes: a ratio of two rows can be off by more than the effect it measures.
    Here every target runs at once and, in each round (the order rotated from round to
    round, as the ledger's pairs do), each kind of phase runs on every target in turn,
    seconds apart: unary CPU per request (closed loop), latency at concurrency 1 (p50,
    p99) and, for the floor and Switchyard, TTFT. The phases are the rows' phases,
    shorter (``Plan.pairs_*``). The checks divide each round's figure by the same
    round's floor figure and take the median over rounds."""
    plan = runner.plan
    env = dict(args.switchyard_env)
    figures: dict[str, Any] = {}
    targets: list[Target] = []
    sink: asyncio.subprocess.Process | None = None
    sink_port = 0
    began = time.perf_counter()
    runner.say(f"pairs: {', '.join(names)} side by side, {plan.pairs_rounds} round(s)")
    with contextlib.ExitStack() as stores:
        try:
            for name in names:
                try:
                    if name == PAIRS_FLOOR:
                        targets.append(await start_floor("aiohttp", relay_url, logs))
                    elif name == REDIS_ROW:
                        # As the row: a PostgreSQL ledger and a Redis of its own.
                        postgres = stores.enter_context(TempPostgres())
                        redis = stores.enter_context(TempRedis())
                        shared = {
                            "SWITCHYARD_DATABASE_URL": postgres.url,
                            "SWITCHYARD_REDIS_URL": redis.url,
                            **env,
                        }
                        targets.append(await start_switchyard(relay_url, logs, shared, name=name))
                    elif name in OTLP_ROWS:
                        if sink is None:
                            sink, sink_port = await start_otlp_sink(logs)
                        keep = {**env, **OTLP_ROWS[name]}
                        targets.append(
                            await start_switchyard(relay_url, logs, keep, sink_port, name)
                        )
                    else:
                        targets.append(await start_switchyard(relay_url, logs, env, name=name))
                except (TargetUnavailableError, RuntimeError, subprocess.SubprocessError) as exc:
                    # RuntimeError: redis-server or PostgreSQL is not installed.
                    runner.say(f"pairs: {name}: {exc}")
                    figures[name] = {"available": False, "reason": str(exc)[:300]}
            if len(targets) < 2 or targets[0].name != PAIRS_FLOOR:
                for target in targets:
                    figures[target.name] = {"available": False, "reason": "nothing to pair with"}
                return figures
            for target in targets:
                kinds = [k for k in PAIRS_FIGURES if target.name in PAIRS_TTFT or "ttft" not in k]
                figures[target.name] = {"available": True, "errors": 0, **{k: [] for k in kinds}}
            for round_ in range(plan.pairs_rounds):
                turn = round_ % len(targets)
                await _pairs_round(runner, targets[turn:] + targets[:turn], figures)
        except (RuntimeError, TimeoutError, OSError) as exc:
            runner.say(f"pairs: measurement failed: {exc!r}")
            for target in targets:
                figures[target.name] = {
                    "available": False,
                    "reason": f"failed: {exc!r}"[:300],
                    "broken": True,
                }
        finally:
            for target in targets:
                await stop(target.process)
            if sink is not None:
                await stop(sink)
    runner.say(f"pairs: {plan.pairs_rounds} round(s) in {time.perf_counter() - began:.0f} s")
    return figures


async def _pairs_round(runner: Runner, order: list[Target], figures: dict[str, Any]) -> None:
    """One round: unary CPU on every target in turn, then c=1, then TTFT."""
    plan = runner.plan
    busy = dict.fromkeys((t.name for t in order), 0.0)

    def note(target: Target, phase: Phase) -> None:
        busy[target.name] = max(busy[target.name], phase.foreign_share)
        figures[target.name]["errors"] += phase.errors

    for target in order:
        spec = unary_cpu_spec(runner, target, plan.pairs_cpu_seconds)
        phase = await runner.phase("pair cpu", target, spec, plan.load_processes)
        figures[target.name]["unary_cpu_ms"].append(phase.summary()["cpu_ms_per_request"])
        note(target, phase)
    for target in order:  # the rows' c=1 phase, shorter
        spec = runner.spec(
            target,
            mode="closed",
            duration=plan.pairs_c1_seconds,
            warmup=plan.warmup // 2,
            shape=UNARY_SHAPE,
        )
        phase = await runner.phase("pair c=1", target, spec)
        latency = phase.summary()["latency_ms"]
        figures[target.name]["c1_p50_ms"].append(latency.get("p50"))
        figures[target.name]["c1_p99_ms"].append(latency.get("p99"))
        note(target, phase)
    for target in order:  # the rows' ttft phase, shorter
        if target.name not in PAIRS_TTFT:
            continue
        spec = ttft_spec(runner, target, plan.pairs_ttft_seconds)
        phase = await runner.phase("pair ttft", target, spec)
        figures[target.name]["ttft_p50_ms"].append(phase.summary().get("ttft_ms", {}).get("p50"))
        note(target, phase)
    for name, share in busy.items():
        figures[name]["foreign_share"].append(share)


async def _switchyard_idle(
    runner: Runner, row: dict[str, Any], relay_url: str, logs: Path, args: argparse.Namespace
) -> None:
    """Idle-stream RSS on a second Switchyard whose concurrency caps are raised.

    Its defaults cap calls in flight far below 10,000 and would refuse the streams; only
    these phases use ``bench/switchyard-idle.toml``."""
    env = {"SWITCHYARD_CONFIG": str(IDLE_CONFIG), **args.switchyard_env}
    target = None
    try:
        target = await start_switchyard(relay_url, logs, env)
        for count in runner.plan.idle_counts:
            row["idle"][str(count)] = await runner.idle(target, count)
        row["idle_config"] = str(IDLE_CONFIG.relative_to(ROOT))
    except (TargetUnavailableError, RuntimeError, TimeoutError, OSError) as exc:
        runner.say(f"switchyard idle phases failed: {exc!r}")
        row["idle_error"] = f"{exc!r}"[:300]
    finally:
        if target is not None:
            await stop(target.process)


async def _soak(
    runner: Runner, args: argparse.Namespace, relay_url: str, logs: Path
) -> dict[str, Any] | None:
    """The RSS-flat check, on a freshly started subject."""
    subject, seconds = args.subject, args.soak
    if subject == "switchyard":
        starting = start_switchyard(relay_url, logs, args.switchyard_env)
    elif subject.startswith("floor("):
        starting = start_floor(subject[len("floor(") : -1], relay_url, logs)
    else:
        return None
    try:
        target = await starting
    except TargetUnavailableError as exc:
        runner.say(f"soak skipped: {exc}")
        return None
    try:
        return await soak(runner, target, seconds)
    finally:
        await stop(target.process)


def write_results(results: dict[str, Any], path: Path) -> None:
    """The figures as JSON, each list of numbers (quantile curves, samples) on one line."""
    text = json.dumps(results, indent=1, ensure_ascii=False)
    text = _NUMBERS.sub(lambda m: "[" + ",".join(m.group(1).split()).replace(",,", ",") + "]", text)
    path.write_text(text + "\n")


def _sane(results: dict[str, Any]) -> list[str]:
    """Why the figures show a broken harness (empty when they look sane)."""
    problems = []
    for name, row in results["rows"].items():
        if row.get("broken"):
            problems.append(f"{name}: {row['reason']}")
        if not row.get("available"):
            continue
        for key in ("unary_cpu_ms", "stream_cpu_us_per_token"):
            value = row.get(key)
            # /proc counts CPU in 10 ms ticks: the relay can spend less than one in a
            # smoke's short phase, so only its figure may be zero.
            floor = 0 if name == "relay" else 1e-9
            if not isinstance(value, int | float) or value < floor:
                problems.append(f"{name}: {key} is {value!r}")
        for phase in ("c1", "saturate", "open", "stream", "burst", "ttft", "sustained"):
            if phase not in row:
                continue
            if not row[phase]["requests"]:
                problems.append(f"{name}: no request completed in phase {phase}")
        for count, idle in row["idle"].items():
            if idle["opened"] == 0:
                problems.append(f"{name}: none of {count} idle streams opened")
    for name, pair in (results.get("pairs") or {}).items():
        if pair.get("broken"):
            problems.append(f"pairs {name}: {pair['reason']}")
        if not pair.get("available"):
            continue
        for key, values in pair.items():
            if not isinstance(values, list) or key == "foreign_share":
                continue
            if not values or any(not isinstance(v, int | float) or v <= 0 for v in values):
                problems.append(f"pairs {name}: {key} is {values!r}")
        if pair["errors"]:
            problems.append(f"pairs {name}: {pair['errors']} calls failed")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command line; see ``python -m bench --help``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts: seconds, for CI")
    parser.add_argument("--peers", default="", help="comma-separated peers to add: litellm")
    parser.add_argument("--soak", type=float, default=0, help="also run an RSS soak of N seconds")
    parser.add_argument("--subject", default="switchyard", help="the row the targets check")
    parser.add_argument("--only", default="", help="comma-separated rows to measure")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-stream RSS phases")
    parser.add_argument("--processes", type=int, default=0, help="load processes per phase")
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--switchyard-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting added to Switchyard's environment (the row notes it)",
    )
    parser.add_argument(
        "--profile", default="", help="comma-separated rows to profile with py-spy afterwards"
    )
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    if any("=" not in item for item in args.switchyard_env):
        parser.error("--switchyard-env takes NAME=VALUE")
    args.switchyard_env = dict(item.split("=", 1) for item in args.switchyard_env)
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    out: Path = args.out or (
        Path(tempfile.gettempdir()) / "switchyard-bench-smoke" if args.smoke else RESULTS
    )
    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    logs = results.pop("_logs")
    path = out / f"{results['date']}.json"
    write_results(results, path)
    chart = path.with_suffix(".png")
    try:
        report.chart(results, chart)
    except ImportError:
        chart = Path("(none: matplotlib is missing; `make bench` installs the bench extra)")
    print(report.table(results))
    print()
    print(report.checks_text(results))
    print()
    print(report.noise_text(results))
    print(f"figures: {path}\nchart:   {chart}")
    print(f"logs:    {logs}")
    problems = _sane(results)
    if problems:
        print("could not measure:\n  " + "\n  ".join(problems), file=sys.stderr)
    # Only the smoke judges the harness; a full run reports and never fails on figures.
    return 1 if problems and args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
