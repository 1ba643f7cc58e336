"""What authentication costs: the API-key resolver in process, and the gateway that uses it.

* `resolver_cost`: `ApiKeyResolver.resolve` of one valid key with its cache warm
  (what every call after a key's first costs, for 5 s at a time), against the
  no-auth `CallerHeaderResolver`: user+sys CPU of this process per call. The
  issue's bound is 15 µs.
* `start_switchyard_auth`: the `switchyard(auth)` row, the default gateway with
  SWITCHYARD_AUTH=api_key and a tenant and key made through the admin API;
  the load sends the key with every call.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

from bench.targets import Target, probe_grpc, start_switchyard
from server.identity import ApiKeyResolver, CallerHeaderResolver
from server.keys import ApiKey, digest, new_secret, token
from server.state.directory import Tenant
from server.state.memory import MemoryDirectory

AUTH_ROW = "switchyard(auth)"


class _Context:
    """What grpc.aio's ServicerContext gives a resolver, fixed."""

    __slots__ = ("_metadata",)

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


async def _per_call_us(resolver: Any, context: _Context, calls: int) -> float:
    for _ in range(1000):  # warm: the key is cached after its first call
        await resolver.resolve(context)
    best = float("inf")
    for _ in range(3):  # the best of three: the least disturbed by the machine
        cpu = time.process_time()
        for _ in range(calls):
            await resolver.resolve(context)
        best = min(best, (time.process_time() - cpu) / calls * 1e6)
    return best


async def resolver_cost(smoke: bool) -> dict[str, Any]:
    """CPU µs per call of the API-key resolver (warm cache) and of the no-auth one."""
    calls = 20_000 if smoke else 200_000
    directory = MemoryDirectory()
    await directory.create_tenant(Tenant("bench"))
    secret = new_secret()
    await directory.add_key(ApiKey("0123456789ab", "bench", "", digest(secret)))
    keyed = _Context(
        (
            ("authorization", f"Bearer {token('0123456789ab', secret)}"),
            ("x-switchyard-caller", "bench-user"),
            ("user-agent", "grpc-python/1.85"),
        )
    )
    named = _Context((("x-switchyard-caller", "bench"), ("user-agent", "grpc-python/1.85")))
    resolver = ApiKeyResolver(directory, "x" * 40)
    return {
        "calls": calls,
        "api_key_us": await _per_call_us(resolver, keyed, calls),
        "caller_header_us": await _per_call_us(CallerHeaderResolver(), named, calls),
    }


async def start_switchyard_auth(
    relay_url: str, logs: Path, extra_env: dict[str, str] | None = None
) -> Target:
    """The default gateway with API keys on; its Target carries a key for the load."""
    from switchyard_client import AdminClient  # noqa: PLC0415 (the bench's only client use)

    admin_key = secrets.token_urlsafe(32)
    env = {"SWITCHYARD_AUTH": "api_key", "SWITCHYARD_ADMIN_KEY": admin_key, **(extra_env or {})}
    target = await start_switchyard(relay_url, logs, env, name=AUTH_ROW)

    def make_key() -> str:
        with AdminClient(target.address, api_key=admin_key) as admin:
            admin.create_tenant("bench")
            return admin.create_key("bench", name="bench").secret

    target.bearer = await asyncio.to_thread(make_key)
    await probe_grpc(target)  # with the key, a Query is answered
    target.description += " (each call with its tenant's API key)"
    return target
