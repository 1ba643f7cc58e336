"""Instructions per call under callgrind: a figure this noisy machine cannot move.

``python -m bench.instructions`` starts the benchmark relay, then the floor and
Switchyard (as ``make bench`` starts them: ``python -m server`` configured by
environment) each under ``valgrind --tool=callgrind``, warms each up, zeroes the
counters, makes ``--calls`` unary calls one at a time over gRPC and dumps the
counters. It prints the user-space instructions per call of each and their ratio.

Seconds on a shared 2-core machine drift by 2 to 3x in minutes; instruction counts
repeat within 0.5% for the same code, whatever else runs. They leave out the kernel
(syscalls count in the CPU figures of ``make bench``, not here) and weigh every
instruction alike, so they say whether a change removed work, not what it is worth in
seconds: use them for an A/B of a change on the hot path, and ``make bench`` for the
targets. A run takes about two minutes (valgrind slows the server some 40x).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from switchyard.v1 import gateway_pb2, gateway_pb2_grpc

from bench.targets import free_port, switchyard_env

_ROOT = Path(__file__).resolve().parent.parent
_TOTAL = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)
_WARM_UP = 60
_START_TIMEOUT = 600.0  # imports under valgrind take a minute or more


def instructions(dump: str) -> int:
    """The total of a callgrind dump (its `summary:` line, else its `totals:` line)."""
    match = _TOTAL.search(dump)
    if match is None:
        raise ValueError("not a callgrind dump: no summary or totals line")
    return int(match.group(1))


def _ready_port(process: subprocess.Popen[bytes]) -> int:
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode(errors="replace")
        if line.startswith("READY"):
            return int(line.split()[-1])
    raise RuntimeError("the process ended before it was ready")


def _control(tool: str, flag: str, pid: int) -> None:
    subprocess.run([tool, flag, str(pid)], check=True, capture_output=True)


def _measure(
    name: str,
    argv: list[str],
    env: dict[str, str],
    port: int | None,
    calls: int,
    keep: Path | None = None,
) -> int:
    """Instructions per call of one target, started under callgrind; its dump is copied
    into `keep` when given (as `floor-aiohttp.callgrind` and `switchyard.callgrind`, for
    callgrind_annotate)."""
    valgrind = shutil.which("valgrind")
    callgrind_control = shutil.which("callgrind_control")
    if valgrind is None or callgrind_control is None:
        raise SystemExit("valgrind is not installed (Debian's valgrind package)")
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out:
        process = subprocess.Popen(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}/dump", *argv],
            cwd=_ROOT,
            env=env,
            stdout=subprocess.PIPE if port is None else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = _ready_port(process) if port is None else port
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(channel).result(timeout=_START_TIMEOUT)
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)

            def call(index: int) -> None:
                # A unique prompt each time: no cache answers it.
                prompt = f"instructions {index} {time.time_ns()} [relay chunks=16]"
                query = gateway_pb2.QuerySpec(prompt=prompt)
                stub.Query(gateway_pb2.QueryRequest(query=query), timeout=120)

            for index in range(_WARM_UP):
                call(index)
            time.sleep(1.5)  # let periodic work of the warm-up (a ledger flush) pass
            subprocess.run(
                [callgrind_control, "-z", str(process.pid)], check=True, capture_output=True
            )
            for index in range(calls):
                call(_WARM_UP + index)
            subprocess.run(
                [callgrind_control, "-d", str(process.pid)], check=True, capture_output=True
            )
            channel.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
        dumps = sorted(Path(out).glob("dump.*"))  # dump.1: the one callgrind_control asked for
        if not dumps:
            raise RuntimeError(f"{name}: callgrind wrote no dump")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            slug = re.sub(r"\W+", "-", name).strip("-")
            shutil.copyfile(dumps[0], keep / f"{slug}.callgrind")
        return instructions(dumps[0].read_text()) // calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="measured calls per target")
    parser.add_argument(
        "--switchyard-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting added to Switchyard's environment",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="copy each target's dump into DIR (read them with callgrind_annotate)",
    )
    args = parser.parse_args(argv)
    python = sys.executable
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OTEL_"))}
    relay = subprocess.Popen(
        [python, "-m", "bench.relay", "--port", "0"], cwd=_ROOT, stdout=subprocess.PIPE
    )
    try:
        relay_url = f"http://127.0.0.1:{_ready_port(relay)}/v1"
        floor = _measure(
            "floor(aiohttp)",
            [python, "-m", "bench.floor", "--relay-url", relay_url, "--client", "aiohttp"],
            base,
            None,
            args.calls,
            args.keep,
        )
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="switchyard-") as data:
            extra = {}
            for setting in args.switchyard_env:
                name, _, value = setting.partition("=")
                extra[name] = value
            env = switchyard_env(port, relay_url, data, extra)
            gateway = _measure(
                "switchyard", [python, "-m", "server"], env, port, args.calls, args.keep
            )
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    print(f"floor(aiohttp)  {floor:>10,} instructions/call")
    print(f"switchyard      {gateway:>10,} instructions/call  {gateway / floor:.2f}x the floor")


if __name__ == "__main__":
    main()
