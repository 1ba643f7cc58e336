"""Assembly: settings -> a started gRPC server with health and reflection.

`create_server` is what `python -m server` and the end-to-end tests both
use: it binds (port 0 picks a free port, reported back), serves the gateway,
the standard health service and reflection, and returns an `App` whose
`stop` drains gracefully. With no relay URL configured it first starts the
embedded relay simulator on a free loopback port and points the gateway at it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from switchyard.admin.v1 import admin_pb2_grpc
from switchyard.v1 import gateway_pb2, gateway_pb2_grpc

from server import admin, reflection
from server.boundary import RpcBoundary
from server.decoding import add_service, refuse_unknown_methods
from server.identity import ApiKeyResolver, FailureThrottle, resolver_for
from server.pipeline import Pipeline, build_pipeline
from server.relay.client import RelayClient
from server.screening import screen
from server.servicer import GatewayServicer
from server.settings import ConfigError, Settings, parse_listen
from server.settings.database import redact
from server.settings.validation import database_target, is_loopback
from server.telemetry import Telemetry
from server.telemetry import setup as setup_telemetry
from server.tls import CertificateFiles, certificate_files, server_credentials

if TYPE_CHECKING:
    from server.simulator import RelaySimulator

log = logging.getLogger("switchyard")

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
_SERVER_OPTIONS = (
    # Never share a port silently with another process (gRPC allows it by default).
    ("grpc.so_reuseport", 0),
    # Let clients keep idle connections alive with pings every 10 s or more.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
)
# A request may hold this much besides its text (SWITCHYARD_MAX_TEXT_BYTES): framing,
# labels, stop sequences, tool definitions, images. With the default text bound the receive
# limit is 4 MiB, gRPC's own default, now set on purpose and raised with the text bound.
# The framing of a call at the default bounds is small (1,000 messages holding 2,000 text
# parts: about 17 KB), and tool definitions have a bound of their own
# (SWITCHYARD_MAX_SCHEMA_BYTES), but inline images have none besides this one. grpc
# decodes a request in one step of the event loop; one over 64 KiB is first counted on
# the wire (server/screening.py), so a flood of messages, parts or lists, or tool
# definitions past their bound, is refused without being decoded. What the count does
# not reach (a tool call's arguments in a message's parts) is bounded by this limit
# alone: a smaller headroom would shorten that step, and refuse inline images that fit
# today (with 64 KiB, any over about 1.1 MB).
_RECEIVE_HEADROOM = 3 * 1024 * 1024


@dataclass(slots=True)
class App:
    """A running gateway: its server, bound port, and what it must close."""

    server: grpc.aio.Server
    port: int
    boundary: RpcBoundary
    pipeline: Pipeline
    relay_url: str
    health: HealthServicer
    relay: RelayClient
    simulator: RelaySimulator | None
    telemetry: Telemetry
    certificates: CertificateFiles | None = None  # TLS: SIGHUP re-reads them

    async def stop(self, grace: float) -> None:
        """Drain: health NOT_SERVING, refuse new calls, give in-flight `grace` s,
        then write out what the stores queue, close the relay pool and flush the
        spans and metrics still queued.

        It returns whatever a store does: closing the stores is bounded (their share
        of the grace plus `slack`), so a store whose close never returns cannot keep
        the process from exiting on SIGTERM."""
        self.boundary.draining = True
        started = time.monotonic()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        # The ledger gets what is left of the grace (at least a second) to write its queue;
        # what it cannot write stays in its journal for the next start.
        within = max(grace - (time.monotonic() - started), 1.0)
        # Past `within`, the rest of the close (stopping the ledger's writer, closing the
        # journal and the database) gets `slack` s; then the stop cancels it and goes on.
        # A defence: the ledger's writer once missed the stop's cancel (Python 3.11's
        # asyncio.wait_for loses a cancel that lands in the turn its awaitable ends in;
        # the stores use asyncio.timeout since) and the close waited for it for ever.
        slack = 5.0
        try:
            async with asyncio.timeout(within + slack):
                await self.pipeline.aclose(within)
        except TimeoutError:
            log.warning(
                "shutdown: the stores did not close within %.3gs; what the ledger has not"
                " written stays in its journal for the next start",
                within + slack,
            )
        await self.relay.aclose()
        if self.simulator is not None:
            await self.simulator.stop()
        await asyncio.to_thread(self.telemetry.shutdown)


async def create_server(settings: Settings, environ: Mapping[str, str] | None = None) -> App:
    """Start everything `settings` describe; the caller owns `App.stop`.

    `environ` holds the OTEL_* variables for telemetry (default: os.environ).
    """
    telemetry = setup_telemetry(
        settings.telemetry,
        os.environ if environ is None else environ,
        known_callers=settings.auth.effective_mode != "none",  # callers are tenants then
    )
    simulator = None
    relay_settings = settings.relay
    relay_url = relay_settings.url
    if relay_url is None:
        simulator, relay_url, key = await start_simulator(settings)
        relay_settings = dataclasses.replace(relay_settings, api_key=key)

    relay = RelayClient(relay_url, relay_settings)
    pipeline = build_pipeline(settings, relay, telemetry)
    try:
        await pipeline.start()
    except BaseException:
        await relay.aclose()
        if simulator is not None:
            await simulator.stop()
        raise
    try:
        certificates = certificate_files(settings.auth)
        credentials = None if certificates is None else server_credentials(certificates)
    except (OSError, ValueError, RuntimeError) as error:
        await _close(pipeline, relay, simulator)
        raise ConfigError(
            "SWITCHYARD_TLS_CERT", f"cannot load the TLS certificate and key: {error}"
        ) from None
    options = dict(_SERVER_OPTIONS)
    if settings.server.worker_index:
        # One of the supervisor's workers (server/workers.py): they share the port it holds.
        options["grpc.so_reuseport"] = 1
    options["grpc.max_receive_message_length"] = settings.limits.max_text_bytes + _RECEIVE_HEADROOM
    server = grpc.aio.server(options=tuple(options.items()))
    boundary = _add_services(server, settings, pipeline, telemetry)
    health = HealthServicer()
    add_service(server, health_pb2_grpc.add_HealthServicer_to_server, health)
    reflection.enable((SERVICE_NAME, admin.SERVICE, "grpc.health.v1.Health"), server)
    refuse_unknown_methods(server, (SERVICE_NAME, admin.SERVICE, "grpc.health.v1.Health"))

    host, _ = parse_listen(settings.server.listen)
    if credentials is None and settings.auth.effective_mode == "api_key" and not is_loopback(host):
        log.warning(
            "API keys will cross the network in plaintext: serve TLS (SWITCHYARD_TLS_CERT and"
            " SWITCHYARD_TLS_KEY) unless a proxy in front of Switchyard ends TLS"
        )
    try:
        if credentials is None:
            port = server.add_insecure_port(settings.server.listen)
        else:
            port = server.add_secure_port(settings.server.listen, credentials)
    except RuntimeError:
        port = 0
    if not port:
        await _close(pipeline, relay, simulator)
        raise ConfigError(
            "SWITCHYARD_LISTEN",
            f"cannot listen on {settings.server.listen}: the address is in use or not local",
        )
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving %s on %s:%d (%s, auth %s), relay %s, ledger %s",
        SERVICE_NAME,
        host,
        port,
        "plaintext" if certificates is None else "TLS",
        settings.auth.effective_mode,
        redact(relay_url),
        database_target(settings).shown,
    )
    return App(
        server,
        port,
        boundary,
        pipeline,
        relay_url,
        health,
        relay,
        simulator,
        telemetry,
        certificates,
    )


async def start_simulator(settings: Settings) -> tuple[RelaySimulator, str, str]:
    """The embedded relay simulator on a free loopback port: it, its URL and its key."""
    from server.simulator import RelaySimulator, SimulatorSettings  # noqa: PLC0415 (only when used)

    # The simulator checks the key like a real relay; this one never leaves the process
    # (or, under several workers, the supervisor and its workers).
    key = "sim-" + secrets.token_hex(8)
    simulator = RelaySimulator(
        SimulatorSettings(
            latency_scale=settings.simulator.latency_scale,
            tokens_per_second=settings.simulator.tokens_per_second,
            api_key=key,
        )
    )
    return simulator, await simulator.start(), key


def _add_services(
    server: grpc.aio.Server, settings: Settings, pipeline: Pipeline, telemetry: Telemetry
) -> RpcBoundary:
    """The gateway and admin services on `server`; the gateway's boundary, for draining."""
    directory = pipeline.stores.directory
    resolver = resolver_for(settings, directory)
    boundary = RpcBoundary(resolver, telemetry)
    add_service(
        server,
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
        GatewayServicer(pipeline, boundary, limits=settings.limits),
        screen(settings.limits),
    )
    # The admin API admits the admin credential only, whatever SWITCHYARD_AUTH is; with
    # api_key auth it shares the gateway's key cache (told of each change at once) and
    # its throttle of failed attempts.
    keys = resolver if isinstance(resolver, ApiKeyResolver) else None
    admin_keys = keys or ApiKeyResolver(
        directory,
        settings.auth.admin_key,
        throttle=FailureThrottle(limit=settings.auth.failure_limit),
    )
    admin_boundary = RpcBoundary(
        admin.AdminResolver(admin_keys, settings.auth.admin_key), telemetry, service=admin.SERVICE
    )
    add_service(
        server,
        admin_pb2_grpc.add_AdminServiceServicer_to_server,
        admin.AdminServicer(
            directory,
            admin_boundary,
            settings.catalog,
            keys=keys,
            rotation_grace=settings.auth.rotation_grace,
        ),
    )
    return boundary


async def _close(pipeline: Pipeline, relay: RelayClient, simulator: RelaySimulator | None) -> None:
    """Undo a start that failed part way."""
    await pipeline.aclose()
    await relay.aclose()
    if simulator is not None:
        await simulator.stop()
