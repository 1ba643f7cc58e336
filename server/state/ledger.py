"""The ledger: what each tenant spent, per model, over any time window.

Every finished call is entered once (by the accounting stage) as a
`CallRecord`: who called, its attempts with their usage and exact cost,
whether it ended in an error, and what the response cache did for it.
`summary` answers "tenant X over the last 24 hours" for GetUsage. Money is
integer nano-dollars throughout; nothing is ever rounded.

`record` never waits: it is called on the request path when a call ends,
so an implementation that writes to a database queues the record (a bounded
queue drained in batches by a writer task) and returns. `aclose` drains that
queue on a graceful stop. The in-memory ledger applies a record at once::

    ledger = MemoryLedger()
    ledger.record(CallRecord("rid", "billing-svc", time.time(), tuple(call.attempts)))
    day = await ledger.summary("billing-svc", time.time() - 86_400, time.time())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from server.domain import Attempt, CacheUse


@dataclass(slots=True)
class ModelTotals:
    """Running totals of one model's attempts."""

    attempts: int = 0
    failed_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost: int = 0  # nano-dollars

    def add(self, other: ModelTotals) -> None:
        """Add `other` into these totals."""
        self.attempts += other.attempts
        self.failed_attempts += other.failed_attempts
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.cost += other.cost


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call, as the ledger enters it.

    `tenant` is who pays (`Identity.tenant`); `key_id` and `user` come from
    the same identity and are kept for the record.
    """

    request_id: str
    tenant: str
    at: float  # wall-clock seconds (time.time()) when the call ended
    attempts: tuple[Attempt, ...]
    failed: bool = False  # the call ended with an error status
    cache: CacheUse = CacheUse.NONE
    saved_cost: int = 0  # nano-dollars, on a cache hit
    key_id: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A tenant's totals over a window; `start`/`end` are the bounds actually summed."""

    tenant: str
    start: float
    end: float
    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    saved_cost: int = 0
    models: Mapping[str, ModelTotals] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def total(self) -> ModelTotals:
        """Every model's totals added up."""
        total = ModelTotals()
        for totals in self.models.values():
            total.add(totals)
        return total


class Ledger(Protocol):
    """Where finished calls are entered and summed up."""

    def record(self, entry: CallRecord) -> None:
        """Enter one finished call, without waiting on any I/O."""
        ...

    async def summary(self, tenant: str, start: float, end: float) -> UsageSummary:
        """The tenant's totals for calls that ended in [start, end) (wall-clock seconds)."""
        ...

    async def aclose(self) -> None:
        """Write out what is queued (within the caller's time bound) and stop."""
        ...
