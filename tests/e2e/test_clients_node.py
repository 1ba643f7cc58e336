"""The Node.js example (clients/node: grpc-js + protoc-gen-es stubs) against the gateway."""

from pathlib import Path

import pytest

from .conftest import Gateway, StartGateway
from .example_clients import (
    ROOT,
    TOOL_PROMPT,
    check_answers,
    check_tool_round_trip,
    make,
    run,
    start_secure_gateway,
)

pytestmark = [
    pytest.mark.timeout(180),
    # the example asks the same prompt twice; it is checked against fresh answers
    pytest.mark.gateway_env(SWITCHYARD_CACHE_ENABLED="false"),
]
EXAMPLE = str(ROOT / "clients/node/dist/clients/node/src/example.js")
TOOLS = str(ROOT / "clients/node/dist/clients/node/src/tools.js")
CALLER = "node-tools"
PROMPT = "Compare quicksort and mergesort [[sim tokens=6]]"


@pytest.fixture(scope="module")
def built() -> None:
    make("node-example")  # npm ci (pinned by package-lock.json), then tsc --strict


async def test_the_node_example_queries_and_streams(built, gateway: Gateway):
    code, out, err = await run("node", EXAMPLE, "--address", gateway.address, "--prompt", PROMPT)
    assert code == 0, err
    await check_answers(gateway, PROMPT, out)


@pytest.mark.parametrize("model", ["", "claude-sonnet-4-20250514"], ids=["routed", "anthropic"])
async def test_the_node_tool_example_makes_one_round_trip(built, gateway: Gateway, model: str):
    code, out, err = await run(
        "node", TOOLS, "--address", gateway.address, "--prompt", TOOL_PROMPT, "--model", model,
        "--caller", CALLER,
    )  # fmt: skip
    assert code == 0, err
    await check_tool_round_trip(gateway, out, CALLER, model)


async def test_the_node_tool_example_exits_with_the_status_of_a_refused_call(
    built, gateway: Gateway
):
    # a tool the query does not offer: the relay refuses it, before any tool runs
    code, out, err = await run(
        "node", TOOLS, "--address", gateway.address, "--prompt", "hi [[tool:get_time]]"
    )
    assert code == 3 and out == ""
    assert err.startswith("error: INVALID_ARGUMENT: ") and "get_time" in err
    assert "(request id " in err


async def test_the_node_example_exits_with_the_status_and_shows_the_request_id(
    built, gateway: Gateway
):
    code, out, err = await run(
        "node", EXAMPLE, "--address", gateway.address, "--prompt", "hi [[sim fault=400]]"
    )
    assert code == 3  # INVALID_ARGUMENT
    assert err.startswith("error: INVALID_ARGUMENT: the relay refused the request")
    assert "(request id " in err and out == ""


async def test_a_stream_that_fails_is_reported_not_truncated(built, gateway: Gateway):
    code, _, err = await run(
        "node", EXAMPLE, "--address", gateway.address, "--prompt", "hi [[sim fault=503]]"
    )
    assert code == 14 and "UNAVAILABLE" in err


async def test_the_node_example_calls_over_tls_with_a_key(
    built, start_gateway: StartGateway, tmp_path: Path
):
    secure = await start_secure_gateway(start_gateway, tmp_path)
    try:
        code, out, err = await run(
            "node",
            EXAMPLE,
            "--address",
            secure.gateway.address,
            "--prompt",
            PROMPT,
            "--tls-ca",
            str(secure.ca_file),
            env={"SWITCHYARD_API_KEY": secure.key},
        )
        assert code == 0, err
        await check_answers(secure.gateway, PROMPT, out, secure.stub, secure.metadata)
        code, _, err = await run(
            "node",
            EXAMPLE,
            "--address",
            secure.gateway.address,
            "--prompt",
            PROMPT,
            "--tls-ca",
            str(secure.ca_file),
        )  # no key
        assert code == 16 and "UNAUTHENTICATED" in err.upper() and "needs an API key" in err
    finally:
        await secure.channel.close()
