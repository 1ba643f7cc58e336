"""A load-generating worker process, driven by the harness over stdin/stdout.

Each worker is a separate process from the server under test (and from the harness), so
its CPU never counts against the gateway. It takes one JSON :class:`Spec` as its only
argument, warms up, prints ``{"event": "ready"}``, waits for ``go`` on stdin, runs, and
prints ``{"event": "done", ...}`` with its raw figures. The harness snapshots the
server's CPU between ``go`` and the last ``done``, so warm-up and start-up are excluded.

Modes:

* ``closed``: ``concurrency`` callers, each issuing the next request when the last ends,
  until ``duration`` has passed;
* ``open``: requests started on a fixed schedule (``rate`` per second) whether or not
  earlier ones finished; latency counts from the scheduled start, so a stalled server
  cannot hide its queue (no coordinated omission);
* ``idle``: ``concurrency`` streams opened and held after their first token; the worker
  prints ``{"event": "holding", ...}`` and cancels them all on ``release``.

Gateways are called over gRPC (``GatewayService``) or, for HTTP peers such as LiteLLM,
with the OpenAI chat API; streaming token counts come from the text, so a gateway that
coalesces tokens into fewer messages is credited with every token it forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import orjson
from switchyard.v1 import gateway_pb2, gateway_pb2_grpc

TOKEN_TEXT = " word"  # what the relay sends per token (see bench.relay)
REQUEST_TIMEOUT = 30.0
STALL_SECONDS = 10.0  # idle mode: no new stream opened for this long ends the ramp


@dataclass(frozen=True, slots=True)
class Spec:
    """What one worker does."""

    protocol: str  # "grpc" or "http"
    address: str  # host:port for gRPC; base URL (…/v1) for HTTP
    mode: str  # "closed", "open" or "idle"
    stream: bool = False
    concurrency: int = 1
    rate: float = 0.0
    duration: float = 1.0
    warmup: int = 0
    shape: str = ""
    model: str = "gemini-2.5-flash"
    api_key: str = "bench-key"
    bearer: str = ""  # gRPC: sent as `authorization: Bearer <bearer>` when set
    channels: int = 1
    worker: int = 0
    open_timeout: float = 60.0


@dataclass(slots=True)
class Outcome:
    """Raw figures of one worker's measured window."""

    latencies_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    completed: int = 0
    errors: int = 0
    error_sample: str = ""
    error_kinds: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    messages: int = 0
    cached: int = 0
    max_lateness_ms: float = 0.0
    client_cpu_s: float = 0.0
    wall_s: float = 0.0


@dataclass(slots=True)
class _Call:
    """What one request observed."""

    ttft: float = 0.0
    tokens: int = 0
    messages: int = 0
    cached: bool = False


Caller = Callable[[str, "_Call", "asyncio.Event | None"], Awaitable[None]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tokens(text: str) -> int:
    return len(text) // len(TOKEN_TEXT)


class _Grpc:
    """GatewayService calls over one or more channels (one HTTP/2 connection each)."""

    def __init__(self, spec: Spec) -> None:
        self._spec = spec
        # A local subchannel pool gives each channel its own connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channels = [
            grpc.aio.insecure_channel(spec.address, options=options)
            for _ in range(max(1, spec.channels))
        ]
        self._stubs = itertools.cycle(
            [gateway_pb2_grpc.GatewayServiceStub(c) for c in self._channels]
        )
        self._metadata = (("authorization", f"Bearer {spec.bearer}"),) if spec.bearer else None

    async def call(self, prompt: str, seen: _Call, first: asyncio.Event | None) -> None:
        stub = next(self._stubs)
        query = gateway_pb2.QuerySpec(prompt=prompt, model=self._spec.model)
        if not self._spec.stream:
            response = await stub.Query(
                gateway_pb2.QueryRequest(query=query),
                timeout=REQUEST_TIMEOUT,
                metadata=self._metadata,
            )
            seen.tokens = _tokens(response.content)
            seen.cached = response.cached
            return
        start = time.perf_counter()
        timeout = None if first is not None else REQUEST_TIMEOUT
        call = stub.StreamQuery(
            gateway_pb2.StreamQueryRequest(query=query), timeout=timeout, metadata=self._metadata
        )
        async for message in call:
            if message.WhichOneof("event") == "delta":
                if not seen.messages:
                    seen.ttft = time.perf_counter() - start
                    if first is not None:
                        first.set()
                seen.messages += 1
                seen.tokens += _tokens(message.delta.text)
            elif message.WhichOneof("event") == "end":
                seen.cached = message.end.cached

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


class _Http:
    """OpenAI chat calls (JSON or SSE) through aiohttp sessions."""

    def __init__(self, spec: Spec) -> None:
        import aiohttp  # noqa: PLC0415 - gRPC workers skip its import (the smoke spawns many)

        self._aiohttp = aiohttp
        self._spec = spec
        self._url = spec.address.rstrip("/") + "/chat/completions"
        self._sessions = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                headers={"authorization": f"Bearer {spec.api_key}"},
                timeout=aiohttp.ClientTimeout(total=None),
            )
            for _ in range(max(1, spec.channels))
        ]
        self._next = itertools.cycle(self._sessions)

    async def call(self, prompt: str, seen: _Call, first: asyncio.Event | None) -> None:
        body: dict[str, Any] = {
            "model": self._spec.model,
            "messages": [{"role": "user", "content": prompt}],
        }
        if self._spec.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        start = time.perf_counter()
        total = None if first is not None else REQUEST_TIMEOUT
        timeout = self._aiohttp.ClientTimeout(total=total)
        async with next(self._next).post(
            self._url, data=orjson.dumps(body), timeout=timeout
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
            if not self._spec.stream:
                answer = orjson.loads(await response.read())
                seen.tokens = _tokens(answer["choices"][0]["message"]["content"] or "")
                return
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                event = orjson.loads(line[6:])
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        if not seen.messages:
                            seen.ttft = time.perf_counter() - start
                            if first is not None:
                                first.set()
                        seen.messages += 1
                        seen.tokens += _tokens(text)

    async def close(self) -> None:
        for session in self._sessions:
            await session.close()


class Worker:
    """Runs one :class:`Spec` and reports an :class:`Outcome`."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.client: _Grpc | _Http = _Grpc(spec) if spec.protocol == "grpc" else _Http(spec)
        # What counts as a failed request (anything else is a bug of the harness).
        self.failures: tuple[type[BaseException], ...] = (
            grpc.aio.AioRpcError,
            RuntimeError,
            TimeoutError,
        )
        if isinstance(self.client, _Http):
            self.failures += (self.client._aiohttp.ClientError,)
        self.outcome = Outcome()
        self._serial = itertools.count()

    def prompt(self) -> str:
        """A unique prompt (no gateway cache can answer it) carrying the relay directive."""
        return f"bench {self.spec.worker}-{next(self._serial)}: answer briefly. {self.spec.shape}"

    async def one(self, scheduled: float | None = None, record: bool = True) -> None:
        """One request; its latency counts from ``scheduled`` when given (open loop)."""
        seen = _Call()
        start = time.perf_counter() if scheduled is None else scheduled
        try:
            await self.client.call(self.prompt(), seen, None)
        except self.failures as exc:
            if record:
                kind = _describe(exc)
                kinds = self.outcome.error_kinds
                self.outcome.errors += 1
                self.outcome.error_sample = self.outcome.error_sample or kind
                if kind in kinds or len(kinds) < 20:
                    kinds[kind] = kinds.get(kind, 0) + 1
            return
        if not record:
            return
        out = self.outcome
        out.latencies_ms.append((time.perf_counter() - start) * 1000)
        out.completed += 1
        out.tokens += seen.tokens
        out.messages += seen.messages
        out.cached += seen.cached
        if self.spec.stream:
            out.ttft_ms.append(seen.ttft * 1000)

    async def warm(self) -> None:
        """Warm-up requests, not recorded, at the spec's concurrency."""
        remaining = self.spec.warmup

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await self.one(record=False)

        await asyncio.gather(*(caller() for _ in range(max(1, self.spec.concurrency))))

    async def closed(self) -> None:
        """``concurrency`` callers back to back until the duration has passed."""
        deadline = time.perf_counter() + self.spec.duration

        async def caller() -> None:
            while time.perf_counter() < deadline:
                await self.one()

        await asyncio.gather(*(caller() for _ in range(self.spec.concurrency)))

    async def open(self) -> None:
        """Requests started every 1/rate seconds, regardless of completions."""
        interval = 1.0 / self.spec.rate
        start = time.perf_counter()
        total = int(self.spec.duration * self.spec.rate)
        tasks: set[asyncio.Task[None]] = set()
        for index in range(total):
            scheduled = start + index * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.outcome.max_lateness_ms = max(self.outcome.max_lateness_ms, -delay * 1000)
            task = asyncio.create_task(self.one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT)

    async def idle(self, release: asyncio.Event) -> None:
        """Open streams, hold them after their first token, cancel all on release."""
        opening = asyncio.Semaphore(256)  # bounded ramp: no SYN storm, no thundering herd
        opened = 0
        failed: list[str] = []
        settled = asyncio.Event()  # every stream has either opened or failed

        async def hold() -> None:
            nonlocal opened
            first = asyncio.Event()
            await opening.acquire()
            call = asyncio.create_task(self.client.call(self.prompt(), _Call(), first))
            waiter = asyncio.create_task(first.wait())
            try:
                await asyncio.wait({call, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                opening.release()
            if first.is_set():
                opened += 1
            else:
                waiter.cancel()
                error = call.exception() if call.done() else None
                failed.append(_describe(error) if error else "ended before first token")
            if opened + len(failed) == self.spec.concurrency:
                settled.set()
            try:
                await asyncio.shield(release.wait())
            finally:
                call.cancel()
                with contextlib.suppress(BaseException):
                    await call

        holders = [asyncio.create_task(hold()) for _ in range(self.spec.concurrency)]
        # Wait for every stream, but give up on a target that stopped opening new ones
        # (a full connection pool, a refused file descriptor) rather than wait it out.
        start = last_change = time.perf_counter()
        progress = -1
        while not settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), 1.0)
            now = time.perf_counter()
            if opened + len(failed) != progress:
                progress, last_change = opened + len(failed), now
            elif now - last_change > STALL_SECONDS or now - start > self.spec.open_timeout:
                break
        _emit({"event": "holding", "open": opened, "failed": len(failed)})
        self.outcome.completed = opened
        self.outcome.errors = self.spec.concurrency - opened
        pending = self.spec.concurrency - opened - len(failed)
        stalled = f"{pending} still waiting for a first token after {now - start:.0f}s"
        self.outcome.error_sample = failed[0] if failed else (stalled if pending else "")
        await release.wait()
        await asyncio.gather(*holders, return_exceptions=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"[:300]


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _read_line(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    if not line:
        raise SystemExit("harness went away")
    return line.decode().strip()


async def run(spec: Spec) -> None:
    """Warm up, wait for ``go``, run the mode, report."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker(spec)
    try:
        if spec.mode != "idle":
            await worker.warm()
        _emit({"event": "ready"})
        if await _read_line(reader) != "go":
            return
        # The client's own collector pauses would count as the server's latency (and
        # delay open-loop starts): everything alive now is frozen and the collector stays
        # off for the window, which is bounded in time and allocates little.
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu, wall = _cpu(), time.perf_counter()
        if spec.mode == "closed":
            await worker.closed()
        elif spec.mode == "open":
            await worker.open()
        else:
            release = asyncio.Event()
            task = asyncio.create_task(worker.idle(release))
            while not task.done():
                reading = asyncio.create_task(_read_line(reader))
                await asyncio.wait({task, reading}, return_when=asyncio.FIRST_COMPLETED)
                if reading.done() and reading.result() == "release":
                    release.set()
                    await task
                elif not reading.done():
                    reading.cancel()
            task.result()
        worker.outcome.client_cpu_s = _cpu() - cpu
        worker.outcome.wall_s = time.perf_counter() - wall
        _emit({"event": "done", **asdict(worker.outcome)})
    finally:
        await worker.client.close()


def main() -> None:
    """Entry point: ``python -m bench.load '<spec as JSON>'``."""
    spec = Spec(**json.loads(sys.argv[1]))
    asyncio.run(run(spec))


if __name__ == "__main__":
    main()
