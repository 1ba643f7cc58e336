"""Times and durations as people type them: `30m`, `24h`, `7d`, or ISO 8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SPAN_HELP = "a number and a unit: 90s, 30m, 24h, 7d, 2w"


def parse_span(text: str) -> timedelta:
    """A duration such as `24h`; ValueError saying what is accepted."""
    span = _SPAN.match(text.strip())
    if span is None:
        raise ValueError(f"{text!r} is not a duration: use {SPAN_HELP}")
    return timedelta(**{_UNITS[span[2]]: float(span[1])})


def parse_when(text: str, now: datetime) -> datetime:
    """An instant from ISO 8601 or a span back from `now`; ValueError saying what is accepted."""
    if _SPAN.match(text.strip()):
        return now - parse_span(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 (2026-12-01 or 2026-12-01T09:30:00Z)"
            " or a span back from now (30m, 24h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
