"""Who is calling: the one place a call's metadata becomes an `Identity`.

The RPC boundary (``server/boundary.py``) asks the resolver once per RPC,
before any handler runs; everything below it sees only the typed
`Identity` (tenant, key id, end-user label) and never reads metadata.
Budgets, the ledger, the limits and the cache scope are keyed by
`Identity.tenant`.

Today's resolver trusts the caller to name itself: the tenant is the
`x-switchyard-caller` metadata value, or "anonymous" without one. Another
way of knowing the caller (an API key, a client certificate) is another
class with the same `resolve`, picked by `resolver_for`::

    resolver = resolver_for(settings)
    identity = await resolver.resolve(context)   # or InvalidRequestError / an auth error
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from server.domain import Identity
from server.errors import InvalidRequestError
from server.settings import Settings

CALLER_HEADER = "x-switchyard-caller"
ANONYMOUS = "anonymous"
MAX_CALLER_LENGTH = 128

Metadata = Iterable[tuple[str, str | bytes]]


class CallerContext(Protocol):
    """What a resolver may read of an RPC (grpc.aio's ServicerContext has it all)."""

    def invocation_metadata(self) -> Metadata | None:
        """The call's metadata."""
        ...

    def peer(self) -> str:
        """The caller's address."""
        ...


class IdentityResolver(Protocol):
    """Turns an RPC's credentials into an Identity, or refuses the call."""

    async def resolve(self, context: CallerContext) -> Identity:
        """Who is calling; raises a SwitchyardError (with its status) to refuse."""
        ...


class CallerHeaderResolver:
    """The caller names itself in `x-switchyard-caller`; no credential is checked."""

    __slots__ = ()

    async def resolve(self, context: CallerContext) -> Identity:
        """The tenant named by the metadata, or "anonymous"."""
        for key, value in context.invocation_metadata() or ():
            if key == CALLER_HEADER:
                caller = value if isinstance(value, str) else value.decode("utf-8", "replace")
                if not caller or len(caller) > MAX_CALLER_LENGTH or not caller.isprintable():
                    raise InvalidRequestError(
                        f"metadata {CALLER_HEADER} must be 1 to {MAX_CALLER_LENGTH} printable"
                        " characters naming the calling service"
                    )
                return Identity(caller)
        return _ANONYMOUS


_ANONYMOUS = Identity(ANONYMOUS)


def resolver_for(settings: Settings) -> IdentityResolver:
    """The resolver `settings` ask for (only the caller header exists today)."""
    del settings  # one mode today; the auth issue adds the switch here
    return CallerHeaderResolver()
