"""What the sync and asyncio clients share: settings, deadlines and requests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from google.protobuf import timestamp_pb2
from switchyard.v1 import gateway_pb2 as pb

from switchyard_client.connection import (
    DEFAULT_CONTROL_TIMEOUT,
    DEFAULT_KEEPALIVE,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    TLS,
    Connection,
    Metadata,
)


class ClientBase:
    """Holds the connection settings; builds each call's deadline and metadata."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        caller: str | None = None,
        api_key: str | None = None,
        tls: TLS | bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        control_timeout: float | None = DEFAULT_CONTROL_TIMEOUT,
        keepalive: float = DEFAULT_KEEPALIVE,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the gateway to call.

        Args:
            target: ``host:port`` of the gateway.
            caller: sent as ``x-switchyard-caller``; the gateway accounts usage per caller.
            api_key: sent as ``authorization: Bearer <key>``; never shown by this client.
            tls: ``True`` for TLS with the system's roots, a :class:`TLS` for custom
                roots or mutual TLS; plaintext when omitted.
            timeout: default deadline in seconds of Query and StreamQuery (None: none).
            control_timeout: default deadline of Route, GetUsage and health checks.
            keepalive: seconds between keepalive pings on an idle connection.
            metadata: extra metadata sent with every call.
        """
        self._connection = Connection(
            target=target,
            caller=caller,
            api_key=api_key,
            tls=TLS() if tls is True else (tls or None),
            timeout=timeout,
            control_timeout=control_timeout,
            keepalive=keepalive,
            metadata=dict(metadata or {}),
        )
        self._open()

    def _open(self) -> None:
        """Open the channel and its stubs (each client class does it its way)."""
        raise NotImplementedError

    @property
    def target(self) -> str:
        """The gateway's address."""
        return self._connection.target

    def __repr__(self) -> str:
        connection = self._connection
        return f"{type(self).__name__}({connection.target!r}, caller={connection.caller!r})"

    def _timeout(self, timeout: float | None, *, control: bool = False) -> float | None:
        if timeout is not None:
            return timeout
        return self._connection.control_timeout if control else self._connection.timeout

    def _metadata(self, extra: Mapping[str, str] | None) -> Metadata:
        return self._connection.call_metadata(extra)


def usage_request(
    start: datetime | None, end: datetime | None, tenant: str | None = None
) -> pb.GetUsageRequest:
    """A GetUsageRequest for the window; unset ends take the gateway's defaults.

    `tenant` asks for another tenant's usage, which only the admin credential may.
    """
    request = pb.GetUsageRequest(caller=tenant or "")
    if start is not None:
        request.start.CopyFrom(_timestamp(start))
    if end is not None:
        request.end.CopyFrom(_timestamp(end))
    return request


def export_request(
    start: datetime,
    end: datetime | None,
    page_size: int,
    page_token: str,
    tenant: str | None = None,
) -> pb.ExportUsageRequest:
    """An ExportUsageRequest for [start, end) (end unset: now), resuming after `page_token`."""
    request = pb.ExportUsageRequest(
        start=_timestamp(start), page_size=page_size, page_token=page_token, caller=tenant or ""
    )
    if end is not None:
        request.end.CopyFrom(_timestamp(end))
    return request


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    if moment.tzinfo is None:
        raise ValueError("usage windows take timezone-aware datetimes (for example UTC)")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
