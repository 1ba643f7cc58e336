"""Several gateway processes on one port: SWITCHYARD_WORKERS=N, or `switchyard serve --workers N`.

With more than one worker, `python -m server` becomes a supervisor that serves
no call itself. It:

- holds the port: it binds SWITCHYARD_LISTEN without listening, so that no
  other process (a second supervisor, a single gateway) can take it, and port
  0 becomes a free port chosen here and given to every worker. The bind is
  made before SO_REUSEPORT is set on that socket, so it still fails on a port
  in use; the workers' listeners carry SO_REUSEPORT too (``server/app.py``),
  so they join it, and the kernel spreads new connections over them (by a
  hash of each connection's addresses; a connection, with every call on it,
  stays with the worker that accepted it);
- starts the embedded relay simulator once, when no relay is configured, and
  hands its URL and key to every worker, so they share one relay;
- starts N workers: `python -m server` with SWITCHYARD_WORKERS=1,
  SWITCHYARD_WORKER_INDEX=i (1..N), the port, a data directory each
  (``<SWITCHYARD_DATA_DIR>/worker-<i>``: a journal and its lock belong to one
  process; a journal left in the directory itself, or in a worker-K beyond N,
  is named in a warning), /metrics on SWITCHYARD_PROMETHEUS_PORT + i - 1 when
  it is set, and SWITCHYARD_REPLICAS multiplied by N (it counts gateway
  processes);
- prints one banner once every worker serves; workers print none, and their
  log lines carry ``[worker i]``;
- restarts a worker that exits, after 0.5 s doubling to 10 s while it keeps
  failing, and gives up (stops the others, exits 1) after 5 failures in a row
  of a worker that did not serve for 10 s; a worker refusing its
  configuration at start-up (exit 2) stops them all with exit 2;
- on SIGTERM or SIGINT sends SIGTERM to every worker, which drains within
  SWITCHYARD_SHUTDOWN_GRACE, waits for them, then exits 0; forwards SIGHUP
  (re-read the TLS certificate) to the workers that serve.

Workers ask Linux to send them SIGTERM should the supervisor die (even by
SIGKILL), so none outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.app import start_simulator
from server.settings import ConfigError, Settings, parse_listen

log = logging.getLogger("switchyard")

WORKER_INDEX_ENV = "SWITCHYARD_WORKER_INDEX"
READY = "switchyard-worker-ready"  # a worker's first line on stdout: `READY pid=P port=N`
EXIT_CONFIG = 2  # `python -m server`'s code for bad configuration

FIRST_DELAY = 0.5  # seconds before a restart, doubling while a worker keeps failing ...
MAX_DELAY = 10.0  # ... up to this
STABLE_AFTER = 10.0  # a worker that served this long before exiting starts the count afresh
MAX_FAILURES = 5  # failures in a row of one worker before the supervisor gives up
STOP_SLACK = 30.0  # seconds past the shutdown grace before workers still running are killed
_LINE_LIMIT = 1 << 20  # longest stdout line of a worker read whole
_PR_SET_PDEATHSIG = 1


def ready_line(port: int) -> str:
    """What a worker prints on stdout once it serves, for the supervisor."""
    return f"{READY} pid={os.getpid()} port={port}"


def die_with_parent() -> None:
    """Have Linux send this worker SIGTERM when its supervisor dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def reserve_port(listen: str) -> tuple[list[socket.socket], int]:
    """Bind every address `listen` names, without listening; the sockets and their port.

    Port 0 becomes one free port, the same on every address. The sockets get
    SO_REUSEPORT only once bound, so that a port another process holds is
    refused here, and the workers, whose listeners set it too, can join.
    """
    host, port = parse_listen(listen)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError("SWITCHYARD_LISTEN", f"cannot resolve {host!r}: {error}") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    problem = ""
    for _ in range(20 if port == 0 else 1):  # port 0: a port free on one address may not be on all
        held: list[socket.socket] = []
        chosen = port
        try:
            for family, address in addresses:
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.bind((address[0], chosen, *address[2:]))
                except OSError as error:
                    sock.close()
                    if error.errno == errno.EADDRINUSE:
                        raise
                    problem = error.strerror or str(error)
                    continue  # as gRPC does: an address this machine lacks (say ::1) is skipped
                held.append(sock)
                chosen = chosen or int(sock.getsockname()[1])
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError as error:
            for sock in held:
                sock.close()
            problem = error.strerror or str(error)
            continue
        if held:
            return held, chosen
    raise ConfigError("SWITCHYARD_LISTEN", f"cannot listen on {listen}: {problem}")


def orphaned_journals(data_dir: Path, workers: int) -> list[Path]:
    """Data directories under `data_dir` whose journal holds calls none of `workers` will
    write out: the directory itself (a gateway of one process) and worker-K for K > workers."""
    found = []
    for folder in [data_dir, *sorted(data_dir.glob("worker-*"))]:
        suffix = folder.name.removeprefix("worker-")
        if folder != data_dir and (not suffix.isdigit() or 1 <= int(suffix) <= workers):
            continue
        with contextlib.suppress(OSError):
            if any(seg.stat().st_size for seg in (folder / "journal").glob("segment-*.jsonl")):
                found.append(folder)
    return found


def listen_on(listen: str, port: int) -> str:
    """`listen` (host:port) with its port replaced."""
    host, _, _ = listen.rpartition(":")
    return f"{host}:{port}"


def describe_exit(code: int) -> str:
    """'code 3', or 'code -9 (SIGKILL)' for a process a signal ended."""
    if code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"code {code}"
    return f"code {code}"


@dataclass(slots=True)
class _Worker:
    """One of the N places; its process changes with each restart."""

    index: int
    process: asyncio.subprocess.Process | None = None
    serving: bool = False  # the current process has said it serves
    served_once: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None  # of its last process


class Supervisor:
    """N workers of one gateway, kept running until a signal stops them."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], port: int) -> None:
        self._settings = settings
        self._environ = dict(environ)
        self._port = port
        self._workers = [_Worker(index) for index in range(1, settings.server.workers + 1)]
        self._stopping = asyncio.Event()
        self._exit: int | None = None  # set when the supervisor gives up

    def worker_environ(self, index: int) -> dict[str, str]:
        """The environment of worker `index`: this one, made a worker's."""
        settings = self._settings
        workers = settings.server.workers
        env = {
            **self._environ,
            "SWITCHYARD_WORKERS": "1",
            WORKER_INDEX_ENV: str(index),
            "SWITCHYARD_LISTEN": listen_on(settings.server.listen, self._port),
            "SWITCHYARD_DATA_DIR": str(Path(settings.ledger.data_dir) / f"worker-{index}"),
            "SWITCHYARD_REPLICAS": str(settings.redis.replicas * workers),
        }
        if settings.telemetry.prometheus_port:
            env["SWITCHYARD_PROMETHEUS_PORT"] = str(settings.telemetry.prometheus_port + index - 1)
        return env

    @property
    def pids(self) -> list[int]:
        """The workers' processes still running."""
        return [
            w.process.pid
            for w in self._workers
            if w.process is not None and w.process.returncode is None
        ]

    async def run(self, announce: Callable[[], None]) -> int:
        """Start the workers, call `announce` once all serve, keep them until stopped."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            keepers = [asyncio.create_task(self._keep(worker)) for worker in self._workers]
            all_serving = asyncio.create_task(self._all_serving())
            stopping = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({all_serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if all_serving.done() and not self._stopping.is_set():
                announce()
            all_serving.cancel()
            await stopping
            within = self._settings.server.shutdown_grace + STOP_SLACK
            _, late = await asyncio.wait(keepers, timeout=within)
            if late:
                log.error("workers still running %.0f s after SIGTERM: killing them", within)
                self._signal(signal.SIGKILL)
                await asyncio.wait(late)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        if self._exit is not None:
            log.info("stopped: %d workers, exit code %d", len(self._workers), self._exit)
            return self._exit
        graceful = (0, -signal.SIGTERM, -signal.SIGINT, None)
        failed = [w for w in self._workers if w.exit_code not in graceful]
        for worker in failed:
            assert worker.exit_code is not None
            log.error("worker %d stopped with %s", worker.index, describe_exit(worker.exit_code))
        log.info("stopped: %d workers", len(self._workers))
        return 1 if failed else 0

    def stop(self) -> None:
        """SIGTERM to every worker: each drains; the supervisor exits once they have."""
        if not self._stopping.is_set():
            log.info("stopping: SIGTERM to %d workers", len(self.pids))
        self._stopping.set()
        self._signal(signal.SIGTERM)

    def _reload(self) -> None:
        if not self._settings.auth.tls_cert:
            log.info("SIGHUP ignored: no TLS certificate to re-read")
            return
        log.info("SIGHUP: the workers re-read the TLS certificate")
        self._signal(signal.SIGHUP, serving_only=True)

    def _signal(self, signum: signal.Signals, *, serving_only: bool = False) -> None:
        for worker in self._workers:
            if worker.process is None or worker.process.returncode is not None:
                continue
            if serving_only and not worker.serving:
                continue  # its handler is not installed yet: SIGHUP would end it
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signum)

    def _give_up(self, code: int) -> None:
        if self._exit is None:
            self._exit = code
        self.stop()

    async def _all_serving(self) -> None:
        for worker in self._workers:
            await worker.served_once.wait()

    async def _keep(self, worker: _Worker) -> None:
        """Run worker `worker.index` until stopped, restarting it when it exits."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping.is_set():
            serving_since: list[float] = []
            try:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "server",
                    env=self.worker_environ(worker.index),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    limit=_LINE_LIMIT,
                )
            except OSError as error:  # fork or exec failed: no memory, too many processes
                what = f"worker {worker.index} could not be started ({error})"
            else:
                worker.process, worker.serving = process, False
                if self._stopping.is_set():  # a signal came while it was being started
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
                log.info("worker %d started (pid %d)", worker.index, process.pid)
                pump = asyncio.create_task(self._pump(worker, process, serving_since))
                code = await process.wait()
                worker.exit_code, worker.serving = code, False
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that
                # lands in the turn its awaitable ends in (the ledger's writer hung on it).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await asyncio.shield(pump)
                pump.cancel()
                if self._stopping.is_set():
                    return
                if not serving_since and code == EXIT_CONFIG:
                    log.error(
                        "worker %d (pid %d) refused its configuration (see above): stopping",
                        worker.index,
                        process.pid,
                    )
                    self._give_up(EXIT_CONFIG)
                    return
                what = (
                    f"worker {worker.index} (pid {process.pid}) exited with {describe_exit(code)}"
                )
            if serving_since and loop.time() - serving_since[0] >= STABLE_AFTER:
                failures = 0
            failures += 1
            if failures >= MAX_FAILURES:
                log.error("%s, failing %d times in a row: giving up", what, failures)
                self._give_up(1)
                return
            delay = min(FIRST_DELAY * 2 ** (failures - 1), MAX_DELAY)
            log.warning("%s; restarting it in %g s", what, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _pump(
        self, worker: _Worker, process: asyncio.subprocess.Process, serving_since: list[float]
    ) -> None:
        """Watch for the worker's ready line; pass the rest of its stdout on, line by line."""
        stream = process.stdout
        assert stream is not None
        out = sys.stdout.buffer
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than the limit: pass it on in pieces
                line = await stream.read(_LINE_LIMIT)
            if not line:
                return
            if not serving_since and line.startswith(READY.encode()):
                serving_since.append(asyncio.get_running_loop().time())
                worker.serving = True
                worker.served_once.set()
                log.info("worker %d (pid %d) is serving", worker.index, process.pid)
                if self._stopping.is_set():  # SIGTERM may have come before its handler
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
                continue
            out.write(line)
            out.flush()


async def supervise(
    settings: Settings,
    environ: Mapping[str, str],
    banner: Callable[[int, str], str],
) -> int:
    """Run `settings.server.workers` workers until SIGTERM or SIGINT; the exit code.

    `banner(port, relay_url)` is what to print once all of them serve.
    """
    held, port = reserve_port(settings.server.listen)
    for folder in orphaned_journals(Path(settings.ledger.data_dir), settings.server.workers):
        log.warning(
            "%s holds journalled calls that no worker writes to the ledger: run one gateway"
            " with SWITCHYARD_DATA_DIR=%s once to write them",
            folder,
            folder,
        )
    try:
        simulator = None
        env = dict(environ)
        relay_url = settings.relay.url
        if relay_url is None:
            simulator, relay_url, key = await start_simulator(settings)
            env.update({"SWITCHYARD_RELAY_URL": relay_url, "SWITCHYARD_RELAY_API_KEY": key})
        try:
            supervisor = Supervisor(settings, env, port)
            shown = relay_url
            return await supervisor.run(lambda: print(banner(port, shown), flush=True))
        finally:
            if simulator is not None:
                await simulator.stop()
    finally:
        for sock in held:
            sock.close()
