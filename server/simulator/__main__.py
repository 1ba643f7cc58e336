"""Run the relay simulator on its own: ``python -m server.simulator --port 8090``.

It prints its base URL (one line on stdout, e.g. ``http://127.0.0.1:8090/v1``)
once it is listening, so scripts and tests read the URL instead of guessing
when it is ready, and it stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from server.simulator.app import RelaySimulator, SimulatorSettings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m server.simulator",
        description="Serve the Switchyard relay simulator (OpenAI and Anthropic wires).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to bind, 0 for any (8090)")
    parser.add_argument(
        "--latency-scale", type=float, default=1.0, help="multiplies every delay; 0 = none (1.0)"
    )
    parser.add_argument("--tokens-per-second", type=float, default=60.0, help="streaming pace (60)")
    parser.add_argument("--api-key", default=None, help="require this key (default: none)")
    parser.add_argument(
        "--no-concurrency-limit",
        action="store_true",
        help="do not answer 429 beyond each model's concurrency limit",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Start, print the URL, and serve until a stop signal."""
    settings = SimulatorSettings(
        latency_scale=args.latency_scale,
        tokens_per_second=args.tokens_per_second,
        api_key=args.api_key,
        enforce_concurrency=not args.no_concurrency_limit,
    )
    simulator = RelaySimulator(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    url = await simulator.start(args.host, args.port)
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
