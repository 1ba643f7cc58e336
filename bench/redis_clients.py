"""Which Redis client costs the gateway the least CPU per call: its own, redis-py, coredis, Glide.

``python -m bench.redis_clients`` (standalone; not part of ``make bench``) starts a
redis-server of its own (``tests/redis_server.py``; ``make redis-deps``) unless given
``--url``, and measures, for each client, what a Redis-backed gateway does per call:

* ``evalsha``: one EVALSHA of a small Lua script, 4 keys and 10 arguments, answering a
  3-element array (an admission check: budget, rate and counters in one round trip);
* ``pipeline(2)``: two such EVALSHA in one non-transactional pipeline, one round trip;

each sequentially (c=1, one call at a time, as one request would) and with 16 calls in
flight (c=16, 16 tasks sharing the client, as a busy gateway would). The figure is this
process's CPU time (user+sys of every thread, `time.process_time`, so a client's own
I/O threads count too) per gateway call, after a warm-up, in microseconds: the Redis
server's CPU is not in it. Rounds interleave the clients, and each figure is the median
over rounds, so a neighbour's load drifting during the run weighs on all alike; on a
shared machine the ratios between clients are the figures to read, not the absolutes.

Clients (all that are installed are measured):

* ``switchyard (hiredis, one connection)``: the gateway's own client
  (``server/state/redis/client.py``): hiredis's parser, every command of the process
  pipelined on one connection, nothing else; the one the gateway uses, because it
  costs the least CPU here;
* ``redis-py``: redis-py's asyncio client, with the hiredis parser it picks by itself
  when hiredis is installed (checked: the connection's parser and protocol are printed;
  redis-py 8 speaks RESP3 by default);
* ``redis-py (py parser)``: the same with its pure-Python parser, what hiredis saves;
* ``coredis``: coredis's client (anyio, RESP3, multiplexed), as installed: its runtime
  validations on, and again in a child process with ``COREDIS_OPTIMIZED=true``, which
  skips them and is read when coredis is imported (``coredis (optimized)``);
* ``glide``: valkey-glide's asyncio client (a Rust core over FFI), EVALSHA through
  ``custom_command`` and pipelines as a non-atomic ``Batch``; only when installed.

The loop is the standard library's, as the gateway's (``asyncio.run``: grpc.aio does
not run on uvloop); ``--uvloop`` measures on uvloop instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Any, Protocol
from urllib.parse import urlsplit

from tests.redis_server import TempRedis

# An admission check shaped like the gateway's: reserve tokens against a daily budget,
# count a request in a per-minute window, bump two counters; answer {admitted, spent, tag}.
LUA = """
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local admitted = 0
if spent + cost <= limit then
  spent = redis.call('INCRBY', KEYS[1], cost)
  admitted = 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local window = redis.call('INCR', KEYS[2])
if window == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
redis.call('HINCRBY', KEYS[4], ARGV[6], ARGV[7])
return {admitted, spent, ARGV[10]}
"""
KEYS = ["sy:budget:tenant-7:day", "sy:rate:tenant-7:min", "sy:calls:tenant-7", "sy:tokens:m"]
ARGS = ["120", "1000000000000", "86400000", "60000", "gemini-2.5-flash", "gemini-2.5-flash",
        "120", "req-0123456789ab", "1764590000000", "tag-ok"]  # fmt: skip
CONCURRENCY = 16
VARIANTS = ("evalsha c=1", "pipeline(2) c=1", f"evalsha c={CONCURRENCY}",
            f"pipeline(2) c={CONCURRENCY}")  # fmt: skip


class Client(Protocol):
    """One client library, connected: the two operations measured, and closing."""

    name: str
    detail: str

    async def evalsha(self) -> Any: ...
    async def pair(self) -> Any: ...
    async def close(self) -> None: ...


def _check(answer: Any) -> None:
    """An EVALSHA's answer: [admitted, spent, tag]."""
    if not (isinstance(answer, list | tuple) and len(answer) == 3 and answer[0] == 1):
        raise RuntimeError(f"unexpected EVALSHA answer {answer!r}")


class RedisPy:
    def __init__(self, name: str, client: Any, sha: str, detail: str) -> None:
        self.name, self.client, self.sha, self.detail = name, client, sha, detail

    @classmethod
    async def open(cls, url: str, *, python_parser: bool = False) -> RedisPy:
        import redis.asyncio as aioredis  # noqa: PLC0415 (measured clients load on demand)
        from redis._parsers import _AsyncRESP2Parser  # noqa: PLC0415

        # A Python parser class is swapped by redis-py for the one of the protocol in use.
        options: dict[str, Any] = {"parser_class": _AsyncRESP2Parser} if python_parser else {}
        client = aioredis.Redis.from_url(url, **options)
        sha = await client.script_load(LUA)
        pool: Any = client.connection_pool  # get_connection is untyped
        connection = await pool.get_connection()
        parser, protocol = type(connection._parser).__name__, connection.protocol
        await pool.release(connection)
        name = "redis-py (py parser)" if python_parser else "redis-py"
        detail = f"redis {metadata.version('redis')}, RESP{protocol}, parser {parser}"
        return cls(name, client, sha, detail)

    async def evalsha(self) -> Any:
        return await self.client.evalsha(self.sha, len(KEYS), *KEYS, *ARGS)

    async def pair(self) -> Any:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.evalsha(self.sha, len(KEYS), *KEYS, *ARGS)
            pipe.evalsha(self.sha, len(KEYS), *KEYS, *ARGS)
            return await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


class Coredis:
    def __init__(self, client: Any, sha: str, stack: contextlib.AsyncExitStack) -> None:
        self.client, self.sha, self._stack = client, sha, stack
        optimized = os.environ.get("COREDIS_OPTIMIZED", "").lower() in {"1", "true", "t"}
        self.name = "coredis (optimized)" if optimized else "coredis"
        self.detail = f"coredis {metadata.version('coredis')}, RESP3"

    @classmethod
    async def open(cls, url: str) -> Coredis:
        import coredis  # noqa: PLC0415

        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(coredis.Redis.from_url(url))
        sha = await client.script_load(LUA)
        return cls(client, sha if isinstance(sha, str) else sha.decode(), stack)

    async def evalsha(self) -> Any:
        return await self.client.evalsha(self.sha, keys=KEYS, args=ARGS)

    async def pair(self) -> Any:
        async with self.client.pipeline(transaction=False) as pipe:
            first = pipe.evalsha(self.sha, keys=KEYS, args=ARGS)
            second = pipe.evalsha(self.sha, keys=KEYS, args=ARGS)
        return [await first, await second]

    async def close(self) -> None:
        await self._stack.aclose()


class Glide:
    name = "glide"

    def __init__(self, client: Any, command: list[str], batch: Any) -> None:
        self.client, self.command, self._batch = client, command, batch
        self.detail = f"valkey-glide {metadata.version('valkey-glide')}"

    @classmethod
    async def open(cls, url: str) -> Glide:
        from glide import (  # noqa: PLC0415
            Batch,
            GlideClient,
            GlideClientConfiguration,
            NodeAddress,
        )

        where = urlsplit(url)
        config = GlideClientConfiguration(
            [NodeAddress(where.hostname or "127.0.0.1", where.port or 6379)],
            database_id=int(where.path.strip("/") or 0),
        )
        client = await GlideClient.create(config)
        sha = await client.custom_command(["SCRIPT", "LOAD", LUA])
        command = ["EVALSHA", sha.decode(), str(len(KEYS)), *KEYS, *ARGS]
        return cls(client, command, Batch)

    async def evalsha(self) -> Any:
        return await self.client.custom_command(self.command)

    async def pair(self) -> Any:
        batch = self._batch(is_atomic=False)
        batch.custom_command(self.command)
        batch.custom_command(self.command)
        return await self.client.exec(batch, raise_on_error=True)

    async def close(self) -> None:
        await self.client.close()


class Switchyard:
    """The gateway's own client (server/state/redis/client.py): one pipelined connection."""

    name = "switchyard (hiredis, one connection)"

    def __init__(self, client: Any, sha: str) -> None:
        self.client, self.sha = client, sha
        self.detail = f"hiredis {metadata.version('hiredis')}, RESP2, all calls on one connection"

    @classmethod
    async def open(cls, url: str) -> Switchyard:
        from server.state.redis.client import RedisClient  # noqa: PLC0415

        client = RedisClient(url)
        sha = await client.call("SCRIPT", "LOAD", LUA)
        return cls(client, sha.decode())

    async def evalsha(self) -> Any:
        return await self.client.call("EVALSHA", self.sha, len(KEYS), *KEYS, *ARGS)

    async def pair(self) -> Any:
        command = ("EVALSHA", self.sha, len(KEYS), *KEYS, *ARGS)
        return await self.client.pipeline([command, command])

    async def close(self) -> None:
        await self.client.aclose()


Opener = Callable[[str], Awaitable[Client]]


def openers(only: Sequence[str] | None = None) -> dict[str, Opener]:
    """The installed clients, by name (`only` keeps those named)."""

    async def python_parser(url: str) -> Client:
        return await RedisPy.open(url, python_parser=True)

    found: dict[str, Opener] = {
        Switchyard.name: Switchyard.open,
        "redis-py": RedisPy.open,
        "redis-py (py parser)": python_parser,
    }
    for name, module, opener in (("coredis", "coredis", Coredis.open),
                                 ("glide", "valkey-glide", Glide.open)):  # fmt: skip
        try:
            metadata.version(module)
        except metadata.PackageNotFoundError:
            continue
        found[name] = opener
    return {n: o for n, o in found.items() if only is None or n in only}


async def _run(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> None:
    if concurrency == 1:
        for _ in range(calls):
            await call()
        return

    async def worker(share: int) -> None:
        for _ in range(share):
            await call()

    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))


async def _variant(client: Client, variant: str, calls: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per gateway call of one variant, after a warm-up."""
    call = client.pair if variant.startswith("pipeline") else client.evalsha
    concurrency = int(variant.rsplit("=", 1)[1])
    calls -= calls % concurrency
    await _run(call, max(calls // 10, 200), concurrency)  # connections, caches, code paths
    started, cpu = time.perf_counter(), time.process_time()
    await _run(call, calls, concurrency)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return cpu / calls * 1e6, wall / calls * 1e6


async def measure_all(
    url: str, n: int, rounds: int = 3, only: Sequence[str] | None = None
) -> tuple[dict[str, dict[str, tuple[float, float]]], dict[str, str]]:
    """Median (CPU µs, wall µs) per call by client and variant; each client's description."""
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {}
    details: dict[str, str] = {}
    for _ in range(rounds):
        for opener in openers(only).values():
            client = await opener(url)
            try:
                first = await client.evalsha()
                _check(first)
                for answer in await client.pair():
                    _check(answer)
                details[client.name] = client.detail
                for variant in VARIANTS:
                    figures = await _variant(client, variant, n)
                    samples.setdefault(client.name, {}).setdefault(variant, []).append(figures)
            finally:
                await client.close()
    return {
        name: {
            variant: (
                statistics.median(cpu for cpu, _ in runs),
                statistics.median(wall for _, wall in runs),
            )
            for variant, runs in variants.items()
        }
        for name, variants in samples.items()
    }, details


async def measure(url: str, n: int) -> dict[str, float]:
    """CPU µs per call, keyed ``"client: variant"``, for every installed client (3 rounds)."""
    figures, _ = await measure_all(url, n)
    return {
        f"{name}: {variant}": cpu
        for name, variants in figures.items()
        for variant, (cpu, _) in variants.items()
    }


def _optimized_coredis(url: str, n: int, rounds: int, uvloop: bool) -> dict[str, Any]:
    """coredis with COREDIS_OPTIMIZED=true, in a child process (read at coredis's import)."""
    command = [sys.executable, "-m", "bench.redis_clients", "--url", url, "-n", str(n),
               "--rounds", str(rounds), "--only", "coredis", "--json"]  # fmt: skip
    if uvloop:
        command.append("--uvloop")
    env = {**os.environ, "COREDIS_OPTIMIZED": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _table(
    figures: dict[str, dict[str, tuple[float, float]]], details: dict[str, str]
) -> list[str]:
    reference = figures.get("redis-py")
    head = f"{'client':22}" + "".join(f"{v:>26}" for v in VARIANTS)
    lines = ["CPU µs per gateway call (median of rounds); x = ratio to redis-py", head]
    for name, variants in figures.items():
        cells = []
        for variant in VARIANTS:
            cpu, wall = variants[variant]
            ratio = f" x{cpu / reference[variant][0]:.2f}" if reference else ""
            cells.append(f"{cpu:9.1f}{ratio:>7} ({wall:6.1f} wall)")
        lines.append(f"{name:22}" + "".join(f"{cell:>26}" for cell in cells))
    lines.append("")
    lines.extend(f"{name}: {detail}" for name, detail in details.items())
    return lines


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        figures, details = await measure_all(args.url, args.n, args.rounds, args.only)
        return {"figures": figures, "details": details}
    with TempRedis() as server:
        figures, details = await measure_all(server.url, args.n, args.rounds, args.only)
        if "coredis" in figures:
            child = await asyncio.to_thread(
                _optimized_coredis, server.url, args.n, args.rounds, args.uvloop
            )
            figures.update({k: {v: tuple(f) for v, f in x.items()}
                            for k, x in child["figures"].items()})  # fmt: skip
            details.update(child["details"])
    return {"figures": figures, "details": details}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing Redis (default: start one)")
    parser.add_argument("-n", type=int, default=20_000, help="calls per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", help="measure only this client (repeat)")
    parser.add_argument("--uvloop", action="store_true", help="on uvloop, not asyncio's loop")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    runner: Callable[..., Any] = asyncio.run
    if args.uvloop:
        import uvloop  # noqa: PLC0415 (bench extra)

        runner = uvloop.run
    result = runner(_main(args))
    if args.json:
        print(json.dumps(result))
        return
    loop = "uvloop" if args.uvloop else "asyncio"
    where = f"{platform.python_implementation()} {platform.python_version()}, {loop} loop"
    print(f"{where}, {os.cpu_count()} CPUs, n={args.n:,} calls per variant, {args.rounds} rounds")
    print("\n".join(_table(result["figures"], result["details"])))


if __name__ == "__main__":
    main()
