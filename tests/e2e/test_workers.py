"""SWITCHYARD_WORKERS=2: one supervisor, two gateway processes on one port (server/workers.py).

Real processes and sockets throughout: `python -m server` as users start it,
on the tests' own Redis and PostgreSQL. Which worker holds a connection is
read from the kernel (/proc/net/tcp6 and each worker's open files), so the
test sees the spread of connections itself rather than trusting a log line.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.settings import ConfigError
from server.workers import reserve_port
from tests.certs import CertificateAuthority
from tests.leaks import SCAN

from .conftest import BANNER, switchyard

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SERVING = re.compile(r"worker (\d+) \(pid (\d+)\) is serving")
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OTEL_"))}


@dataclass
class Supervised:
    """A supervisor, its port, and its log."""

    process: asyncio.subprocess.Process
    port: int
    banner: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def serving(self) -> dict[int, int]:
        """Each worker's latest process that said it serves: index -> pid."""
        return {int(index): int(pid) for index, pid in SERVING.findall(self.text())}

    def pids(self) -> set[int]:
        """Every pid that ever served."""
        return {int(pid) for _, pid in SERVING.findall(self.text())}


async def until(check: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def holders(port: int, pids: set[int]) -> dict[int, int]:
    """The established server-side connections on `port`: socket inode -> the pid holding it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(int(fields[9]))
    found = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[len("socket:[") : -1])
                if inode in inodes:
                    found[inode] = pid
    return found


async def ask(port: int, text: str) -> str:
    """One call over a connection of its own (a fresh channel); the model that answered."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        answer = await stub.Query(pb.QueryRequest(query=pb.QuerySpec(prompt=text)), timeout=10)
        return answer.model


async def start_supervisor(env: dict[str, str]) -> Supervised:
    """`python -m server` with `env`; waits for its banner (and so for every worker)."""
    log = Path(tempfile.mkdtemp(prefix="switchyard-log-")) / "supervisor.log"
    SCAN.watch(log)
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            env={**CLEAN, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    match = BANNER.search(line)
    assert match, (line, log.read_text())
    return Supervised(process, int(match.group(1)), line, log)


Start = Callable[..., Awaitable[Supervised]]


@pytest.fixture
async def supervisor(redis_url: str, postgres_url: str, tmp_path: Path) -> AsyncIterator[Start]:
    """Start supervisors of two workers on the tests' Redis and PostgreSQL (and the
    embedded simulator, which the supervisor runs once for both); all are stopped after."""
    started: list[Supervised] = []

    async def start(**extra: str) -> Supervised:
        env = {
            "SWITCHYARD_WORKERS": "2",
            "SWITCHYARD_LISTEN": "127.0.0.1:0",
            "SWITCHYARD_REDIS_URL": redis_url,
            "SWITCHYARD_DATABASE_URL": postgres_url,
            "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
            "SWITCHYARD_SIM_LATENCY_SCALE": "0",
            **extra,
        }
        running = await start_supervisor(env)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.returncode is None:
            running.process.kill()
            await running.process.wait()


async def test_two_workers_share_the_port_a_killed_one_is_replaced_and_sigterm_stops_all(
    supervisor: Start, tmp_path: Path
) -> None:
    # A journal a gateway of one process left in the data directory: no worker replays it.
    left = tmp_path / "data" / "journal" / "segment-000000000001.jsonl"
    left.parent.mkdir(parents=True)
    left.write_text("{}\n")
    running = await supervisor()
    assert "2 worker processes" in running.banner
    assert f"{tmp_path / 'data'} holds journalled calls that no worker writes" in running.text()
    port, sup = running.port, running.process.pid
    await until(lambda: len(running.serving()) == 2)
    first = running.serving()
    assert len(set(first.values())) == 2
    assert all(parent_of(pid) == sup for pid in first.values())

    async def spread(workers: set[int]) -> dict[int, int]:
        """24 calls, each over a connection of its own kept open: how many each worker holds."""
        channels = []
        for n in range(24):
            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(channel)
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            await stub.Query(pb.QueryRequest(query=pb.QuerySpec(prompt=f"spread {n}")), timeout=10)
        try:
            held = holders(port, workers)
            counts = {pid: list(held.values()).count(pid) for pid in workers}
            assert sum(counts.values()) == 24, (held, counts)
            return counts
        finally:
            for channel in channels:
                await channel.close()

    # Both workers answer on the one port: the kernel spreads new connections over them.
    counts = await spread(set(first.values()))
    assert all(counts.values()), counts

    # SIGKILL worker 1: the other keeps answering; the supervisor starts a new worker 1.
    os.kill(first[1], signal.SIGKILL)
    # Once the supervisor has reaped it, all its threads are gone, and its listener with them
    # (a connection the kernel had queued to that listener before is reset: killing a worker
    # costs the calls it held; the test makes its calls after).
    died = f"worker 1 (pid {first[1]}) exited with code -9 (SIGKILL); restarting it in 0.5 s"
    await until(lambda: died in running.text())
    assert not alive(first[1])
    answered = 0
    while running.serving()[1] == first[1] or answered < 10:
        await ask(port, f"while worker 1 is replaced {answered}")
        answered += 1
        assert answered < 2000, running.text()
    second = running.serving()
    assert second[2] == first[2] and second[1] not in first.values()
    assert parent_of(second[1]) == sup
    counts = await spread(set(second.values()))
    assert all(counts.values()), counts  # the new worker 1 answers too

    # SIGTERM to the supervisor: every worker drains and exits, then the supervisor, with 0.
    running.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.process.wait(), 40) == 0
    assert not any(alive(pid) for pid in second.values())
    log = running.text()
    assert log.count("stopping: health NOT_SERVING") == 2
    assert "stopped: 2 workers" in log
    assert log.count("Switchyard is serving") == 0  # the one banner is on stdout
    held, free = reserve_port(f"127.0.0.1:{port}")  # and the port is free again
    for sock in held:
        sock.close()
    assert free == port


async def test_a_worker_refusing_its_configuration_stops_the_supervisor_with_2(
    redis_url: str, postgres_url: str, tmp_path: Path
) -> None:
    locked = tmp_path / "data" / "worker-2"
    locked.mkdir(parents=True)
    log = tmp_path / "supervisor.log"
    with (locked / "switchyard.lock").open("a") as held, log.open("wb") as log_file:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            env={
                **CLEAN,
                "SWITCHYARD_WORKERS": "2",
                "SWITCHYARD_LISTEN": "127.0.0.1:0",
                "SWITCHYARD_REDIS_URL": redis_url,
                "SWITCHYARD_DATABASE_URL": postgres_url,
                "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
                "SWITCHYARD_SIM_LATENCY_SCALE": "0",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 40)
    text = log.read_text()
    assert process.returncode == 2, text
    assert out == b""  # no banner
    assert "worker 2" in text and "refused its configuration" in text
    assert "SWITCHYARD_DATA_DIR" in text  # the worker's own message, naming the setting


async def test_a_worker_that_keeps_crashing_is_given_up_on_with_exit_1(
    redis_url: str, postgres_url: str, tmp_path: Path
) -> None:
    # Worker 1's /metrics port (SWITCHYARD_PROMETHEUS_PORT + 0) is taken: it dies at each start.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = taken.getsockname()[1]
        log = tmp_path / "supervisor.log"
        with log.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server",
                env={
                    **CLEAN,
                    "SWITCHYARD_WORKERS": "2",
                    "SWITCHYARD_LISTEN": "127.0.0.1:0",
                    "SWITCHYARD_REDIS_URL": redis_url,
                    "SWITCHYARD_DATABASE_URL": postgres_url,
                    "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
                    "SWITCHYARD_SIM_LATENCY_SCALE": "0",
                    "SWITCHYARD_PROMETHEUS_PORT": str(metrics),
                },
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
            )
        out, _ = await asyncio.wait_for(process.communicate(), 50)
    text = log.read_text()
    assert process.returncode == 1, text
    assert out == b""  # never all serving: no banner
    delays = re.findall(
        r"worker 1 \(pid \d+\) exited with code 1; restarting it in ([\d.]+) s", text
    )
    assert delays == ["0.5", "1", "2", "4"], text
    assert "exited with code 1, failing 5 times in a row: giving up" in text
    assert "stopped: 2 workers, exit code 1" in text


async def test_sighup_reaches_every_worker(supervisor: Start, tmp_path: Path) -> None:
    first_ca, renewed_ca = CertificateAuthority("first CA"), CertificateAuthority("renewed CA")
    names = {"dns": ("localhost",), "ips": ("127.0.0.1",)}
    cert, key = first_ca.issue("switchyard", **names).write(tmp_path / "server")
    running = await supervisor(SWITCHYARD_TLS_CERT=str(cert), SWITCHYARD_TLS_KEY=str(key))
    assert "(TLS; 2 worker processes" in running.banner
    await until(lambda: len(running.serving()) == 2)
    workers = running.serving()
    stamps = (cert.stat().st_mtime_ns, key.stat().st_mtime_ns)
    renewed_ca.issue("switchyard", **names).write(tmp_path / "server")
    # The same modification times: only the signal can make a worker look again.
    os.utime(cert, ns=(stamps[0], stamps[0]))
    os.utime(key, ns=(stamps[1], stamps[1]))

    async def healthy() -> bool:
        """A health check over a connection of its own, trusting only the renewed CA."""
        credentials = grpc.ssl_channel_credentials(renewed_ca.pem)
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{running.port}", credentials, [("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error  # a failed handshake
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    assert not await healthy()
    running.process.send_signal(signal.SIGHUP)
    # Every fresh connection, whichever worker takes it, gets the renewed certificate.
    deadline = time.monotonic() + 20
    while not all([await healthy() for _ in range(16)]):
        assert time.monotonic() < deadline, running.text()
    log = running.text()
    assert "SIGHUP: the workers re-read the TLS certificate" in log
    for index in (1, 2):
        assert f"[worker {index}]: TLS: certificate re-read" in log
    assert running.serving() == workers  # none ended by the signal
    running.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.process.wait(), 40) == 0


async def test_serve_workers_without_redis_is_refused_naming_what_to_set() -> None:
    code, out, err = await switchyard(
        "serve", "--workers", "2", env={"SWITCHYARD_LISTEN": "127.0.0.1:0"}
    )
    assert code == 2 and out == ""
    assert "SWITCHYARD_WORKERS: 2 workers need shared state: set SWITCHYARD_REDIS_URL" in err
    code, _, err = await switchyard("serve", "--workers", "0")
    assert code == 64 and "--workers" in err  # a usage error, before any server code runs


def test_the_reserved_port_keeps_other_processes_off_and_lets_workers_join() -> None:
    held, port = reserve_port("127.0.0.1:0")
    try:
        assert port
        with pytest.raises(ConfigError, match="SWITCHYARD_LISTEN"):  # a second supervisor
            reserve_port(f"127.0.0.1:{port}")
        with ThreadPoolExecutor(1) as pool:
            single = grpc.server(pool, options=[("grpc.so_reuseport", 0)])
            with pytest.raises(RuntimeError):  # a gateway of one process (server/app.py)
                single.add_insecure_port(f"127.0.0.1:{port}")
            workers = [grpc.server(pool, options=[("grpc.so_reuseport", 1)]) for _ in range(2)]
            assert [w.add_insecure_port(f"127.0.0.1:{port}") for w in workers] == [port, port]
    finally:
        for sock in held:
            sock.close()
