"""Fair shares end to end: one caller's many streams cannot keep another caller waiting.

The scenario of issue 16: a caller opens many streams and never reads them, so
every slot of the model's provider is taken and more of its tries queue; another
caller's Query, with a 5 s deadline, must still be answered. The real gateway
runs on the simulator with a provider cap of 4 and slow greedy answers (1 s to
the first token each): first come, first served, the other caller would wait
for 36 greedy tries (9 s) and miss its deadline.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from switchyard.v1 import gateway_pb2 as pb

from tests.e2e.conftest import StartGateway, caller, query
from tests.helpers import until

CAP = 4
GREEDY = 40
MODEL = "gpt-4.1"


async def test_a_greedy_callers_streams_do_not_keep_another_caller_waiting(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    config = tmp_path / "switchyard.toml"  # the model's own cap out of the way: the provider's
    config.write_text(f'[models."{MODEL}"]\nmax_concurrent = {2 * GREEDY}\n')  # is contested
    gateway = await start_gateway(
        env={"SWITCHYARD_PROVIDER_CONCURRENCY": f"openai={CAP}", "SWITCHYARD_CONFIG": str(config)}
    )
    provider = gateway.app.pipeline.limits.providers["openai"]
    # Opened and never read: each holds its slot for the simulator's 1 s to first token.
    streams = [
        gateway.stub.StreamQuery(
            pb.StreamQueryRequest(
                query=query(
                    f"[[sim latency_ms=1000 tokens=3]] greedy stream {n}",
                    model=MODEL,
                    disable_fallback=True,
                )
            ),
            metadata=caller("greedy"),
        )
        for n in range(GREEDY)
    ]
    try:
        await gateway.sim.wait_until(lambda stats: stats.model(MODEL).in_flight == CAP, 10)
        await until(lambda: provider.waiters == GREEDY - CAP, 10)

        answer = await gateway.stub.Query(
            pb.QueryRequest(query=query("a polite question", model=MODEL, disable_fallback=True)),
            metadata=caller("polite"),
            timeout=5,
        )

        assert answer.model == MODEL and answer.content
        stats = gateway.sim.stats.model(MODEL)
        # The polite call took the first slot that freed: by the time it was answered the
        # relay had seen the 4 greedy tries that held the cap, the polite one, and at most
        # the 3 greedy tries given the other slots of that first round. First come, first
        # served, it would have been the 41st.
        assert stats.requests <= 2 * CAP, stats
        assert stats.max_in_flight <= CAP  # the cap itself held throughout
        assert provider.holding("greedy") <= CAP
    finally:
        for stream in streams:
            stream.cancel()
    for stream in streams:
        assert await stream.code() is grpc.StatusCode.CANCELLED
