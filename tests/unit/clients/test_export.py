"""Exports: the client resumes a broken stream where it stopped; CSV and JSONL are exact."""

import io
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from switchyard.v1 import gateway_pb2 as pb
from switchyard_client import Client, UnavailableError
from switchyard_client.export import CSV_COLUMNS, write
from switchyard_client.times import parse_when

from .fakes import Failure

START = datetime(2026, 12, 1, tzinfo=UTC)


def calls(*ids: str) -> list[pb.CallRecord]:
    return [pb.CallRecord(request_id=i, caller="svc") for i in ids]


def test_a_broken_export_resumes_after_the_last_page_and_repeats_nothing(fake):
    fake.gateway.answers["ExportUsage"] = [calls("a", "b"), calls("c"), calls("d", "e")]
    fake.gateway.answers["ExportUsage.break_at"] = 1  # the stream breaks before page 1
    with Client(fake.address) as client:
        ids = [call.request_id for call in client.export(start=START)]
    assert ids == ["a", "b", "c", "d", "e"]
    requests = [seen.request for seen in fake.gateway.seen]
    assert [r.page_token for r in requests] == ["", "0"]  # the second resumed after page 0
    assert requests[0].start.ToDatetime(UTC) == START and not requests[0].HasField("end")


def test_a_gateway_that_stays_away_ends_the_export_with_its_error(fake):
    fake.gateway.answers["ExportUsage"] = [calls("a")]
    fake.gateway.failure = Failure(grpc.StatusCode.UNAVAILABLE, "down")
    with Client(fake.address) as client, pytest.raises(UnavailableError):
        list(client.export(start=START, retries=2))
    assert len(fake.gateway.seen) == 3  # the first try and two retries


def test_times_are_iso_or_spans_back_from_now():
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert parse_when("24h", now) == now - timedelta(hours=24)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("2026-11-30", now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_when("2026-11-30T08:00:00+02:00", now).utcoffset() == timedelta(hours=2)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when("last tuesday", now)


def test_csv_carries_exact_dollars_and_jsonl_the_whole_record():
    call = pb.CallRecord(request_id="r1", caller="svc", status="OK", labels={"b": "2", "a": "1"})
    call.ended_at.FromSeconds(1_800_000_000)
    call.cost.units, call.cost.nanos, call.cost.currency_code = 0, 67_500, "USD"
    out = io.StringIO()
    assert write([call], out, "csv") == 1
    header, row = out.getvalue().splitlines()
    values = dict(zip(CSV_COLUMNS, row.split(","), strict=False))
    assert header.split(",") == list(CSV_COLUMNS)
    assert values["cost_usd"] == "0.0000675" and values["ended_at"] == "2027-01-15T08:00:00Z"
    assert row.endswith('"{""a"":""1"",""b"":""2""}"')  # labels: JSON, sorted
    out = io.StringIO()
    write([call], out, "jsonl")
    assert '"request_id":"r1"' in out.getvalue() and '"nanos":67500' in out.getvalue()
