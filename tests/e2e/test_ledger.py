"""The durable ledger over real processes: restarts, SIGKILL and SIGTERM under load, a
database outage under load, two replicas on one PostgreSQL, and start-up refusals.

Every gateway here is `python -m server` in its own process; the relay is the
simulator in the test's process; PostgreSQL is a server of the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.simulator import RelaySimulator, SimulatorSettings
from tests.helpers import until
from tests.postgres import TempPostgres

from .conftest import RELAY_KEY, caller, nanos, start_gateway_process


@pytest.fixture
async def relay() -> AsyncIterator[RelaySimulator]:
    sim = RelaySimulator(SimulatorSettings(latency_scale=0, api_key=RELAY_KEY))
    await sim.start()
    yield sim
    await sim.stop()


class Running:
    """A gateway process and a stub on it."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)

    async def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        """Signal the process, wait for it to exit, then close the channel."""
        if self.process.returncode is None:
            self.process.send_signal(how)
        code = await asyncio.wait_for(self.process.wait(), 30)
        await self.channel.close()
        return code


@contextlib.asynccontextmanager
async def gateway(relay: RelaySimulator, env: dict[str, str]) -> AsyncIterator[Running]:
    # The relay budget raised: these tests load the ledger, not the limiter.
    unlimited = {"SWITCHYARD_RELAY_RPM": "100000000", "SWITCHYARD_RELAY_BURST": "100000"}
    process, port = await start_gateway_process(relay.url, {**unlimited, **env})
    running = Running(process, port)
    try:
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            await running.stop(signal.SIGKILL)


def ask(text: str) -> pb.QueryRequest:
    # temperature > 0: never served from the cache, so every call reaches the relay
    return pb.QueryRequest(query=pb.QuerySpec(prompt=f"{text} [[sim tokens=4]]", temperature=0.5))


async def load(stub, stop: asyncio.Event, done: list[str], tenant: str, workers: int = 8) -> None:
    """Callers sending Query after Query until `stop`; the request ids of the answered go
    to `done` (a call cut off by the gateway's end is not answered)."""

    async def worker(index: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                answer = await stub.Query(
                    ask(f"call {index}-{n}"), metadata=caller(tenant), timeout=10
                )
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)  # the gateway or its database is away: try again
                continue
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():  # this worker itself is cancelled
                    raise
                return  # the channel was closed under the call: the gateway is gone
            done.append(answer.request_id)

    await asyncio.gather(*(worker(i) for i in range(workers)))


async def exported(stub, tenant: str, since: float = 0) -> list[pb.CallRecord]:
    """Every call of `tenant` the gateway's ledger holds (ExportUsage writes its queue first)."""
    request = pb.ExportUsageRequest(page_size=1000)
    request.start.FromSeconds(int(since))
    return [
        call
        async for page in stub.ExportUsage(request, metadata=caller(tenant), timeout=30)
        for call in page.calls
    ]


async def test_a_restart_keeps_spend_and_budgets(relay, tmp_path):
    config = tmp_path / "switchyard.toml"
    config.write_text('[budgets."team"]\nday = "1"\n')
    env = {"SWITCHYARD_DATA_DIR": str(tmp_path / "data"), "SWITCHYARD_CONFIG": str(config)}
    async with gateway(relay, env) as first:
        for n in range(3):
            await first.stub.Query(ask(f"q{n}"), metadata=caller("team"))
        before = await first.stub.GetUsage(pb.GetUsageRequest(), metadata=caller("team"))
        assert await first.stop() == 0
    async with gateway(relay, env) as second:
        after = await second.stub.GetUsage(pb.GetUsageRequest(), metadata=caller("team"))
        assert (
            (after.requests, nanos(after.cost))
            == (before.requests, nanos(before.cost))
            == (
                3,
                nanos(before.cost),
            )
        )
        [budget] = after.budgets
        assert nanos(budget.spent) == nanos(before.cost) > 0  # the day's spend is not reset
        await second.stop()


# Nothing is written to the database on its own during these tests: what reaches it
# comes from the drain at SIGTERM, or from the journal's replay after SIGKILL.
HOLD = {"SWITCHYARD_LEDGER_FLUSH_INTERVAL": "600", "SWITCHYARD_LEDGER_BATCH_SIZE": "1000000"}


def stored(data: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(data / "ledger.db")) as db:
        return {row[0] for row in db.execute("SELECT request_id FROM ledger_calls")}


async def test_sigkill_under_load_loses_no_settled_call(relay, tmp_path):
    env = {"SWITCHYARD_DATA_DIR": str(tmp_path / "data"), **HOLD}
    done: list[str] = []
    async with gateway(relay, env) as victim:
        stop = asyncio.Event()
        clients = asyncio.create_task(load(victim.stub, stop, done, "load"))
        await until(lambda: len(done) >= 300, within=30)
        victim.process.send_signal(signal.SIGKILL)  # no drain, no flush: only the journal
        await victim.process.wait()
        stop.set()
        await clients
    assert stored(tmp_path / "data") == set()  # only the journal has them
    async with gateway(relay, env) as heir:
        calls = await exported(heir.stub, "load")
        await heir.stop()
    ids = [call.request_id for call in calls]
    assert len(ids) == len(set(ids))  # nothing counted twice
    missing = set(done) - set(ids)
    assert not missing, f"{len(missing)} of {len(done)} answered calls are not in the ledger"


async def test_sigterm_under_load_loses_no_call(relay, tmp_path):
    data = tmp_path / "data"
    done: list[str] = []
    async with gateway(relay, {"SWITCHYARD_DATA_DIR": str(data), **HOLD}) as gateway_:
        stop = asyncio.Event()
        clients = asyncio.create_task(load(gateway_.stub, stop, done, "load"))
        await until(lambda: len(done) >= 300, within=30)
        assert await gateway_.stop(signal.SIGTERM) == 0
        stop.set()
        await clients
    assert set(done) <= stored(data)  # written by the drain before it exited
    assert [p for p in (data / "journal").iterdir() if p.stat().st_size] == []  # drained


async def test_a_30_s_database_outage_under_load_loses_no_call(relay, tmp_path):
    with TempPostgres() as postgres:
        env = {
            "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
            "SWITCHYARD_DATABASE_URL": postgres.url,
        }
        done: list[str] = []
        async with gateway(relay, env) as gateway_:
            stop = asyncio.Event()
            clients = asyncio.create_task(load(gateway_.stub, stop, done, "load", workers=2))
            await until(lambda: len(done) >= 20, within=30)
            postgres.stop()
            during = len(done)
            await asyncio.sleep(30)  # the outage: calls go on being served and journalled
            assert len(done) > during + 100
            with pytest.raises(grpc.aio.AioRpcError) as unreadable:
                await gateway_.stub.GetUsage(pb.GetUsageRequest(), metadata=caller("load"))
            assert unreadable.value.code() is grpc.StatusCode.UNAVAILABLE
            postgres.start()
            await until(lambda: len(done) >= during + 200, within=30)
            stop.set()
            await clients
            calls = await exported(gateway_.stub, "load")
            await gateway_.stop()
        ids = [call.request_id for call in calls]
        assert len(ids) == len(set(ids)) and set(done) <= set(ids)
        connection = await asyncpg.connect(postgres.url)
        try:
            count = await connection.fetchval("SELECT COUNT(*) FROM ledger_calls")
        finally:
            await connection.close()
        assert count == len(ids)


async def test_two_replicas_on_one_postgres_answer_usage_identically(relay, tmp_path, postgres_url):
    replicas = []
    async with contextlib.AsyncExitStack() as stack:
        for name in ("a", "b"):
            env = {
                "SWITCHYARD_DATA_DIR": str(tmp_path / name),
                "SWITCHYARD_DATABASE_URL": postgres_url,
            }
            replicas.append(await stack.enter_async_context(gateway(relay, env)))
        for n in range(6):
            await replicas[n % 2].stub.Query(ask(f"shared {n}"), metadata=caller("team"))
        for replica in replicas:  # each writes what it journalled
            await exported(replica.stub, "team")
        answers = [
            await replica.stub.GetUsage(pb.GetUsageRequest(), metadata=caller("team"))
            for replica in replicas
        ]
        assert answers[0].requests == 6
        for answer in answers:
            answer.ClearField("in_flight")  # each replica's own load, now
        assert answers[0] == answers[1]


async def test_budgets_wait_for_the_ledger_while_the_database_is_down(relay, tmp_path, postgres):
    config = tmp_path / "switchyard.toml"
    config.write_text('[budgets."team"]\nday = "1"\n')
    postgres.stop()
    env = {
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_DATABASE_URL": postgres.url,
        "SWITCHYARD_CONFIG": str(config),
    }
    async with gateway(relay, env) as waiting:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await waiting.stub.Query(ask("budgeted"), metadata=caller("team"))
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "not yet read back from the ledger" in (refused.value.details() or "")
        await waiting.stub.Query(ask("no budget"), metadata=caller("other"))  # served
        postgres.start()

        async def admitted() -> bool:
            try:
                await waiting.stub.Query(ask("budgeted"), metadata=caller("team"))
            except grpc.aio.AioRpcError:
                return False
            return True

        await until(admitted, within=30)
        await waiting.stop()


async def test_a_malformed_database_url_stops_start_up_naming_it_and_no_password(relay):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        env={
            "PATH": "/usr/bin:/bin",
            "SWITCHYARD_LISTEN": "127.0.0.1:0",
            "SWITCHYARD_RELAY_URL": relay.url,
            "SWITCHYARD_RELAY_API_KEY": RELAY_KEY,
            "SWITCHYARD_DATABASE_URL": "postgresql://svc:hunter2@db.internal:99999/ledger",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    text = err.decode()
    assert "SWITCHYARD_DATABASE_URL" in text and "hunter2" not in text


async def test_the_database_password_never_reaches_the_log(relay, tmp_path, postgres_server):
    url = postgres_server.create_database("with_password").replace(
        "switchyard@", "switchyard:hunter2@"
    )
    env = {"SWITCHYARD_DATA_DIR": str(tmp_path / "data"), "SWITCHYARD_DATABASE_URL": url}
    process, port = await start_gateway_process(relay.url, env, stderr=asyncio.subprocess.PIPE)
    running = Running(process, port)
    await running.stub.Query(ask("hello"), metadata=caller("team"))
    assert await running.stop() == 0
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "ledger postgresql://switchyard:***@127.0.0.1" in log  # the start-up line names it
    assert "hunter2" not in log


def test_make_run_keeps_its_data_in_the_working_directory():
    # The README promises `make run` keeps spend across restarts with no set-up: the default
    # data directory is relative, under the working directory, and ignored by git.
    from server.settings import load_settings  # noqa: PLC0415

    assert load_settings({}).ledger.data_dir == ".switchyard"
    assert ".switchyard/" in (Path(__file__).parents[2] / ".gitignore").read_text().split()
