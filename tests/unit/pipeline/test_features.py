"""Routing by feature, and structured output checked by the relay attempt.

A model the catalog marks as lacking what a request uses (tools, images, JSON
Schema, reasoning), or whose wire would refuse it (an Anthropic image over 5 MB),
is refused when named and left out of routes and fallbacks otherwise, with the
reason in `RouteDecision.skipped`. A JSON answer that fails its schema is a
failed, billed attempt that sends the call on (or, by setting, only reported).
"""

import dataclasses
from decimal import Decimal

import httpx
import orjson
import pytest

from server.catalog import DEFAULT_MODELS, Catalog, default_catalog
from server.domain import (
    Call,
    Completion,
    Feature,
    Identity,
    ImagePart,
    Message,
    ModelCall,
    Outcome,
    ReasoningEffort,
    Request,
    ResponseFormat,
    ResponseKind,
    Role,
    RouteBasis,
    SkippedModel,
    Task,
    TextPart,
    ToolSpec,
    Validation,
)
from server.errors import AllModelsFailedError, InvalidOutputError, InvalidRequestError
from server.pipeline.attempt import RelayAttempt
from server.pipeline.fallback import FallbackStage
from server.pipeline.router import Router
from server.relay.client import RelayClient
from server.settings import RelaySettings, RoutingSettings
from server.structured import check, schema_problem

from ..relay.mock_relay import MockRelay, streamed

ROUTER = Router(default_catalog(), RoutingSettings())
TOOL = ToolSpec("lookup", "", {"type": "object", "properties": {"q": {"type": "string"}}})
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
FORMAT = ResponseFormat(ResponseKind.JSON_SCHEMA, "person", SCHEMA)


def ask(*parts, **fields) -> Request:
    return Request(messages=(Message(Role.USER, tuple(parts) or (TextPart("hi"),)),), **fields)


def image(size: int = 8) -> ImagePart:
    return ImagePart("image/png", data=b"x" * size)


# --- routing -------------------------------------------------------------------------


def test_a_model_lacking_a_feature_is_skipped_for_a_capable_one_and_route_says_why():
    route = ROUTER.decide(ask(TextPart("read this"), image(), task=Task.BATCH))
    assert route.model.name != "deepseek-v3.2"  # BATCH's default reads no images
    assert route.model.serves(Task.BATCH) and Feature.IMAGES in route.model.features
    assert route.skipped[0] == SkippedModel("deepseek-v3.2", "it does not take images")
    assert "deepseek-v3.2 was skipped (it does not take images), so" in route.reason
    # the cheapest capable BATCH model: Gemini Flash at $2.50/M in
    assert route.model.name == "gemini-2.5-flash"


def test_a_named_model_lacking_a_feature_is_refused_naming_those_that_have_it():
    with pytest.raises(InvalidRequestError) as caught:
        ROUTER.decide(ask(TextPart("q"), image(), model="deepseek-v3.2"))
    assert caught.value.message == (
        "deepseek-v3.2 cannot answer this query: it does not take images; name a model that"
        " can (claude-sonnet-4-20250514, gpt-4.1, gemini-2.5-flash) or leave model empty"
    )
    with pytest.raises(InvalidRequestError, match="does not take reasoning settings"):
        ROUTER.decide(ask(model="gpt-4.1", reasoning_effort=ReasoningEffort.LOW))


def test_fallbacks_lacking_a_feature_leave_the_chain():
    route = ROUTER.decide(ask(model="claude-sonnet-4-20250514", thinking_budget=2048))
    # Claude's chain is gpt-4.1 then gemini-2.5-flash; GPT-4.1 does not reason
    assert [m.name for m in route.fallbacks] == ["gemini-2.5-flash"]
    assert route.skipped == (SkippedModel("gpt-4.1", "it does not take reasoning settings"),)
    assert route.basis is RouteBasis.MODEL


def test_a_model_whose_wire_would_refuse_the_request_is_skipped_or_refused():
    big = ask(TextPart("what is it?"), image(4_000_000), task=Task.REASONING)
    route = ROUTER.decide(big)
    assert route.model.name != "claude-sonnet-4-20250514"
    assert route.skipped[0].model == "claude-sonnet-4-20250514"
    assert "at most 5,242,880 (5 MB) an image" in route.skipped[0].reason
    with pytest.raises(InvalidRequestError, match=r"5,333,336 bytes as base64"):
        ROUTER.decide(dataclasses.replace(big, model="claude-sonnet-4-20250514"))


def test_when_no_model_has_the_feature_the_query_is_refused_before_any_call():
    no_tools = Catalog.build(
        [dataclasses.replace(m, tools=False) for m in DEFAULT_MODELS],
        {m.task: m.name for m in DEFAULT_MODELS},
    )
    router = Router(no_tools, RoutingSettings())
    with pytest.raises(InvalidRequestError) as caught:
        router.decide(ask(tools=(TOOL,)))
    assert caught.value.message.startswith("no model served here can answer this query:")
    assert "gpt-4.1: it does not take tools" in caught.value.message


def test_text_only_requests_skip_no_model():
    route = ROUTER.decide(ask(task=Task.BATCH))
    assert route.model.name == "deepseek-v3.2" and route.skipped == ()


def test_catalog_flags_and_anthropic_cache_write_default():
    catalog = default_catalog().models
    assert catalog["deepseek-v3.2"].features == {Feature.TOOLS, Feature.REASONING} - {
        Feature.REASONING
    }
    assert catalog["claude-sonnet-4-20250514"].features == set(Feature)
    assert catalog["gpt-4.1"].features == set(Feature) - {Feature.REASONING}
    assert catalog["claude-sonnet-4-20250514"].cache_write_price == Decimal("18.75")


# --- structured output ---------------------------------------------------------------


def test_check_says_where_without_repeating_the_answer():
    assert check(FORMAT, '{"name": "Ada", "age": 36}') is None
    assert check(FORMAT, '{"name": "Ada"}') == "$ lacks the required property 'age'"
    assert check(FORMAT, '{"name": "Ada", "age": "thirty-six"}') == (
        '$.age is not of type "integer"'
    )
    assert (
        check(FORMAT, '{"name": "Ada", "age": -1}') == "$.age fails the schema's 'minimum' rule (0)"
    )
    extra = check(FORMAT, '{"name": "Ada", "age": 1, "secret": "hunter2"}')
    assert extra == "$ has properties the schema does not allow"
    assert check(FORMAT, "Sure! Here it is: {") == (
        "the text is not JSON (unexpected character at character 0)"
    ) or "the text is not JSON" in (check(FORMAT, "Sure! {") or "")
    assert check(FORMAT, "[1]") == "the text is an array, not a JSON object"
    assert check(ResponseFormat(ResponseKind.JSON_OBJECT), '{"any": 1}') is None
    assert check(ResponseFormat(ResponseKind.JSON_OBJECT), "3") == (
        "the text is a number, not a JSON object"
    )
    assert "hunter2" not in (extra or "")
    assert schema_problem(SCHEMA) is None
    assert schema_problem({"type": "object", "minProperties": -1}) is not None


def _answer(text: str, request: httpx.Request):
    """`text` as the answer of whichever wire was asked."""
    if request.url.path.endswith("/messages"):
        return httpx.Response(
            200,
            json={
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": 5},
            },
        )
    return httpx.Response(
        200,
        json={
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        },
    )


def _routed(request: Request) -> Call:
    call = Call(request, "rid", Identity("t"), 0.0, None)
    call.route = ROUTER.decide(request)
    return call


def _stage(respond, validate: str = "fallback") -> tuple[RelayAttempt, MockRelay]:
    relay = MockRelay(respond)
    client = RelayClient("http://relay.test/v1", RelaySettings(api_key="k"), relay.transport)
    return RelayAttempt(client, default_limit=10.0, validate_json=validate), relay


async def test_an_answer_that_fails_its_schema_falls_back_and_is_billed():
    answers = iter(['{"name": "Ada"}', '{"name": "Ada", "age": 36}'])
    attempt, relay = _stage(lambda r: _answer(next(answers), r))
    call = _routed(ask(model="gpt-4.1", response_format=FORMAT))
    completion = await FallbackStage(attempt).query(call)
    assert completion.content == '{"name": "Ada", "age": 36}'
    assert completion.validation is Validation.VALID
    first, second = call.attempts
    assert (first.model.name, first.outcome) == ("gpt-4.1", Outcome.INVALID_OUTPUT)
    assert first.error == "the answer did not validate: $ lacks the required property 'age'"
    assert first.cost == 10 * 8_000 + 5 * 32_000  # the failed answer is billed
    assert second.outcome is Outcome.SUCCESS and second.model.name == "claude-sonnet-4-20250514"
    assert [orjson.loads(r.content)["model"] for r in relay.requests] == [
        "gpt-4.1",
        "claude-sonnet-4-20250514",
    ]


async def test_when_every_model_fails_the_schema_the_caller_hears_why():
    attempt, _ = _stage(lambda r: _answer("not json", r))
    call = _routed(ask(model="gpt-4.1", response_format=FORMAT))
    with pytest.raises(AllModelsFailedError) as caught:
        await FallbackStage(attempt).query(call)
    assert isinstance(caught.value.decisive, InvalidOutputError)
    assert caught.value.code.name == "UNAVAILABLE"
    assert all(a.outcome is Outcome.INVALID_OUTPUT for a in call.attempts)


@pytest.mark.parametrize(
    ("mode", "validation"), [("report", Validation.INVALID), ("off", Validation.UNCHECKED)]
)
async def test_report_and_off_return_the_answer(mode, validation):
    attempt, relay = _stage(lambda r: _answer('{"age": 1}', r), validate=mode)
    call = _routed(ask(model="gpt-4.1", response_format=FORMAT))
    assert call.route is not None
    completion = await attempt.query(ModelCall(call, call.route.model, 64))
    assert completion.validation is validation
    assert call.attempts[0].outcome is Outcome.SUCCESS and len(relay.requests) == 1


async def test_a_stream_end_says_whether_its_text_validated():
    chunks = [
        b'data: {"choices":[{"index":0,"delta":{"content":"{\\"name\\": "}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"\\"Ada\\"}"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    attempt, _ = _stage(lambda r: httpx.Response(200, content=streamed(chunks)))
    call = _routed(ask(model="gpt-4.1", response_format=FORMAT))
    assert call.route is not None
    events = [e async for e in attempt.stream(ModelCall(call, call.route.model, 64))]
    end = events[-1]
    assert type(end) is Completion
    assert end.validation is Validation.INVALID
    assert end.validation_error == "$ lacks the required property 'age'"
    [recorded] = call.attempts
    assert recorded.outcome is Outcome.SUCCESS  # the text reached the caller: no fallback
