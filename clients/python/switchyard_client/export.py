"""`switchyard usage export`: a window of calls as CSV or JSON Lines, for billing.

Times are read by `times.parse_when`: ISO 8601 (UTC unless an offset is
given) or a span back from now (`30m`, `24h`, `7d`). Money is written as
exact decimal dollars, never a float.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC
from typing import TextIO

import orjson
from google.protobuf import json_format
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.results import usd

CSV_COLUMNS = (
    "request_id", "ended_at", "caller", "key_id", "end_user", "route_model", "model", "status",
    "input_tokens", "output_tokens", "cached_input_tokens", "estimated", "cost_usd",
    "latency_ms", "time_to_first_token_ms", "cached", "saved_cost_usd", "attempts", "labels",
)  # fmt: skip


def _dollars(money: object) -> str:
    return format(usd(money), "f")  # type: ignore[arg-type]


def csv_row(call: pb.CallRecord) -> list[object]:
    """One call as a CSV row (CSV_COLUMNS)."""
    return [
        call.request_id,
        call.ended_at.ToDatetime(UTC).isoformat().replace("+00:00", "Z"),
        call.caller,
        call.key_id,
        call.end_user,
        call.route_model,
        call.model,
        call.status,
        call.usage.input_tokens,
        call.usage.output_tokens,
        call.usage.cached_input_tokens,
        str(call.usage.estimated).lower(),
        _dollars(call.cost),
        call.latency_ms,
        call.time_to_first_token_ms,
        str(call.cached).lower(),
        _dollars(call.saved_cost),
        len(call.attempts),
        orjson.dumps(dict(sorted(call.labels.items()))).decode(),
    ]


def write(calls: Iterable[pb.CallRecord], out: TextIO, fmt: str) -> int:
    """Write every call in `fmt` ("csv" or "jsonl"); the number written."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for call in calls:
            writer.writerow(csv_row(call))
            count += 1
        return count
    for call in calls:
        record = json_format.MessageToDict(call, preserving_proto_field_name=True)
        out.write(orjson.dumps(record).decode() + "\n")
        count += 1
    return count
