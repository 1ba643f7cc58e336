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
from typing import TYPE_CHECKING, Protocol

from server.domain import Attempt, CacheUse
from server.fastinit import fast_init

if TYPE_CHECKING:
    from server.state.rows import CallRow


@dataclass(slots=True)
class ModelTotals:
    """Running totals of one model's attempts."""

    attempts: int = 0
    failed_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost: int = 0  # nano-dollars
    reasoning_tokens: int = 0  # of output_tokens
    cache_write_tokens: int = 0  # of input_tokens

    def add(self, other: ModelTotals) -> None:
        """Add `other` into these totals."""
        self.attempts += other.attempts
        self.failed_attempts += other.failed_attempts
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.cost += other.cost
        self.reasoning_tokens += other.reasoning_tokens
        self.cache_write_tokens += other.cache_write_tokens


OK = "OK"
CANCELLED = "CANCELLED"
_NOT_ERRORS = frozenset({OK, CANCELLED})  # a caller who went away made no error


@dataclass(slots=True)
class Tally:
    """Everything entered for one tenant in one time span (a bucket, a window)."""

    requests: int = 0
    errors: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    saved_cost: int = 0  # nano-dollars
    models: dict[str, ModelTotals] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        """Add `other` into this tally."""
        self.requests += other.requests
        self.errors += other.errors
        self.cache_hits += other.cache_hits
        self.cache_misses += other.cache_misses
        self.saved_cost += other.saved_cost
        for model, totals in other.models.items():
            mine = self.models.get(model)
            if mine is None:
                mine = self.models[model] = ModelTotals()
            mine.add(totals)


@fast_init
@dataclass(frozen=True, slots=True)
class CallRecord:
    """One finished call, as the ledger enters it.

    `tenant` is who pays (`Identity.tenant`); `key_id` and `user` come from
    the same identity and are kept for the record. `status` is the call's gRPC
    status name. Usage and cost are the attempts' (each attempt carries its
    own exact cost); nothing here is rounded.
    """

    request_id: str
    tenant: str
    at: float  # wall-clock seconds (time.time()) when the call ended
    attempts: tuple[Attempt, ...]
    status: str = OK
    cache: CacheUse = CacheUse.NONE
    saved_cost: int = 0  # nano-dollars, on a cache hit
    key_id: str | None = None
    user: str | None = None
    route_model: str = ""  # the model the router chose ("" when refused before routing)
    route_reason: str = ""
    model: str = ""  # the model that answered ("" when none did)
    latency: float = 0.0  # seconds, the whole call
    first_token: float | None = None  # seconds to the first streamed text
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def failed(self) -> bool:
        """Did the call end with an error status (a cancel is none)?"""
        return self.status not in _NOT_ERRORS


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
    """Where finished calls are entered, summed up, exported and read back for budgets."""

    @property
    def lag(self) -> int:
        """Calls entered but not yet in the database (0 for a ledger without one)."""
        ...

    async def start(self) -> None:
        """Open what the ledger needs; a database that does not answer yet is not an error."""
        ...

    def record(self, entry: CallRecord) -> None:
        """Enter one finished call, without waiting on any I/O.

        A durable ledger has the record on disk (its journal) when this
        returns; when it cannot, it raises SpendNotRecordedError and the call
        fails rather than go unbilled.
        """
        ...

    async def summary(self, tenant: str, start: float, end: float) -> UsageSummary:
        """The tenant's totals for calls that ended in [start, end) (wall-clock seconds).

        Raises LedgerUnavailableError when the database cannot be read now.
        """
        ...

    async def spend(self, day_start: float, month_start: float) -> dict[str, tuple[int, int]]:
        """tenant -> (spend since `day_start`, since `month_start`), everything entered included.

        For seeding budgets after a restart; raises LedgerUnavailableError
        while the database cannot be read (or still has journalled calls to
        take in).
        """
        ...

    async def export(
        self, tenant: str, start: float, end: float, after: tuple[int, str], limit: int
    ) -> list[CallRow]:
        """A page of the tenant's calls that ended in [start, end), oldest first, after
        `after` = (ended_at in microseconds, request id); raises ExportUnavailableError
        for a ledger that keeps no calls, LedgerUnavailableError when it cannot be read."""
        ...

    async def aclose(self, within: float = 10.0) -> None:
        """Write out what is queued, within `within` seconds, and stop (the rest stays
        in the journal for the next start)."""
        ...


def summary_of(tenant: str, start: float, end: float, tally: Tally) -> UsageSummary:
    """A tenant's summary over [start, end) from its tally, models sorted by name."""
    return UsageSummary(
        tenant,
        start,
        end,
        tally.requests,
        tally.errors,
        tally.cache_hits,
        tally.cache_misses,
        tally.saved_cost,
        MappingProxyType(dict(sorted(tally.models.items()))),
    )
