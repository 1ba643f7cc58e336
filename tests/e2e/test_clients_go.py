"""The Go example (clients/go), built offline from Debian's Go packages, against the gateway."""

import subprocess

import pytest

from .conftest import Gateway
from .example_clients import ROOT, check_answers, make, run

pytestmark = [
    pytest.mark.timeout(300),  # a cold build compiles grpc-go (about 15 s on 2 cores)
    # the example asks the same prompt twice; it is checked against fresh answers
    pytest.mark.gateway_env(SWITCHYARD_CACHE_ENABLED="false"),
]
EXAMPLE = str(ROOT / ".build/bin/switchyard-go-example")
PROMPT = "Compare quicksort and mergesort [[sim tokens=6]]"


@pytest.fixture(scope="module")
def built() -> None:
    make("go-example")


async def test_the_go_example_queries_and_streams(built, gateway: Gateway):
    code, out, err = await run(EXAMPLE, "-address", gateway.address, "-prompt", PROMPT)
    assert code == 0, err
    await check_answers(gateway, PROMPT, out)


async def test_the_go_example_exits_with_the_status_and_shows_the_request_id(
    built, gateway: Gateway
):
    code, out, err = await run(
        EXAMPLE, "-address", gateway.address, "-prompt", "hi [[sim fault=400]]"
    )
    assert code == 3  # INVALID_ARGUMENT
    assert err.startswith("error: InvalidArgument: the relay refused the request")
    assert "(request id " in err and out == ""


def test_the_go_sources_are_gofmt_clean(built):
    unformatted = subprocess.run(
        ["gofmt", "-l", "clients/go", "gen/go"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert unformatted.stdout == ""
