"""The Node.js example (clients/node: grpc-js + protoc-gen-es stubs) against the gateway."""

import pytest

from .conftest import Gateway
from .example_clients import ROOT, check_answers, make, run

pytestmark = [
    pytest.mark.timeout(180),
    # the example asks the same prompt twice; it is checked against fresh answers
    pytest.mark.gateway_env(SWITCHYARD_CACHE_ENABLED="false"),
]
EXAMPLE = str(ROOT / "clients/node/dist/clients/node/src/example.js")
PROMPT = "Compare quicksort and mergesort [[sim tokens=6]]"


@pytest.fixture(scope="module")
def built() -> None:
    make("node-example")  # npm ci (pinned by package-lock.json), then tsc --strict


async def test_the_node_example_queries_and_streams(built, gateway: Gateway):
    code, out, err = await run("node", EXAMPLE, "--address", gateway.address, "--prompt", PROMPT)
    assert code == 0, err
    await check_answers(gateway, PROMPT, out)


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
