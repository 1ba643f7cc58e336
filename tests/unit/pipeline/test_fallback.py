import grpc
import pytest

from server.domain import Completion, Outcome, StreamStart, TextDelta
from server.errors import (
    AllModelsFailedError,
    ContextLengthError,
    RelayAuthError,
    RelayUnavailableError,
)
from server.pipeline.fallback import FallbackStage

from .fakes import ScriptedModels, routed_call

CLAUDE, GPT, GEMINI = "claude-sonnet-4-20250514", "gpt-4.1", "gemini-2.5-flash"


def overloaded() -> RelayUnavailableError:
    return RelayUnavailableError("the provider is overloaded; retry later", 529)


async def test_retryable_failure_moves_down_the_chain():
    models = ScriptedModels({CLAUDE: overloaded(), GPT: ["ok"]})
    call = routed_call(model=CLAUDE)
    completion = await FallbackStage(models).query(call)
    assert completion.model.name == GPT
    assert models.tried == [CLAUDE, GPT]
    assert [a.outcome for a in call.attempts] == [Outcome.RETRYABLE_ERROR, Outcome.SUCCESS]


async def test_final_failure_stops_at_once():
    models = ScriptedModels({CLAUDE: RelayAuthError("bad key", 401), GPT: ["never"]})
    with pytest.raises(RelayAuthError):
        await FallbackStage(models).query(routed_call(model=CLAUDE))
    assert models.tried == [CLAUDE]


async def test_every_model_failing_names_them_all():
    models = ScriptedModels({CLAUDE: overloaded(), GPT: overloaded(), GEMINI: overloaded()})
    with pytest.raises(AllModelsFailedError) as caught:
        await FallbackStage(models).query(routed_call(model=CLAUDE))
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    for name in (CLAUDE, GPT, GEMINI):
        assert name in caught.value.message


async def test_disabled_fallback_tries_one_model_and_reports_its_own_error():
    models = ScriptedModels({CLAUDE: overloaded(), GPT: ["ok"]})
    with pytest.raises(RelayUnavailableError):
        await FallbackStage(models).query(routed_call(model=CLAUDE, fallback=False))
    assert models.tried == [CLAUDE]


async def test_context_length_skips_models_with_a_window_no_larger():
    # deepseek (128k) falls back to gpt-4.1 (1M): larger, so it is tried.
    models = ScriptedModels({"deepseek-v3.2": ContextLengthError("too long", 400), GPT: ["ok"]})
    completion = await FallbackStage(models).query(routed_call(model="deepseek-v3.2"))
    assert completion.model.name == GPT
    # gpt-4.1 (1M) falls back to claude (200k): smaller, so it is skipped and recorded.
    models = ScriptedModels({GPT: ContextLengthError("too long", 400), CLAUDE: ["never"]})
    call = routed_call(model=GPT)
    with pytest.raises(ContextLengthError):
        await FallbackStage(models).query(call)
    assert models.tried == [GPT]
    assert call.attempts[-1].outcome is Outcome.SKIPPED


async def test_stream_falls_back_before_the_first_token():
    models = ScriptedModels({CLAUDE: overloaded(), GPT: ["a", "b"]})
    events = [event async for event in FallbackStage(models).stream(routed_call(model=CLAUDE))]
    assert isinstance(events[0], StreamStart) and events[0].model.name == GPT
    assert events[1:3] == [TextDelta("a"), TextDelta("b")]
    assert isinstance(events[3], Completion)


async def test_stream_does_not_fall_back_after_the_first_token():
    error = RelayUnavailableError("reset", 0)
    models = ScriptedModels(
        {CLAUDE: ["a", "b", "c"], GPT: ["never"]}, fail_after={CLAUDE: (2, error)}
    )
    received = []
    with pytest.raises(RelayUnavailableError):
        async for event in FallbackStage(models).stream(routed_call(model=CLAUDE)):
            received.append(event)
    assert received[1:] == [TextDelta("a"), TextDelta("b")]
    assert models.tried == [CLAUDE]


async def test_closing_the_stream_early_closes_the_model_stream():
    models = ScriptedModels({CLAUDE: ["a", "b", "c"]})
    stream = FallbackStage(models).stream(routed_call(model=CLAUDE))
    assert isinstance(await anext(stream), StreamStart)
    assert await anext(stream) == TextDelta("a")
    await stream.aclose()
    assert models.closed == [CLAUDE]
