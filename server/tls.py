"""TLS for the gRPC port, with certificates re-read without a restart.

SWITCHYARD_TLS_CERT and SWITCHYARD_TLS_KEY (PEM files) serve TLS;
SWITCHYARD_TLS_CLIENT_CA makes the server require client certificates and
verify them against that CA (mutual TLS). The credentials are gRPC's dynamic
ones: before each new handshake gRPC asks `CertificateFiles.fetch` whether the
certificate changed, and it answers from the files' modification times (or a
SIGHUP's request), so a renewed certificate is served to new connections
while open streams go on undisturbed. A half-written or broken file is not
taken: the previous certificate stays, and the log says why.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

from server.settings import AuthSettings

log = logging.getLogger("switchyard")


class CertificateFiles:
    """The PEM files of the server's certificate (and client CA), watched for changes."""

    __slots__ = ("_ca", "_cert", "_key", "_lock", "_reload", "_stamps")

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self._cert, self._key, self._ca = cert, key, client_ca
        self._stamps = self._read_stamps()
        self._reload = False
        self._lock = threading.Lock()  # fetch runs on gRPC's threads

    @property
    def requires_client_certificates(self) -> bool:
        """Is a client CA configured (mutual TLS)?"""
        return self._ca is not None

    def _paths(self) -> tuple[Path, ...]:
        return (self._cert, self._key) if self._ca is None else (self._cert, self._key, self._ca)

    def _read_stamps(self) -> tuple[int, ...]:
        return tuple(os.stat(path).st_mtime_ns for path in self._paths())

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        """The certificate configuration as the files hold it now (raises on a bad file)."""
        key, cert = self._key.read_bytes(), self._cert.read_bytes()
        ca = None if self._ca is None else self._ca.read_bytes()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def request_reload(self) -> None:
        """Re-read the files before the next handshake (SIGHUP)."""
        self._reload = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's question before a handshake: a new configuration, or None for no change."""
        with self._lock:
            try:
                stamps = self._read_stamps()
            except OSError:
                return None  # a file is being replaced; keep serving the current one
            if stamps == self._stamps and not self._reload:
                return None
            self._reload = False
            try:
                configuration = self.configuration()
            except (OSError, ValueError) as error:
                log.warning(
                    "TLS: kept the current certificate: cannot read the new one (%s)", error
                )
                return None
            self._stamps = stamps
            log.info("TLS: certificate re-read from %s", self._cert)
            return configuration


def certificate_files(settings: AuthSettings) -> CertificateFiles | None:
    """The configured certificate files, or None for plaintext."""
    if not settings.tls_cert:
        return None
    ca = Path(settings.tls_client_ca) if settings.tls_client_ca else None
    return CertificateFiles(Path(settings.tls_cert), Path(settings.tls_key), ca)


def server_credentials(files: CertificateFiles) -> grpc.ServerCredentials:
    """Dynamic TLS credentials over `files`."""
    # gRPC documents None as "no change"; its type stubs do not allow for it.
    fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", files.fetch)
    return grpc.dynamic_ssl_server_credentials(
        files.configuration(),
        fetch,
        require_client_authentication=files.requires_client_certificates,
    )
