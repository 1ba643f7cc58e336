"""A finished call as the journal and the database keep it: flat rows of plain values.

Times are integer microseconds since the Unix epoch (UTC), durations integer
microseconds, money integer nano-dollars: no float reaches a file or a
column. `encode` and `decode` are the journal's line format, one JSON array a
call (versioned by its first element), so a line written by this version is
read back exactly; a line of format 2 (before reasoning and cache-write tokens
were kept) is read with 0 for both, so a journal survives the upgrade.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from server.state.ledger import CallRecord

FORMAT = 3  # the journal line format; a reader refuses others (format 2 excepted, see above)
_FIELDS = {2: 20, 3: 22}  # fields of a call line, by format


class AttemptRow(NamedTuple):
    """One relay try of a call."""

    seq: int
    model: str
    provider: str
    outcome: str
    http_status: int
    error: str
    latency_us: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    estimated: bool
    cost: int
    reasoning_tokens: int = 0  # of output_tokens
    cache_write_tokens: int = 0  # of input_tokens


class CallRow(NamedTuple):
    """One finished call with its attempts; the first 19 fields and the last two are the
    database's columns, in order (tuples, because they are built once per call on the
    request path)."""

    request_id: str
    ended_at_us: int
    tenant: str
    key_id: str | None
    end_user: str | None
    route_model: str
    route_reason: str
    model: str
    status: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    estimated: bool
    cost: int
    latency_us: int
    ttft_us: int | None
    cache: str
    saved_cost: int
    labels: str  # a JSON object
    attempts: tuple[AttemptRow, ...]
    reasoning_tokens: int = 0  # of output_tokens, over every attempt
    cache_write_tokens: int = 0  # of input_tokens, over every attempt

    @property
    def failed(self) -> bool:
        """Did the call end with an error status (a cancel is none)?"""
        return self.status not in ("OK", "CANCELLED")


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def from_record(record: CallRecord) -> CallRow:
    """The rows of one finished call."""
    attempts = []
    input_tokens = output_tokens = cached = cost = reasoning = written = 0
    estimated = False
    for seq, attempt in enumerate(record.attempts):
        usage = attempt.usage
        input_tokens += usage.input_tokens
        output_tokens += usage.output_tokens
        cached += usage.cached_input_tokens
        reasoning += usage.reasoning_tokens
        written += usage.cache_write_tokens
        estimated = estimated or usage.estimated
        cost += attempt.cost
        attempts.append(
            AttemptRow(
                seq,
                attempt.model.name,
                attempt.model.provider,
                attempt.outcome.text,
                attempt.http_status,
                attempt.error,
                _us(attempt.latency),
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
                usage.estimated,
                attempt.cost,
                usage.reasoning_tokens,
                usage.cache_write_tokens,
            )
        )
    return CallRow(
        record.request_id,
        _us(record.at),
        record.tenant,
        record.key_id,
        record.user,
        record.route_model,
        record.route_reason,
        record.model,
        record.status,
        input_tokens,
        output_tokens,
        cached,
        estimated,
        cost,
        _us(record.latency),
        None if record.first_token is None else _us(record.first_token),
        record.cache.text,
        record.saved_cost,
        orjson.dumps(dict(record.labels)).decode() if record.labels else "{}",
        tuple(attempts),
        reasoning,
        written,
    )


def encode(row: CallRow) -> bytes:
    """One journal line (newline included): [FORMAT, [the call's fields, [[attempt], ...],
    reasoning tokens, cache-write tokens]]."""
    return orjson.dumps((FORMAT, row), default=tuple) + b"\n"  # NamedTuples as arrays


def decode(line: bytes) -> CallRow:
    """A journal line back into its rows; ValueError for a line this version cannot read."""
    try:
        version, fields = orjson.loads(line)
        if _FIELDS.get(version) != len(fields):
            raise ValueError(f"not a journal line of format {FORMAT}")
        old = version == 2  # without the reasoning and cache-write tokens: 0 for both
        attempts = tuple(AttemptRow._make((*a, 0, 0) if old else a) for a in fields[19])
        return CallRow._make((*fields[:19], attempts, *((0, 0) if old else fields[20:])))
    except (orjson.JSONDecodeError, TypeError, IndexError) as error:
        raise ValueError(f"unreadable journal line: {type(error).__name__}") from None
