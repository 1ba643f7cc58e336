"""Start and stop the processes under test: the relay, the floors, Switchyard and peers.

Each runs as its own child process on loopback, started the way its users start it;
the harness only ever looks at it from outside (its port and ``/proc/<pid>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from switchyard.v1 import gateway_pb2, gateway_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / "bench" / ".peers" / "litellm"
MODEL = "gemini-2.5-flash"  # an OpenAI-wire model of Switchyard's catalog
API_KEY = "bench-key"
START_TIMEOUT = 60.0


class TargetUnavailableError(Exception):
    """A target could not be started; the message says why, for the table."""


@dataclass(slots=True)
class Target:
    """A running server under test."""

    name: str
    protocol: str  # "grpc" or "http"
    address: str  # host:port (gRPC) or base URL ending in /v1 (HTTP)
    process: asyncio.subprocess.Process
    log: Path
    description: str = ""
    api_key: str = API_KEY  # what HTTP clients present (LiteLLM checks its master key)
    bearer: str = ""  # what gRPC clients present as `authorization: Bearer` (none: empty)

    @property
    def pid(self) -> int:
        """The process id whose tree is measured."""
        return self.process.pid


def free_port() -> int:
    """A port free on loopback right now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


async def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> asyncio.subprocess.Process:
    handle = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=handle,
            env=env,
            cwd=cwd,
            start_new_session=True,  # signals from a terminal's ^C reach the harness only
        )
    finally:
        handle.close()


async def _drain(stream: asyncio.StreamReader, log: Path) -> None:
    """Copy a child's stdout to its log so a chatty server never blocks on a full pipe."""
    with log.open("ab") as out:
        while chunk := await stream.read(65536):
            out.write(chunk)


async def _await_ready_line(process: asyncio.subprocess.Process, log: Path, name: str) -> int:
    """Read stdout until ``READY <port>``; then keep draining it in the background."""
    assert process.stdout is not None
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = await process.stdout.readline()
                if not line:
                    raise TargetUnavailableError(f"{name} exited: {_tail(log)}")
                if line.startswith(b"READY "):
                    port = int(line.split()[1])
                    break
    except TimeoutError:
        raise TargetUnavailableError(f"{name} did not start within {START_TIMEOUT:.0f}s") from None
    _background(_drain(process.stdout, log))
    return port


_TASKS: set[asyncio.Task[None]] = set()


def _background(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def start_relay(logs: Path) -> tuple[asyncio.subprocess.Process, int]:
    """The benchmark relay; returns the process and its port."""
    log = logs / "relay.log"
    process = await _spawn([sys.executable, "-m", "bench.relay", "--port", "0"], log)
    return process, await _await_ready_line(process, log, "relay")


async def start_floor(client: str, relay_url: str, logs: Path) -> Target:
    """The bare grpc.aio forwarder with one HTTP client."""
    if client == "httpx-aiohttp" and importlib.util.find_spec("httpx_aiohttp") is None:
        raise TargetUnavailableError("not available: httpx-aiohttp is not installed (bench extra)")
    log = logs / f"floor-{client}.log"
    argv = [sys.executable, "-m", "bench.floor", "--relay-url", relay_url, "--client", client]
    process = await _spawn(argv, log)
    port = await _await_ready_line(process, log, f"floor({client})")
    target = Target(f"floor({client})", "grpc", f"127.0.0.1:{port}", process, log)
    await probe_grpc(target)
    return target


def switchyard_available() -> str | None:
    """None when ``python -m server`` can start; otherwise why not."""
    if not (ROOT / "server" / "__main__.py").exists():
        return "not available: server/__main__.py does not exist on this branch yet"
    return None


def switchyard_env(
    port: int, relay_url: str, data_dir: str, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment Switchyard is benchmarked in: this one without SWITCHYARD_* and
    OTEL_* settings, the global limiter raised far above any benchmark's rate, then
    `extra_env`."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OTEL_"))},
        "SWITCHYARD_LISTEN": f"127.0.0.1:{port}",
        "SWITCHYARD_RELAY_URL": relay_url,
        "SWITCHYARD_RELAY_API_KEY": API_KEY,
        "SWITCHYARD_RELAY_RPM": "100000000",
        "SWITCHYARD_RELAY_BURST": "100000",
        "SWITCHYARD_DATA_DIR": data_dir,
        **(extra_env or {}),
    }


async def start_switchyard(
    relay_url: str,
    logs: Path,
    extra_env: dict[str, str] | None = None,
    otlp_port: int | None = None,
    name: str = "switchyard",
) -> Target:
    """Switchyard exactly as users start it: ``python -m server`` configured by environment.

    The global limiter stays on, raised far above the benchmark's rate so the run
    measures the pipeline's cost rather than its rejections. Telemetry is the
    default: no OTEL_* variable, so no exporter (Switchyard then sets up no SDK and
    its spans are the API's no-op spans), unless `otlp_port` names an OTLP sink to
    export traces and metrics to.
    """
    reason = switchyard_available()
    if reason:
        raise TargetUnavailableError(reason)
    port = free_port()
    # a data directory of its own each start: the default SQLite ledger and its journal
    data_dir = tempfile.mkdtemp(prefix=f"{_slug(name)}-", dir=logs)
    env = switchyard_env(port, relay_url, data_dir, extra_env)
    url = (extra_env or {}).get("SWITCHYARD_DATABASE_URL", "")
    ledger = (
        "ledger in memory"
        if url == "memory"
        else "PostgreSQL ledger (a server of the benchmark's own)"
        if url.startswith("postgres")
        else "SQLite ledger (the default)"
    )
    description = f"defaults, limiter raised, {ledger}"
    if (extra_env or {}).get("SWITCHYARD_REDIS_URL"):
        description += ", limits, budgets, breakers and cache in Redis (a server of its own)"
    if otlp_port is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
        env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        keep = (extra_env or {}).get("SWITCHYARD_TRACE_KEEP")
        kept = (
            "the default keep policy (errors, fallbacks, retries, limits, slow, 10%)"
            if keep is None
            else "every trace (SWITCHYARD_TRACE_KEEP=all)"
            if keep == "all"
            else f"SWITCHYARD_TRACE_KEEP={keep}"
        )
        description += f", traces and metrics exported over OTLP/gRPC to a local sink, {kept}"
    log = logs / f"{name}.log"
    process = await _spawn([sys.executable, "-m", "server"], log, env=env)
    assert process.stdout is not None
    _background(_drain(process.stdout, log))
    changed = " ".join(  # a key's value is never written into the results
        f"{k}={'(set)' if k.endswith('_KEY') else v}"
        for k, v in (extra_env or {}).items()
        if k not in ("SWITCHYARD_DATABASE_URL", "SWITCHYARD_REDIS_URL", "SWITCHYARD_TRACE_KEEP")
    )
    if changed:
        description += f"; also {changed}"
    target = Target(name, "grpc", f"127.0.0.1:{port}", process, log, description)
    await probe_grpc(target)
    return target


# Tracing exported: every trace kept (the cost of full sampling), and the default keep policy.
OTLP_ROW = "switchyard(otlp)"
OTLP_KEEP_ROW = "switchyard(otlp, default keep)"
OTLP_ROWS = {OTLP_ROW: {"SWITCHYARD_TRACE_KEEP": "all"}, OTLP_KEEP_ROW: {}}


async def start_otlp_sink(logs: Path) -> tuple[asyncio.subprocess.Process, int]:
    """The OTLP sink Switchyard's `switchyard(otlp)` rows export to."""
    log = logs / "otlp-sink.log"
    process = await _spawn([sys.executable, "-m", "bench.otlp_sink", "--port", "0"], log)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    return process, int(line)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def litellm_version() -> str | None:
    """The installed LiteLLM version in the peers' virtualenv, if any."""
    for path in (LITELLM_VENV / "lib").glob("python*/site-packages/litellm-*.dist-info"):
        return path.name.removeprefix("litellm-").removesuffix(".dist-info")
    return None


LITELLM_CONFIG = """\
# LiteLLM proxy for the Switchyard benchmark: one model, pointed at the benchmark relay.
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {relay_url}
      api_key: {api_key}
litellm_settings:
  telemetry: false
"""


async def start_litellm(relay_url: str, logs: Path) -> Target:
    """A LiteLLM proxy (1 worker, its defaults) in its own virtualenv, on the same relay."""
    binary = LITELLM_VENV / "bin" / "litellm"
    version = litellm_version()
    if not binary.exists() or version is None:
        raise TargetUnavailableError("not installed: run `make bench PEERS=litellm`")
    port = free_port()
    config = logs / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(model=MODEL, relay_url=relay_url, api_key=API_KEY))
    # LiteLLM refuses to start without a master key; a fresh random one per run.
    master_key = "sk-" + secrets.token_hex(32)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network fetch at start-up
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    env.pop("VIRTUAL_ENV", None)
    argv = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    log = logs / "litellm.log"
    process = await _spawn(argv, log, env=env)
    assert process.stdout is not None
    _background(_drain(process.stdout, log))
    target = Target(
        "litellm",
        "http",
        f"http://127.0.0.1:{port}/v1",
        process,
        log,
        description=f"LiteLLM proxy {version}, 1 worker, config {config.name}",
        api_key=master_key,
    )
    await _probe_http(target)
    return target


async def probe_grpc(target: Target) -> None:
    """Wait until a real Query succeeds (not just until the port opens).

    A gateway that wants a key the target does not have yet answers
    UNAUTHENTICATED: it is up (its caller probes again with the key)."""
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    async with grpc.aio.insecure_channel(target.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.QueryRequest(
            query=gateway_pb2.QuerySpec(prompt="bench probe [relay chunks=1]", model=MODEL)
        )
        metadata = (("authorization", f"Bearer {target.bearer}"),) if target.bearer else None
        while time.monotonic() < deadline:
            if target.process.returncode is not None:
                raise TargetUnavailableError(f"{target.name} exited: {_tail(target.log)}")
            try:
                metadata = (
                    (("authorization", f"Bearer {target.bearer}"),) if target.bearer else None
                )
                await stub.Query(request, timeout=2, metadata=metadata)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and not target.bearer:
                    return
                last = f"{exc.code().name}: {exc.details()}"
                await asyncio.sleep(0.2)
    raise TargetUnavailableError(f"{target.name} never answered a Query: {last}")


async def _probe_http(target: Target) -> None:
    """Wait until a real chat completion succeeds."""
    deadline = time.monotonic() + START_TIMEOUT * 2  # LiteLLM imports for a long time
    url = target.address + "/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "probe [relay chunks=1]"}]}
    last = ""
    headers = {"authorization": f"Bearer {target.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        while time.monotonic() < deadline:
            if target.process.returncode is not None:
                raise TargetUnavailableError(f"{target.name} exited: {_tail(target.log)}")
            try:
                async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(5)) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}: {(await r.text())[:200]}"
            except aiohttp.ClientError as exc:
                last = str(exc)
            await asyncio.sleep(0.5)
    raise TargetUnavailableError(f"{target.name} never answered: {last}")


STOP_GRACE = 2.0  # measurements are over; a slow graceful stop only costs run time


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process's group (its own session), then SIGKILL after a short grace.

    (Switchyard with an unreachable OTLP endpoint takes about 15 s to stop gracefully.)"""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
