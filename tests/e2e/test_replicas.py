"""Three gateway replicas sharing Redis and PostgreSQL behind nginx: limits hold exactly.

Each test starts its own cluster: ONE relay simulator in the test's process, the
tests' Redis (emptied for the test), a fresh PostgreSQL database, THREE
`python -m server` processes on them (each told SWITCHYARD_REPLICAS=3, so its
share while Redis is down is a third of each limit) and nginx in front of them
(`tests/loadbalancer.py`: nginx's grpc_pass, round robin over the three). Calls
go through nginx unless a test needs one replica in particular (the SIGKILL
test). Which replica served each call is read from nginx's access log
(`upstream=` names the backend that answered), so every test checks that its
load really reached all three.

What is asserted is exact: N of 2N calls under an rpm of N, never more than the
cap in flight at the relay, a budget never overspent, slots and reservations of a
killed replica back within the lease, and a Redis freeze that costs one timeout,
fails budgets closed and ends with the replicas sharing again.

The replicas run with the default 50 ms Redis timeout (the outage test raises it
to 0.25 s, and says why). A busy machine does not trip it: a reply that arrived
while a replica was off the CPU is taken, not timed out (server/state/redis/
client.py); every test still checks the replicas' logs for a degradation rather
than assume there was none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import redis
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1 import gateway_pb2_grpc

from server.catalog import default_catalog
from server.pricing import format_usd, worst_case_cost
from server.simulator import RelaySimulator, SimulatorSettings
from server.tokens import TOKENS_PER_MESSAGE, text_tokens
from tests.helpers import until
from tests.leaks import SCAN
from tests.loadbalancer import TempNginx, nginx_bin
from tests.redis_server import TempRedis

from .conftest import BANNER, RELAY_KEY, caller, details, nanos

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals")

REPLICAS = 3
QUERY = "/switchyard.v1.GatewayService/Query"
ACCESS = re.compile(r'"POST (\S+) [^"]*" \d+ grpc-status=(\S*) upstream=(.*?) upstream_status=')
RECOVERED = "shared state resumed"
DEGRADED = "DEGRADED until it answers"
TIMEOUT = 0.25  # SWITCHYARD_REDIS_TIMEOUT of the outage test (see there)
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OTEL_"))}


@dataclass
class Replica:
    """One gateway process, its port, its log and a stub straight to it (not via nginx)."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    log: Path
    channel: grpc.aio.Channel
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    """The simulator, Redis, the replicas and nginx, with a stub through nginx."""

    sim: RelaySimulator
    redis: TempRedis
    replicas: list[Replica]
    lb: TempNginx
    channel: grpc.aio.Channel
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub
    marks: list[int] = field(default_factory=list)

    def degradations(self) -> dict[str, int]:
        """How often each replica found Redis not answering (and took its fallback)."""
        return {replica.name: replica.text().count(DEGRADED) for replica in self.replicas}

    def replica_at(self, address: str) -> Replica:
        return next(r for r in self.replicas if r.address == address)

    def mark(self) -> int:
        """Where nginx's access log is now (the calls after this are counted by `served`)."""
        return len(self.lb.access_lines())

    async def served(
        self, since: int, calls: int, method: str = QUERY, status: str | None = None
    ) -> Counter[str]:
        """Per replica name, the calls to `method` nginx logged after `since` (waits for
        `calls` lines: nginx writes a line when it has finished the call), only those that
        ended with gRPC status `status` if given."""

        def logged() -> list[tuple[str, str, str]]:
            found = []
            for line in self.lb.access_lines()[since:]:
                match = ACCESS.search(line)
                assert match, line
                path, status, upstream = match.groups()
                found.append((path, status, upstream))
            return found

        await until(lambda: len(logged()) >= calls, within=10)
        counts: Counter[str] = Counter()
        for path, code, upstream in logged():
            if path == method and status in (None, code):
                # after a retry nginx lists every backend tried; the last one answered
                counts[self.replica_at(upstream.split(",")[-1].strip()).name] += 1
        return counts


StartCluster = Callable[..., Awaitable[Cluster]]


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM and wait; SIGKILL if it does not end in time."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@pytest.fixture
async def start_cluster(
    redis_server: TempRedis, redis_url: str, postgres_url: str, tmp_path: Path
) -> AsyncIterator[StartCluster]:
    """Start the cluster (see the module docstring) with a TOML catalog and extra settings;
    everything is stopped after the test, whatever happened."""
    if nginx_bin() is None:
        message = "nginx is not installed: run `make lb-deps`"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    sims: list[RelaySimulator] = []
    processes: list[asyncio.subprocess.Process] = []
    channels: list[grpc.aio.Channel] = []
    balancers: list[TempNginx] = []

    async def start(
        config: str,
        *,
        latency_scale: float,
        tokens_per_second: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> Cluster:
        sim = RelaySimulator(
            SimulatorSettings(
                latency_scale=latency_scale, tokens_per_second=tokens_per_second, api_key=RELAY_KEY
            )
        )
        sims.append(sim)
        url = await sim.start()
        toml = tmp_path / "switchyard.toml"
        toml.write_text(config)
        shared = {
            "SWITCHYARD_REDIS_URL": redis_url,
            "SWITCHYARD_DATABASE_URL": postgres_url,
            "SWITCHYARD_REPLICAS": str(REPLICAS),
            "SWITCHYARD_CONFIG": str(toml),
            "SWITCHYARD_LEDGER_FLUSH_INTERVAL": "0.2",
            "SWITCHYARD_SHUTDOWN_GRACE": "2",
            # The relay budget out of the way: these tests are about the models' own limits.
            "SWITCHYARD_RELAY_RPM": "6000000",
            "SWITCHYARD_RELAY_BURST": "600000",
            **(env or {}),
        }

        async def one(name: str) -> Replica:
            log = tmp_path / f"replica-{name}.log"
            SCAN.watch(log)  # the suite scans every gateway log for leaked secrets
            # As conftest's start_gateway_process, but the process is kept before its banner
            # is awaited, so that one which never says it serves is stopped all the same.
            with log.open("wb") as stderr:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "server",
                    env={
                        **CLEAN,
                        "SWITCHYARD_LISTEN": "127.0.0.1:0",
                        "SWITCHYARD_RELAY_URL": url,
                        "SWITCHYARD_RELAY_API_KEY": RELAY_KEY,
                        "SWITCHYARD_DATA_DIR": str(tmp_path / f"data-{name}"),
                        **shared,
                    },
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )
            processes.append(process)
            assert process.stdout is not None
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            banner = BANNER.search(line)
            assert banner, (line, log.read_text(errors="replace")[-2000:])
            port = int(banner.group(1))
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            channels.append(channel)
            return Replica(
                name, process, port, log, channel, gateway_pb2_grpc.GatewayServiceStub(channel)
            )

        replicas = list(await asyncio.gather(*(one(name) for name in "abc")))
        lb = TempNginx([replica.address for replica in replicas])
        balancers.append(lb)
        await asyncio.to_thread(lb.start)
        channel = grpc.aio.insecure_channel(lb.address)
        channels.append(channel)
        return Cluster(
            sim, redis_server, replicas, lb, channel, gateway_pb2_grpc.GatewayServiceStub(channel)
        )

    try:
        yield start
    finally:
        if redis_server.paused:
            redis_server.resume()
        for channel in channels:
            await channel.close()
        await asyncio.gather(*(stop_process(process) for process in processes))
        for lb in balancers:
            await asyncio.to_thread(lb.close)
        for sim in sims:
            await sim.stop()


@dataclass
class Outcome:
    """One call as the client saw it."""

    code: grpc.StatusCode
    message: str
    started: float
    ended: float
    answer: pb.QueryResponse | None = None

    @property
    def took(self) -> float:
        return self.ended - self.started


async def ask(
    stub: gateway_pb2_grpc.GatewayServiceAsyncStub,
    spec: pb.QuerySpec,
    who: str,
    timeout: float,  # noqa: ASYNC109 (the call's gRPC deadline)
) -> Outcome:
    """One unary Query; its status, message, timing and answer (never raises)."""
    started = time.monotonic()
    try:
        answer = await stub.Query(
            pb.QueryRequest(query=spec), metadata=caller(who), timeout=timeout
        )
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), details(error), started, time.monotonic())
    return Outcome(grpc.StatusCode.OK, "", started, time.monotonic(), answer)


def codes(outcomes: Sequence[Outcome]) -> Counter[str]:
    return Counter(outcome.code.name for outcome in outcomes)


def exact_rpm_spec(model: str, n: int) -> pb.QuerySpec:
    """A call for `model` alone: no fallback, a few tokens, a prompt of its own."""
    return pb.QuerySpec(
        prompt=f"rpm round call {n}", model=model, disable_fallback=True, max_tokens=8
    )


async def exact_rpm_round(cluster: Cluster, model: str, rpm: int) -> None:
    """2 x rpm concurrent calls through nginx with a 1 s deadline: exactly rpm are answered,
    the rest refused at once, and the relay saw exactly rpm requests for the model."""
    before = cluster.sim.stats.model(model).requests
    since = cluster.mark()
    outcomes = await asyncio.gather(
        *(ask(cluster.stub, exact_rpm_spec(model, n), "rpm-test", 1.0) for n in range(2 * rpm))
    )
    assert codes(outcomes) == {"OK": rpm, "RESOURCE_EXHAUSTED": rpm}, codes(outcomes)
    refused = [o for o in outcomes if o.code is grpc.StatusCode.RESOURCE_EXHAUSTED]
    spent = f"{model}'s request budget ({rpm} requests/min) is spent"
    assert all(spent in o.message for o in refused), refused[0].message
    assert cluster.sim.stats.model(model).requests - before == rpm
    served = await cluster.served(since, 2 * rpm)
    assert sorted(served) == ["a", "b", "c"], served  # every replica took its share
    assert sum(served.values()) == 2 * rpm
    admitted = await cluster.served(since, 2 * rpm, status="0")
    assert sum(admitted.values()) == rpm
    print(f"{model} rpm {rpm}: calls per replica {dict(served)}, answered {dict(admitted)}")


# ---- 1. requests a minute -----------------------------------------------------------


async def test_an_rpm_budget_admits_exactly_n_over_three_replicas(start_cluster: StartCluster):
    # Not a multiple of 3 on purpose: each replica on its own third (the fallback while
    # Redis is away, a bucket of 20/3 = 6.67) would answer 6, 18 in all, never 20.
    rpm = 20
    config = f'[models."gemini-2.5-flash"]\nrpm = {rpm}\nfallbacks = []\n'
    cluster = await start_cluster(config, latency_scale=0.05)
    await exact_rpm_round(cluster, "gemini-2.5-flash", rpm)
    # The GCRA state is in Redis, and no replica ever fell back to its share.
    client = redis.Redis.from_url(cluster.redis.url)
    try:
        assert client.exists("switchyard:rate:gemini-2.5-flash's request budget")
    finally:
        client.close()
    assert cluster.degradations() == {"a": 0, "b": 0, "c": 0}  # Redis shared throughout


# ---- 2. a concurrency cap -----------------------------------------------------------


async def test_a_concurrency_cap_holds_across_three_replicas(start_cluster: StartCluster):
    model = "claude-sonnet-4-20250514"  # anthropic's provider cap (10) is above the model's
    config = f'[models."{model}"]\nmax_concurrent = 3\nfallbacks = []\n'
    # latency 0.2: a call takes about 170 ms to its first token, so the 30 calls overlap
    cluster = await start_cluster(config, latency_scale=0.2)
    since = cluster.mark()
    specs = [
        pb.QuerySpec(prompt=f"capped call {n}", model=model, disable_fallback=True, max_tokens=8)
        for n in range(30)
    ]
    outcomes = await asyncio.gather(*(ask(cluster.stub, s, "cap-test", 30.0) for s in specs))
    assert codes(outcomes) == {"OK": 30}, [o.message for o in outcomes if o.message]
    stats = cluster.sim.stats.model(model)
    assert stats.requests == 30  # none refused by the relay, none retried
    assert stats.max_in_flight == 3, stats  # the cap, reached and never passed
    served = await cluster.served(since, 30)
    assert sorted(served) == ["a", "b", "c"] and sum(served.values()) == 30, served
    assert cluster.degradations() == {"a": 0, "b": 0, "c": 0}  # Redis shared throughout


# ---- 3. a spend budget --------------------------------------------------------------


async def test_a_day_budget_is_never_overspent_by_three_replicas(start_cluster: StartCluster):
    model, who, budget = "gemini-2.5-flash", "spender", Decimal("0.01")
    config = f'[budgets."{who}"]\nday = "{budget}"\n'
    cluster = await start_cluster(config, latency_scale=0.05)
    limit = int(budget * 1_000_000_000)

    def spec(n: int) -> pb.QuerySpec:
        # Prompts of one length: every call reserves the same amount.
        return pb.QuerySpec(
            prompt=f"budget call {n:05d}", model=model, disable_fallback=True, max_tokens=32
        )

    route = (
        await cluster.stub.Route(pb.RouteRequest(query=spec(0)), metadata=caller(who), timeout=5)
    ).route
    reservation = nanos(route.estimated_cost.max)  # one call's hold: input + 32 tokens out
    assert route.admission.admitted and reservation > 0
    since = cluster.mark()
    outcomes: list[Outcome] = []
    sent = 0
    # Rounds of 20 concurrent calls until some are refused ...
    while not any(o.code is grpc.StatusCode.RESOURCE_EXHAUSTED for o in outcomes):
        outcomes += await asyncio.gather(
            *(ask(cluster.stub, spec(sent + n), who, 10.0) for n in range(20))
        )
        sent += 20
        assert sent <= 200, codes(outcomes)
    # ... then one at a time until a call is refused with nothing else in flight: then what
    # is left of the budget is less than one reservation.
    while True:
        outcome = await ask(cluster.stub, spec(sent), who, 10.0)
        outcomes.append(outcome)
        sent += 1
        if outcome.code is not grpc.StatusCode.OK:
            break
        assert sent <= 300
    count = codes(outcomes)
    assert set(count) == {"OK", "RESOURCE_EXHAUSTED"}, count
    refused = [o for o in outcomes if o.code is grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert all(
        f"caller '{who}' has used" in o.message and "daily budget of $0.01" in o.message
        for o in refused
    ), refused[0].message
    answers = [o.answer for o in outcomes if o.answer is not None]
    # The relay counts input as the gateway estimates it (server/tokens.py, the same rule),
    # and output is capped by max_tokens: no call can cost more than its reservation, so the
    # budget bound below is exact, with no error term.
    for answer in answers:
        assert answer.usage.input_tokens == route.estimated_input_tokens
        assert answer.usage.output_tokens <= 32
        assert nanos(answer.cost) <= reservation
    spent = sum(nanos(answer.cost) for answer in answers)
    print(
        f"budget: {len(answers)} answered, {len(refused)} refused of {sent};"
        f" spent {format_usd(spent)} of {budget}, reservation {format_usd(reservation)}"
    )
    assert limit - reservation < spent <= limit

    # The ledger (PostgreSQL, written by all three) agrees to the nano-dollar on every
    # replica, once each replica's writer has flushed (a replica adds only its own unwritten
    # calls to what the database holds); and so does the budget store's spend (Redis).
    async def reports() -> list[pb.GetUsageResponse]:
        return [
            await r.stub.GetUsage(pb.GetUsageRequest(), metadata=caller(who), timeout=5)
            for r in cluster.replicas
        ]

    async def flushed() -> bool:
        return all(report.requests == sent for report in await reports())

    await until(flushed, within=10)
    for report in await reports():
        assert (report.requests, report.errors, nanos(report.cost)) == (sent, len(refused), spent)
        assert [(b.period, nanos(b.limit), nanos(b.spent)) for b in report.budgets] == [
            ("day", limit, spent)
        ]
    served = await cluster.served(since, sent)
    assert sorted(served) == ["a", "b", "c"] and sum(served.values()) == sent, served
    assert cluster.degradations() == {"a": 0, "b": 0, "c": 0}  # Redis shared throughout


# ---- 4. a replica killed mid-stream -------------------------------------------------


async def test_a_killed_replica_gives_back_its_slot_and_reservation_within_the_lease(
    start_cluster: StartCluster,
):
    model, who, ttl = "deepseek-v3.2", "holder", 3.0
    # The stream that holds the slot: 200 tokens at 2 a second (latency_scale 1,
    # tokens_per_second 2), far longer than the test. Other calls answer one token at once.
    hold = pb.QuerySpec(
        prompt="hold the slot [[sim latency_ms=5 tokens=200]]",
        model=model,
        disable_fallback=True,
        max_tokens=200,
    )

    def quick(n: int) -> pb.QuerySpec:
        return pb.QuerySpec(
            prompt=f"quick call {n} [[sim latency_ms=5 tokens=1]]",
            model=model,
            disable_fallback=True,
            max_tokens=8,
        )

    # The holder's day budget is exactly the stream's reservation (its largest cost: the
    # input estimate at the input price plus max_tokens at the output price).
    spec = default_catalog().models[model]
    estimate = TOKENS_PER_MESSAGE + text_tokens(hold.prompt)
    reservation = worst_case_cost(spec, estimate, hold.max_tokens)
    config = (
        f'[models."{model}"]\nmax_concurrent = 1\nfallbacks = []\n'
        f'[budgets."{who}"]\nday = "{format_usd(reservation)}"\n'
    )
    cluster = await start_cluster(
        config,
        latency_scale=1.0,
        tokens_per_second=2.0,
        env={"SWITCHYARD_REDIS_LEASE_TTL": str(int(ttl))},
    )
    a, b = cluster.replicas[0], cluster.replicas[1]

    async def admission() -> pb.Admission:
        request = pb.RouteRequest(query=quick(0))
        return (await b.stub.Route(request, metadata=caller(who), timeout=5)).route.admission

    route = (await b.stub.Route(pb.RouteRequest(query=hold), metadata=caller(who), timeout=5)).route
    assert (route.estimated_input_tokens, nanos(route.estimated_cost.max)) == (
        estimate,
        reservation,
    )
    assert route.admission.admitted

    # The stream starts on replica A (directly, not through nginx) and holds both.
    stream = a.stub.StreamQuery(pb.StreamQueryRequest(query=hold), metadata=caller(who), timeout=60)
    first = await stream.read()
    assert isinstance(first, pb.StreamQueryResponse) and first.HasField("start"), first
    assert cluster.sim.stats.model(model).in_flight == 1
    # Replica B sees A's slot: a call there waits for it as long as its deadline allows
    # (then the client's deadline or the gateway's "busy" ends it, whichever is first) and
    # never reaches the relay. And B sees A's hold: the holder is refused at once.
    busy = await ask(b.stub, quick(1), "anyone", 0.5)
    assert busy.code is grpc.StatusCode.DEADLINE_EXCEEDED or (
        busy.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        and f"model {model} has 1 calls in flight, its limit" in busy.message
    ), busy
    assert cluster.sim.stats.model(model).requests == 1, cluster.sim.stats.model(model)
    over = await ask(b.stub, quick(2), who, 5.0)
    assert over.code is grpc.StatusCode.RESOURCE_EXHAUSTED, over
    assert "(calls in flight included)" in over.message, over.message
    assert not (await admission()).admitted

    # SIGKILL: A gives nothing back; its leases stop being renewed and expire.
    os.kill(a.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    await a.process.wait()
    assert await stream.code() is grpc.StatusCode.UNAVAILABLE  # the caller of A sees it die
    still = await ask(b.stub, quick(3), who, 5.0)
    assert still.code is grpc.StatusCode.RESOURCE_EXHAUSTED, still  # the hold is not gone yet

    async def slot_back() -> float:
        """A call for the model on B, waiting up to 8 s for the slot: when it answered."""
        outcome = await ask(b.stub, quick(4), "anyone", 8.0)
        assert outcome.code is grpc.StatusCode.OK, outcome
        return outcome.ended - killed

    async def budget_back() -> float:
        """Route's admission for the holder, asked every 50 ms: when it turned true."""
        while not (await admission()).admitted:
            assert time.monotonic() - killed < 8, "the reservation never came back"
            await asyncio.sleep(0.05)
        return time.monotonic() - killed

    slot_after, budget_after = await asyncio.gather(slot_back(), budget_back())
    print(f"after SIGKILL: slot back in {slot_after:.2f} s, reservation in {budget_after:.2f} s")
    # Expired, not released: the lease was renewed at most ttl/3 before the kill.
    for after in (slot_after, budget_after):
        assert 1.0 < after <= ttl + 1.5
    answered = await ask(b.stub, quick(5), who, 8.0)  # and the holder is served again
    assert answered.code is grpc.StatusCode.OK, answered
    assert cluster.degradations() == {"a": 0, "b": 0, "c": 0}  # Redis shared throughout


# ---- 4b. identical calls on every replica --------------------------------------------


async def test_identical_calls_on_three_replicas_make_one_relay_call_and_a_dead_leader_frees_them(
    start_cluster: StartCluster,
):
    model = "gemini-2.5-flash"
    cluster = await start_cluster("", latency_scale=0)
    a, b, c = cluster.replicas

    def spec(prompt: str) -> pb.QuerySpec:
        # Room for the whole answer: only complete answers are stored, and so shared.
        return pb.QuerySpec(prompt=prompt, model=model, disable_fallback=True, max_tokens=512)

    def marked() -> bool:
        """Is a flight marked in Redis? Redis sends the replicas' watches the news of a
        write before it answers anything after it, so once this says yes, a call sent to
        another replica after it finds the news there."""
        with redis.Redis.from_url(cluster.redis.url) as client:
            return any(client.scan_iter(match="*:f"))

    async def leading(replica: Replica, asked: pb.QuerySpec) -> asyncio.Task[Outcome]:
        """`asked` on `replica`, once it is at the relay with its flight marked."""
        before = cluster.sim.stats.model(model).requests
        task = asyncio.create_task(ask(replica.stub, asked, "flights", 30.0))
        await until(lambda: cluster.sim.stats.model(model).requests == before + 1, within=10)
        await until(marked, within=5)
        return task

    # 1. The leader on A takes 1.5 s at the relay; identical calls on B and C (and two more
    # on A, and a stream on C) wait for it and are served its answer: the relay is asked once.
    once = spec("one question for every replica [[sim latency_ms=1500]]")
    leader = await leading(a, once)

    async def stream_on(replica: Replica) -> list[pb.StreamQueryResponse]:
        call = replica.stub.StreamQuery(
            pb.StreamQueryRequest(query=once), metadata=caller("flights"), timeout=30.0
        )
        return [message async for message in call]

    streaming = asyncio.create_task(stream_on(c))
    rest = await asyncio.gather(*(ask(r.stub, once, "flights", 30.0) for r in (b, c, a, b, c)))
    streamed = await streaming
    first = await leader
    assert codes([first, *rest]) == {"OK": 6}, [o.message for o in (first, *rest)]
    assert cluster.sim.stats.model(model).requests == 1, cluster.sim.stats.model(model)
    assert first.answer is not None and not first.answer.cached
    for outcome in rest:
        assert outcome.answer is not None and outcome.answer.cached, outcome
        assert outcome.answer.content == first.answer.content
        assert outcome.took < 2.5  # served when the leader's answer was stored
    # A stream waiting on another replica gets the answer replayed: start, text, end.
    assert [m.WhichOneof("event") for m in streamed] == ["start", "delta", "end"]
    assert streamed[1].delta.text == first.answer.content and streamed[-1].end.cached

    # 2. A leader that dies mid-call holds nobody past its flight's lease (5 s): the calls
    # waiting on B and C ask the relay themselves and are answered.
    slow = spec("a question whose replica dies [[sim latency_ms=20000]]")
    doomed = await leading(a, slow)
    waiting = [asyncio.create_task(ask(r.stub, slow, "flights", 30.0)) for r in (b, c)]
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in waiting)  # they wait for A's answer
    os.kill(a.process.pid, signal.SIGKILL)
    killed = time.monotonic()
    await a.process.wait()
    assert (await doomed).code is grpc.StatusCode.UNAVAILABLE
    before = cluster.sim.stats.model(model).requests
    await until(lambda: cluster.sim.stats.model(model).requests > before, within=10)
    freed = time.monotonic() - killed
    print(f"after SIGKILL of the leader: its followers asked the relay in {freed:.2f} s")
    # The mark expires at most 5 s after its last renewal; a waiter sees that at once (the
    # expiry is news) or at its next look (each second); a busy machine gets a second more.
    assert freed <= 5.0 + 2.0
    for task in waiting:
        task.cancel()  # each now waits 20 s for its own answer; that much is shown
    assert cluster.degradations() == {"a": 0, "b": 0, "c": 0}


# ---- 5. Redis frozen under load -----------------------------------------------------


async def poll(check: Callable[[], bool], within: float) -> float:
    """Check every 20 ms (the load keeps the loop busy: no spinning) until `check()` holds;
    the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_frozen_redis_costs_one_timeout_fails_budgets_closed_and_sharing_resumes(
    start_cluster: StartCluster,
):
    # rpm 16: the replicas' thirds (buckets of 5.33) would answer 15 of the last round, not 16
    load_model, rpm_model, rpm, metered = "gemini-2.5-flash", "gpt-4.1", 16, "metered"
    config = (
        # Caps far above the load, so the replicas' thirds while Redis is away never queue a
        # call: what is measured is the cost of the outage, not of a smaller limit.
        f'[models."{load_model}"]\nmax_concurrent = 90\n'
        f'[models."{rpm_model}"]\nrpm = {rpm}\nfallbacks = []\n'
        "[limits.provider_concurrency]\ngoogle = 90\nopenai = 60\n"
        f'[budgets."{metered}"]\nday = "100"\n'
    )
    # What an outage costs is one Redis timeout per call. 250 ms rather than the default
    # 50 ms: a call makes about four Redis operations, so only a timeout above
    # (1 s - 160 ms) / 4 lets the 1 s bound below tell "one timeout, then the link is
    # known down" from "a timeout per operation".
    cluster = await start_cluster(
        config, latency_scale=0.05, env={"SWITCHYARD_REDIS_TIMEOUT": str(TIMEOUT)}
    )
    stop = asyncio.Event()
    outcomes: dict[str, list[Outcome]] = {"free": [], metered: []}

    async def worker(who: str, index: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            # 150 ms to the first token, then 8 tokens at about a millisecond each.
            spec = pb.QuerySpec(
                prompt=f"load {who} {index}-{n} [[sim latency_ms=150]]",
                model=load_model,
                disable_fallback=True,
                max_tokens=8,
            )
            outcome = await ask(cluster.stub, spec, who, 5.0)
            outcomes["free" if who != metered else metered].append(outcome)
            if outcome.code is not grpc.StatusCode.OK:
                await asyncio.sleep(0.05)  # refused: a moment before the next try

    since = cluster.mark()
    workers = [asyncio.create_task(worker(f"free-{i}", i)) for i in range(16)]
    workers += [asyncio.create_task(worker(metered, i)) for i in range(4)]
    try:
        await asyncio.sleep(1.5)  # the load, with Redis answering
        cluster.redis.pause()
        paused = time.monotonic()
        try:
            await asyncio.sleep(5.0)  # the outage lasts 5 s by design
        finally:
            cluster.redis.resume()
        resumed = time.monotonic()
        recovery = await poll(
            lambda: all(RECOVERED in replica.text() for replica in cluster.replicas), 5.0
        )
        recovered = time.monotonic()
        await asyncio.sleep(1.0)  # the load, after the outage
    finally:
        stop.set()
        await asyncio.gather(*workers)

    free, paid = outcomes["free"], outcomes[metered]
    everything = free + paid
    worst = max(everything, key=lambda o: o.took)
    during = [o for o in free if paused < o.started and o.ended < resumed]
    refused = [o for o in paid if o.code is not grpc.StatusCode.OK]
    print(
        f"redis frozen 5 s under load: {len(everything)} calls, worst {worst.took * 1000:.0f} ms"
        f" (sent {worst.started - paused:+.2f} s from SIGSTOP)"
        f" ({len(during)} answered while frozen); {len(refused)} of {len(paid)} metered calls"
        f" refused; all three replicas shared again {recovery:.2f} s after SIGCONT"
    )
    # Callers without a budget never noticed: every call answered, none slower than one
    # Redis timeout (once it fires the link is down and nothing waits on Redis) plus the
    # call's own work (about 160 ms at the relay) plus scheduling on a busy machine.
    assert codes(free) == {"OK": len(free)}, Counter(o.message for o in free if o.message)
    slowest = sorted(everything, key=lambda o: -o.took)[:5]
    assert worst.took < 1.0, [(round(o.took, 3), round(o.started - paused, 3)) for o in slowest]
    assert len(during) >= 50
    # Budgets failed closed: a metered call that started while Redis was frozen was
    # refused with UNAVAILABLE, saying why; none was refused outside the outage.
    unreachable = "has a spend budget and the budget store (Redis) is unreachable"
    assert refused and all(
        o.code is grpc.StatusCode.UNAVAILABLE and unreachable in o.message for o in refused
    ), Counter((o.code.name, o.message) for o in refused)
    # (a call sent a few milliseconds before SIGSTOP reaches its budget check after it)
    outside = [
        (round(o.started - paused, 3), round(o.started - recovered, 3))
        for o in refused
        if not paused - 0.1 < o.started < recovered
    ]
    assert not outside, outside
    assert all(
        o.code is not grpc.StatusCode.OK for o in paid if paused + 0.05 < o.started < resumed
    )
    assert any(o.code is grpc.StatusCode.OK for o in paid if o.ended < paused)
    assert any(o.code is grpc.StatusCode.OK for o in paid if o.started > recovered)
    # Each replica went to its fallback once and came back once, within 2 s of SIGCONT.
    assert cluster.degradations() == {"a": 1, "b": 1, "c": 1}
    assert all(replica.text().count(RECOVERED) == 1 for replica in cluster.replicas)
    assert recovery < 2.0
    served = await cluster.served(since, len(everything))
    assert sorted(served) == ["a", "b", "c"], served
    # And they share again: a fresh rpm budget admits exactly rpm of 2 x rpm.
    await exact_rpm_round(cluster, rpm_model, rpm)
