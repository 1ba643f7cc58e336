"""How a client reaches the gateway: target, TLS, keepalive, deadlines, metadata.

The sync and asyncio clients share these settings and differ only in the
channel they open from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from switchyard_client._version import __version__

DEFAULT_TARGET = "127.0.0.1:50051"
# Generation calls: long enough for a long answer from the slowest model
# (the gateway also bounds every relay attempt), short enough that a hung
# call is noticed.
DEFAULT_TIMEOUT = 120.0
# Route, GetUsage and health answer without calling a model.
DEFAULT_CONTROL_TIMEOUT = 10.0
# The gateway accepts keepalive pings every 10 s or more; 30 s keeps idle
# connections through NATs and load balancers and finds dead peers early.
DEFAULT_KEEPALIVE = 30.0

CALLER_HEADER = "x-switchyard-caller"
AUTHORIZATION_HEADER = "authorization"

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS for the channel; every field is optional (system roots by default)."""

    root_certificates: bytes | None = None  # PEM roots that sign the gateway's certificate
    private_key: bytes | None = None  # PEM key, for mutual TLS
    certificate_chain: bytes | None = None  # PEM chain, for mutual TLS
    server_name: str | None = None  # expected name in the certificate, when not the host

    @classmethod
    def from_files(
        cls,
        root_certificates: Path | None = None,
        certificate_chain: Path | None = None,
        private_key: Path | None = None,
    ) -> TLS:
        """TLS from PEM files: roots to trust (None: the system's), and a client
        certificate and its key for mutual TLS (both or neither)."""
        if (certificate_chain is None) != (private_key is None):
            raise ValueError(
                "a client certificate needs its key: give both --tls-cert and --tls-key"
            )
        return cls(
            root_certificates=None if root_certificates is None else root_certificates.read_bytes(),
            certificate_chain=None if certificate_chain is None else certificate_chain.read_bytes(),
            private_key=None if private_key is None else private_key.read_bytes(),
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """Everything needed to open a channel and label each call."""

    target: str = DEFAULT_TARGET
    caller: str | None = None
    # repr=False: a client printed in a log or a traceback never shows the key.
    api_key: str | None = field(default=None, repr=False)
    tls: TLS | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    control_timeout: float | None = DEFAULT_CONTROL_TIMEOUT
    keepalive: float = DEFAULT_KEEPALIVE
    metadata: Mapping[str, str] = field(default_factory=dict)

    def channel_options(self) -> list[tuple[str, int | str]]:
        """gRPC channel arguments: keepalive, user agent, TLS name override."""
        options: list[tuple[str, int | str]] = [
            ("grpc.keepalive_time_ms", int(self.keepalive * 1000)),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.primary_user_agent", f"switchyard-python/{__version__}"),
        ]
        if self.tls is not None and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return options

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for plaintext."""
        if self.tls is None:
            return None
        return grpc.ssl_channel_credentials(
            self.tls.root_certificates, self.tls.private_key, self.tls.certificate_chain
        )

    def call_metadata(self, extra: Mapping[str, str] | None = None) -> Metadata:
        """The metadata of one call: caller, API key, the client's and the call's extras."""
        pairs: dict[str, str] = {}
        if self.caller:
            pairs[CALLER_HEADER] = self.caller
        if self.api_key:
            pairs[AUTHORIZATION_HEADER] = f"Bearer {self.api_key}"
        pairs.update(self.metadata)
        pairs.update(extra or {})
        return tuple(pairs.items())

    def open(self) -> grpc.Channel:
        """A sync channel."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.target, options=self.channel_options())
        return grpc.secure_channel(self.target, credentials, options=self.channel_options())

    def open_aio(self) -> grpc.aio.Channel:
        """An asyncio channel (open it inside the event loop that uses it)."""
        credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.channel_options())
        return grpc.aio.secure_channel(self.target, credentials, options=self.channel_options())
