"""The cache stage: hits cost nothing, streams replay, identical calls fly once."""

import asyncio

import pytest

from server.domain import (
    Attempt,
    CacheMode,
    CacheUse,
    Completion,
    FinishReason,
    Identity,
    Outcome,
    StreamStart,
    TextDelta,
    Usage,
)
from server.errors import (
    BudgetExceededError,
    DeadlineExceededError,
    RateLimitedError,
    RelayUnavailableError,
    StreamInterruptedError,
)
from server.pipeline.cache import CacheStage
from server.settings import CacheSettings
from server.state.memory import MemoryResponseStore
from tests.helpers import FakeClock, until

from .fakes import CATALOG, routed_call

GEMINI = CATALOG.models["gemini-2.5-flash"]
COST = 16 * 2_500 + 8 * 10_000  # 16 input and 8 output tokens on gemini-2.5-flash


class Relay:
    """A Call-level stand-in for everything below the cache: counts calls, may wait on a gate."""

    def __init__(self, finish=FinishReason.STOP, error=None, gated=False):
        self.calls = 0
        self.finish = finish
        self.errors = list(error) if isinstance(error, list) else [error]
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.started = asyncio.Event()

    def _bill(self, call):
        call.attempts.append(Attempt(GEMINI, Outcome.SUCCESS, 0.1, 200, "", Usage(16, 8), COST))

    async def query(self, call):
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        self._bill(call)
        return Completion(GEMINI, "Paris is the capital.", Usage(16, 8), self.finish)

    async def stream(self, call):
        self.calls += 1
        self.started.set()
        await self.gate.wait()
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        yield StreamStart(GEMINI)
        for part in ("Paris ", "is the ", "capital."):
            yield TextDelta(part)
        self._bill(call)
        yield Completion(GEMINI, "", Usage(16, 8), self.finish)


def stage_for(relay, **settings):
    clock = FakeClock()
    return CacheStage(relay, MemoryResponseStore(CacheSettings(**settings), clock), clock=clock)


def ask(text="capital of France?", tenant="svc", **kwargs):
    call = routed_call(text, **kwargs)
    call.identity = Identity(tenant)
    return call


def joined(stage, count):
    """A predicate: `count` calls joined a flight of `stage`."""
    return lambda: stage.joined == count


async def collect(stream):
    return [event async for event in stream]


async def test_a_repeat_is_served_from_the_cache_at_no_cost_with_the_saving():
    relay = Relay()
    stage = stage_for(relay)
    first = ask()
    await stage.query(first)
    assert first.cache is CacheUse.MISS and first.cost == COST
    second = ask()
    answer = await stage.query(second)
    assert relay.calls == 1
    assert answer.content == "Paris is the capital." and answer.model is GEMINI
    assert second.cached and second.cost == 0 and second.attempts == []
    assert second.saved_cost == COST and answer.usage == Usage()


async def test_tenants_never_share_an_entry():
    relay = Relay()
    stage = stage_for(relay)
    await stage.query(ask(tenant="a"))
    other = ask(tenant="b")
    await stage.query(other)
    assert relay.calls == 2 and not other.cached


async def test_a_stream_hit_replays_start_text_end():
    relay = Relay()
    stage = stage_for(relay)
    live = await collect(stage.stream(ask()))
    call = ask()
    replay = await collect(stage.stream(call))
    assert relay.calls == 1
    assert [type(e) for e in live] == [StreamStart, TextDelta, TextDelta, TextDelta, Completion]
    assert [type(e) for e in replay] == [StreamStart, TextDelta, Completion]
    assert replay[0].model is GEMINI and replay[1].text == "Paris is the capital."
    assert replay[2].finish_reason is FinishReason.STOP
    assert call.cached and call.saved_cost == COST and call.first_token_at is not None


@pytest.mark.parametrize("finish", [FinishReason.LENGTH, FinishReason.CONTENT_FILTER])
async def test_truncated_or_filtered_answers_are_not_stored(finish):
    relay = Relay(finish=finish)
    stage = stage_for(relay)
    await stage.query(ask())
    await collect(stage.stream(ask()))
    await stage.query(ask())
    assert relay.calls == 3


async def test_errors_are_not_stored():
    relay = Relay(error=[RelayUnavailableError("down", 503)])
    stage = stage_for(relay)
    with pytest.raises(RelayUnavailableError):
        await stage.query(ask())
    call = ask()
    await stage.query(call)
    assert relay.calls == 2 and not call.cached


async def test_bypass_refresh_and_temperature():
    relay = Relay()
    stage = stage_for(relay)
    await stage.query(ask())
    bypass = ask(cache_mode=CacheMode.BYPASS)
    await stage.query(bypass)
    warm = ask(temperature=0.7)
    await stage.query(warm)
    assert relay.calls == 3 and bypass.cache is CacheUse.NONE and warm.cache is CacheUse.NONE
    refresh = ask(cache_mode=CacheMode.REFRESH)
    await stage.query(refresh)
    assert relay.calls == 4 and refresh.cache is CacheUse.REFRESH
    again = ask()
    await stage.query(again)
    assert relay.calls == 4 and again.saved_cost == COST  # the refreshed answer


async def test_identical_concurrent_calls_make_one_relay_call():
    relay = Relay(gated=True)
    stage = stage_for(relay)
    calls = [ask() for _ in range(10)]
    tasks = [asyncio.create_task(stage.query(call)) for call in calls[:5]]
    streams = [asyncio.create_task(collect(stage.stream(call))) for call in calls[5:]]
    await relay.started.wait()
    await until(lambda: stage.joined == 9)  # every other call found the leader's flight
    relay.gate.set()
    answers = await asyncio.gather(*tasks)
    replays = await asyncio.gather(*streams)
    assert relay.calls == 1
    assert {a.content for a in answers} == {"Paris is the capital."}
    assert all([type(e) for e in r] == [StreamStart, TextDelta, Completion] for r in replays)
    assert sum(call.cost for call in calls) == COST  # billed once
    assert sum(call.cached for call in calls) == 9
    assert {call.saved_cost for call in calls if call.cached} == {COST}


async def test_a_waiter_takes_over_when_the_leader_is_cancelled():
    relay = Relay(gated=True)
    stage = stage_for(relay)
    leader = asyncio.create_task(stage.query(ask()))
    await relay.started.wait()
    waiter_call = ask()
    waiter = asyncio.create_task(stage.query(waiter_call))
    await until(lambda: stage.joined == 1)  # joined the leader's flight
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    relay.gate.set()
    await waiter
    assert relay.calls == 2  # the waiter asked for itself
    assert waiter_call.cost == COST and not waiter_call.cached


async def test_a_cancelled_waiter_leaves_the_others_waiting():
    relay = Relay(gated=True)
    stage = stage_for(relay)
    leader = asyncio.create_task(stage.query(ask()))
    await relay.started.wait()
    quitter = asyncio.create_task(stage.query(ask()))
    stayer_call = ask()
    stayer = asyncio.create_task(stage.query(stayer_call))
    await until(lambda: stage.joined == 2)  # joined the leader's flight
    quitter.cancel()
    relay.gate.set()
    await leader
    await stayer
    assert relay.calls == 1 and stayer_call.cached


async def test_waiters_share_an_error_about_the_request():
    relay = Relay(gated=True, error=[RelayUnavailableError("down", 503)])
    stage = stage_for(relay)
    leader = asyncio.create_task(stage.query(ask()))
    await relay.started.wait()
    waiter = asyncio.create_task(stage.query(ask()))
    await until(lambda: stage.joined == 1)  # joined the leader's flight
    relay.gate.set()
    for task in (leader, waiter):
        with pytest.raises(RelayUnavailableError):
            await task
    assert relay.calls == 1


@pytest.mark.parametrize(
    "private",
    [
        DeadlineExceededError("gemini-2.5-flash"),
        StreamInterruptedError(RelayUnavailableError("x"), 3),
    ],
)
async def test_waiters_retry_after_a_failure_of_the_leaders_own(private):
    relay = Relay(gated=True, error=[private])
    stage = stage_for(relay)
    leader = asyncio.create_task(stage.query(ask()))
    await relay.started.wait()
    waiter_call = ask()
    waiter = asyncio.create_task(stage.query(waiter_call))
    await until(lambda: stage.joined == 1)  # joined the leader's flight
    relay.gate.set()
    with pytest.raises(type(private)):
        await leader
    await waiter
    assert relay.calls == 2 and waiter_call.cost == COST


async def test_a_stream_leader_closed_early_lets_a_waiter_lead():
    relay = Relay(gated=True)
    stage = stage_for(relay)
    stream = stage.stream(ask())
    first = asyncio.create_task(anext(stream))
    await relay.started.wait()
    waiter_call = ask()
    waiter = asyncio.create_task(stage.query(waiter_call))
    await until(lambda: stage.joined == 1)  # joined the leader's flight
    relay.gate.set()
    assert isinstance(await first, StreamStart)
    await stream.aclose()  # the caller went away before the end
    await waiter
    assert relay.calls == 2 and not waiter_call.cached


async def test_a_spent_budget_is_shared_but_a_rate_limit_is_not():
    for error, calls in (
        (BudgetExceededError("spent", 10.0), 1),
        (RateLimitedError("busy", 1.0), 2),
    ):
        relay = Relay(gated=True, error=[error])
        stage = stage_for(relay)
        leader = asyncio.create_task(stage.query(ask()))
        await relay.started.wait()
        waiter = asyncio.create_task(stage.query(ask()))
        await until(joined(stage, 1))
        relay.gate.set()
        with pytest.raises(type(error)):
            await leader
        if calls == 1:
            with pytest.raises(BudgetExceededError):
                await waiter
        else:
            await waiter  # it asked again, and got an answer
        assert relay.calls == calls


class PacedRelay(Relay):
    """A stream that stops after each part until the test lets the next one through."""

    def __init__(self, error_after=None):
        super().__init__()
        self.steps: asyncio.Queue[None] = asyncio.Queue()
        self.error_after = error_after  # (parts sent, error) to fail part-way

    async def stream(self, call):
        self.calls += 1
        self.started.set()
        yield StreamStart(GEMINI)
        for index, part in enumerate(("Paris ", "is the ", "capital.")):
            if self.error_after is not None and index == self.error_after[0]:
                raise self.error_after[1]
            yield TextDelta(part)
            await self.steps.get()
        self._bill(call)
        yield Completion(GEMINI, "", Usage(16, 8), self.finish)


async def next_events(stream, count):
    return [await anext(stream) for _ in range(count)]


async def test_a_stream_follows_an_identical_stream_live_and_pays_nothing():
    relay = PacedRelay()
    stage = stage_for(relay)
    leader = stage.stream(ask())
    assert await next_events(leader, 2) == [StreamStart(GEMINI), TextDelta("Paris ")]
    follower_call = ask()
    follower = stage.stream(follower_call)
    # Joined late: it catches up with what the leader already had, before the leader goes on.
    assert await next_events(follower, 2) == [StreamStart(GEMINI), TextDelta("Paris ")]
    assert follower_call.first_token_at is not None
    waiting = asyncio.create_task(anext(follower))  # nothing new yet: it waits for the leader
    relay.steps.put_nowait(None)
    assert await next_events(leader, 1) == [TextDelta("is the ")]
    assert await waiting == TextDelta(
        "is the "
    )  # live, while the leader's answer is still unfinished
    relay.steps.put_nowait(None)
    relay.steps.put_nowait(None)
    rest = await collect(leader)
    followed = await collect(follower)
    assert rest[0] == TextDelta("capital.") and isinstance(rest[-1], Completion)
    assert followed[0] == TextDelta("capital.") and isinstance(followed[-1], Completion)
    assert relay.calls == 1
    assert follower_call.cached and follower_call.cost == 0 and follower_call.attempts == []
    assert follower_call.saved_cost == COST


async def test_a_follower_that_passed_text_on_fails_when_the_leader_quits():
    relay = PacedRelay()
    stage = stage_for(relay)
    leader = stage.stream(ask())
    await next_events(leader, 2)
    follower_call = ask()
    follower = stage.stream(follower_call)
    assert await next_events(follower, 2) == [StreamStart(GEMINI), TextDelta("Paris ")]
    await leader.aclose()  # the leader's caller went away part-way
    with pytest.raises(StreamInterruptedError) as raised:
        await anext(follower)
    assert "after 2 tokens were delivered" in raised.value.message  # "Paris " is 2 tokens
    assert "shared ended early" in raised.value.message
    assert relay.calls == 1 and follower_call.cost == 0 and not follower_call.cached


async def test_a_follower_that_passed_nothing_on_leads_when_the_leader_quits():
    relay = Relay(gated=True)
    stage = stage_for(relay)
    leader = stage.stream(ask())
    first = asyncio.create_task(anext(leader))
    await relay.started.wait()
    follower_call = ask()
    follower = asyncio.create_task(collect(stage.stream(follower_call)))
    await until(lambda: stage.joined == 1)  # joined the leader's flight
    first.cancel()  # the leader's caller went away before any text
    with pytest.raises(asyncio.CancelledError):
        await first
    relay.gate.set()
    events = await follower
    assert [type(e) for e in events] == [StreamStart, TextDelta, TextDelta, TextDelta, Completion]
    assert relay.calls == 2 and follower_call.cost == COST and not follower_call.cached


async def test_a_follower_shares_the_leaders_own_interruption_as_its_own():
    broken = StreamInterruptedError(RelayUnavailableError("reset"), 2)
    relay = PacedRelay(error_after=(1, broken))
    stage = stage_for(relay)
    leader = stage.stream(ask())
    await next_events(leader, 2)
    follower = stage.stream(ask())
    assert await next_events(follower, 2) == [StreamStart(GEMINI), TextDelta("Paris ")]
    relay.steps.put_nowait(None)
    with pytest.raises(StreamInterruptedError):
        await anext(leader)
    with pytest.raises(StreamInterruptedError, match="shared ended early"):
        await anext(follower)
    assert relay.calls == 1


async def test_a_follower_gets_an_error_about_the_request_as_the_leader_does():
    relay = Relay(gated=True, error=[RelayUnavailableError("down", 503)])
    stage = stage_for(relay)
    leader = asyncio.create_task(collect(stage.stream(ask())))
    await relay.started.wait()
    follower = asyncio.create_task(collect(stage.stream(ask())))
    await until(lambda: stage.joined == 1)  # joined the leader's flight
    relay.gate.set()
    for task in (leader, follower):
        with pytest.raises(RelayUnavailableError):
            await task
    assert relay.calls == 1


async def test_a_cancelled_follower_leaves_the_leader_and_other_followers_alone():
    relay = PacedRelay()
    stage = stage_for(relay)
    leader = stage.stream(ask())
    await next_events(leader, 2)
    quitter = asyncio.create_task(collect(stage.stream(ask())))
    stayer_call = ask()
    stayer = asyncio.create_task(collect(stage.stream(stayer_call)))
    await until(lambda: stage.joined == 2)  # joined the leader's flight
    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    for _ in range(3):
        relay.steps.put_nowait(None)
    await collect(leader)
    events = await stayer
    assert events[:4] == [
        StreamStart(GEMINI),
        *(TextDelta(t) for t in ("Paris ", "is the ", "capital.")),
    ]
    assert relay.calls == 1 and stayer_call.cached
