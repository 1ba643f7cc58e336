"""Start-up: settings -> server -> serve until SIGTERM or SIGINT.

`python -m server` (or the `switchyard-server` script). Exit codes: 0 after a
graceful stop, 2 for bad configuration (the message names the setting).
With SWITCHYARD_WORKERS above 1 it supervises that many gateway processes on
one port instead (``server/workers.py``; 1 when it gives up restarting one).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from server.app import SERVICE_NAME, App, create_server
from server.settings import ConfigError, Settings, load_settings, parse_listen
from server.settings.database import redact
from server.settings.validation import database_target
from server.workers import die_with_parent, ready_line, supervise

log = logging.getLogger("switchyard")


USAGE = """usage: python -m server   (or: switchyard serve [--workers N])

Serves the Switchyard gateway until SIGTERM or SIGINT. It takes no arguments: it is
configured by SWITCHYARD_* environment variables and the TOML file SWITCHYARD_CONFIG
names (the README's Configuration section lists them all). With no SWITCHYARD_RELAY_URL
it serves its embedded relay simulator on 127.0.0.1:50051.

exit codes: 0 after a graceful stop, 2 for bad configuration (the message names the
setting)
"""


def main(arguments: list[str] | None = None) -> None:
    """Run the gateway until a signal asks it to stop (`arguments`: the command line's)."""
    arguments = sys.argv[1:] if arguments is None else arguments
    if arguments:
        if arguments[0] in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        sys.stderr.write(f"switchyard: unexpected argument {arguments[0]!r}\n{USAGE}")
        raise SystemExit(2)
    try:
        settings = load_settings(os.environ)
    except ConfigError as error:
        sys.stderr.write(f"switchyard: configuration error: {error}\n")
        raise SystemExit(2) from None
    index = settings.server.worker_index
    tag = f"[worker {index}]" if index else ""  # a worker's lines share its supervisor's stderr
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s",
    )
    # httpx logs every relay request at INFO; one line per call is noise, and work.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO; Switchyard logs the migration itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if index:
        die_with_parent()
    try:
        if settings.server.workers > 1:
            code = asyncio.run(
                supervise(settings, os.environ, functools.partial(supervisor_banner, settings))
            )
            raise SystemExit(code)
        asyncio.run(serve(settings))
    except ConfigError as error:
        sys.stderr.write(f"switchyard: configuration error: {error}\n")
        raise SystemExit(2) from None


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain within the grace period."""
    app = await create_server(settings)
    # What start-up made (modules, the catalog, the stubs, the database's and the
    # exporters' objects) lives as long as the process: frozen out of the collector's
    # sight, so a full collection scans only what the calls made. Without this, each
    # full collection scanned ~95,000 objects and paused every call and health check
    # for 60-110 ms (measured on the test machine); frozen, a few ms.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if app.certificates is not None:
        loop.add_signal_handler(signal.SIGHUP, app.certificates.request_reload)
    # A worker tells its supervisor it serves; the supervisor prints the one banner.
    worker = settings.server.worker_index
    print(ready_line(app.port) if worker else banner(settings, app), flush=True)
    await stop.wait()
    grace = settings.server.shutdown_grace
    log.info("stopping: health NOT_SERVING, new calls refused, %gs for calls in flight", grace)
    await app.stop(grace)
    log.info("stopped")


def banner(settings: Settings, app: App) -> str:
    """What the terminal shows once serving: where, on what, and a call to try."""
    relay = (
        f"embedded relay simulator at {app.relay_url} (set SWITCHYARD_RELAY_URL for a real relay)"
        if app.simulator is not None
        else redact(app.relay_url)  # a password in the URL is never printed
    )
    return _banner(settings, app.port, relay, tls=app.certificates is not None)


def supervisor_banner(settings: Settings, port: int, relay_url: str) -> str:
    """The banner of a supervisor, once its workers all serve."""
    workers = settings.server.workers
    relay = (
        f"embedded relay simulator at {relay_url}, shared by the {workers} workers"
        " (set SWITCHYARD_RELAY_URL for a real relay)"
        if settings.relay.url is None
        else redact(relay_url)
    )
    return _banner(settings, port, relay, tls=bool(settings.auth.tls_cert), workers=workers)


def _banner(settings: Settings, port: int, relay: str, *, tls: bool, workers: int = 1) -> str:
    host, _ = parse_listen(settings.server.listen)
    address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    mode = settings.auth.effective_mode
    if not tls:
        transport, url = "plaintext", f"--http2-prior-knowledge http://{address}"
    else:
        transport, url = "TLS", f"https://{address}"
        if settings.auth.tls_client_ca:
            transport += ", client certificates required"
    if workers > 1:
        transport += f"; {workers} worker processes, supervised by pid {os.getpid()}"
    header = "" if mode != "api_key" else ' -H "authorization: Bearer $SWITCHYARD_API_KEY"'
    auth = {
        "none": "none (callers name themselves in x-switchyard-caller)",
        "api_key": "API keys (make one: switchyard keys create --tenant NAME)",
        "mtls": "client certificates bound to tenants",
    }[mode]
    return (
        f"Switchyard is serving {SERVICE_NAME} on {address} ({transport})\n"
        f"relay: {relay}\n"
        f"ledger: {database_target(settings).shown}\n"
        f"auth: {auth}\n"
        "try it:\n"
        f"  {_buf()} curl --protocol grpc{header} {url}/{SERVICE_NAME}/StreamQuery"
        """ -d '{"query": {"prompt": "Compare two sorting algorithms"}}'\n"""
        "stop with Ctrl-C"
    )


def _buf() -> str:
    """buf as a command that works when pasted here: the one beside this Python (make run
    installs it into .venv/bin), relative to the current folder when it is below it."""
    beside = Path(sys.executable).parent / "buf"
    if not beside.exists():
        return "buf"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


if __name__ == "__main__":
    main()
