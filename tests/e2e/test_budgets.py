"""Budgets end to end: the race for the last dollars, refusals, Route's admission,
cache hits past the budget, and budget-aware routing."""

import asyncio

import grpc
from google.rpc import error_details_pb2
from switchyard.v1 import gateway_pb2 as pb

from tests.helpers import until

from .conftest import Gateway, StartGateway, caller, details, nanos, query
from .test_errors import rich_details, rpc_error

GEMINI = "gemini-2.5-flash"
# Every racing prompt is "race NNN [[sim fault=stall]]": 28 bytes -> 7 + 4 = 11 input tokens.
# The call is pinned to gemini-2.5-flash without fallback and max_tokens 1,000, so each
# reservation is 11 * 2,500 + 1,000 * 10,000 = 27,500 + 10,000,000 = 10,027,500 nano-dollars.
RESERVATION = 10_027_500
# A budget of 7.5 reservations: exactly 7 calls fit, the 8th would pass it.
BUDGET = 75_206_250  # $0.07520625


def race_spec(i: int) -> pb.QuerySpec:
    return query(
        f"race {i:03d} [[sim fault=stall]]", model=GEMINI, disable_fallback=True, max_tokens=1000
    )


async def budget_gateway(start_gateway: StartGateway, tmp_path, toml: str) -> Gateway:
    path = tmp_path / "switchyard.toml"
    path.write_text(toml)
    return await start_gateway(env={"SWITCHYARD_CONFIG": str(path)})


async def test_100_concurrent_calls_race_for_the_last_dollars(start_gateway, tmp_path):
    gateway = await budget_gateway(
        start_gateway, tmp_path, '[budgets."racer"]\nday = "0.07520625"\n'
    )
    budgets = gateway.app.pipeline.stores.budgets
    refused: list[grpc.aio.AioRpcError] = []
    all_refused = asyncio.Event()

    async def one(i: int) -> None:
        try:
            await gateway.stub.Query(pb.QueryRequest(query=race_spec(i)), metadata=caller("racer"))
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                refused.append(error)
                if len(refused) == 93:
                    all_refused.set()
            else:
                raise

    tasks = [asyncio.create_task(one(i)) for i in range(100)]
    # floor(75,206,250 / 10,027,500) = 7 admitted; the other 93 are refused at once
    async with asyncio.timeout(10):
        await all_refused.wait()
    await gateway.sim.wait_until(lambda s: s.requests == 7, timeout=5)
    assert len(refused) == 93 and gateway.sim.stats.requests == 7
    [day] = await budgets.status("racer")
    assert day.spent == 7 * RESERVATION == 70_192_500 <= BUDGET
    # Route gives the 101st call the same answer Query gives
    route = await gateway.stub.Route(
        pb.RouteRequest(query=race_spec(100)), metadata=caller("racer")
    )
    assert not route.route.admission.admitted
    assert route.route.admission.reason == details(refused[0])
    message = details(refused[0])
    assert "daily budget of $0.07520625" in message
    assert "used $0.0701925" in message  # 7 reservations in flight
    assert "up to $0.0100275" in message and "resets at" in message
    assert "T00:00:00Z" in message
    # GetUsage shows the reservations in flight
    usage = await gateway.stub.GetUsage(pb.GetUsageRequest(), metadata=caller("racer"))
    [budget] = usage.budgets
    assert (budget.period, nanos(budget.limit), nanos(budget.spent)) == ("day", BUDGET, 70_192_500)
    # the stalled calls are abandoned: nothing was billed, so the budget is whole again
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    async def released() -> bool:
        [day] = await budgets.status("racer")
        return day.spent == 0

    await until(released)
    # other callers have no budget
    assert (await gateway.stub.Route(pb.RouteRequest(query=race_spec(0)))).route.admission.admitted


async def test_refusal_has_retry_info_and_quota_failure_and_cache_hits_still_serve(
    start_gateway, tmp_path
):
    # 47 bytes -> 16 input tokens; gemini-2.5-flash alone with max_tokens 8:
    # reservation 16 * 2,500 + 8 * 10,000 = 120,000; actual cost of 8 tokens: the same.
    gateway = await budget_gateway(start_gateway, tmp_path, '[budgets]\nday = "0.0002"\n')
    spec = query(
        "What is the capital of France? [[sim tokens=8]]",
        model=GEMINI,
        disable_fallback=True,
        max_tokens=8,
    )
    first = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert nanos(first.cost) == 120_000  # spent $0.00012 of $0.0002
    other = query(
        "Another question entirely? [[sim tokens=8]]",
        model=GEMINI,
        disable_fallback=True,
        max_tokens=8,
    )
    error = await rpc_error(gateway.stub.Query(pb.QueryRequest(query=other)))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "caller 'anonymous' has used $0.00012 of its daily budget of $0.0002" in details(error)
    retry = error_details_pb2.RetryInfo()
    quota = error_details_pb2.QuotaFailure()
    found = rich_details(error)
    assert any(d.Unpack(retry) for d in found) and retry.retry_delay.seconds <= 86_400
    assert any(d.Unpack(quota) for d in found)
    # a stream is refused the same way, before any message
    stream = gateway.stub.StreamQuery(pb.StreamQueryRequest(query=other))
    error = await rpc_error(stream.read())
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # the repeat costs nothing: the cache serves it, budget or not, and Route agrees
    route = await gateway.stub.Route(pb.RouteRequest(query=spec))
    assert route.route.admission.admitted and route.route.admission.reason == ""
    again = await gateway.stub.Query(pb.QueryRequest(query=spec))
    assert again.cached and nanos(again.cost) == 0
    assert gateway.sim.stats.requests == 1


async def test_near_its_budget_an_auto_call_is_routed_to_a_cheaper_model(start_gateway, tmp_path):
    # a $1.00 daily budget, and cheaper routing from 0.01% of it ($0.0001) on
    gateway = await budget_gateway(
        start_gateway, tmp_path, '[budgets]\ndowngrade_at = 0.0001\n[budgets."team"]\nday = "1"\n'
    )
    complex_query = query("Compare and evaluate the logic of these two algorithms [[sim tokens=3]]")
    before = await gateway.stub.Route(pb.RouteRequest(query=complex_query), metadata=caller("team"))
    assert before.route.model == "claude-sonnet-4-20250514"
    # spend $0.00012 (16 * 2,500 + 8 * 10,000 nano-dollars) on a simple question
    await gateway.stub.Query(
        pb.QueryRequest(query=query("What is the capital of France? [[sim tokens=8]]")),
        metadata=caller("team"),
    )
    route = (
        await gateway.stub.Route(pb.RouteRequest(query=complex_query), metadata=caller("team"))
    ).route
    assert route.model == "gpt-4.1"
    assert "cheaper gpt-4.1 instead of claude-sonnet-4-20250514" in route.reason
    assert "used $0.00012 of its daily budget of $1.00 (under 1%)" in route.reason
    answer = await gateway.stub.Query(pb.QueryRequest(query=complex_query), metadata=caller("team"))
    assert answer.model == "gpt-4.1" and answer.route.reason == route.reason
    # a caller without a budget is never rerouted
    other = await gateway.stub.Route(pb.RouteRequest(query=complex_query))
    assert other.route.model == "claude-sonnet-4-20250514"
