"""Start-up: settings -> server -> serve until SIGTERM or SIGINT.

`python -m server` (or the `switchyard-server` script). Exit codes: 0 after a
graceful stop, 2 for bad configuration (the message names the setting).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from server.app import SERVICE_NAME, create_server
from server.settings import ConfigError, Settings, load_settings, parse_listen
from server.settings.validation import database_target

log = logging.getLogger("switchyard")


def main() -> None:
    """Run the gateway until a signal asks it to stop."""
    try:
        settings = load_settings(os.environ)
    except ConfigError as error:
        sys.stderr.write(f"switchyard: configuration error: {error}\n")
        raise SystemExit(2) from None
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every relay request at INFO; one line per call is noise, and work.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO; Switchyard logs the migration itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings))
    except ConfigError as error:
        sys.stderr.write(f"switchyard: configuration error: {error}\n")
        raise SystemExit(2) from None


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain within the grace period."""
    app = await create_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host, _ = parse_listen(settings.server.listen)
    address = f"{host}:{app.port}" if ":" not in host else f"[{host}]:{app.port}"
    relay = (
        f"embedded relay simulator at {app.relay_url} (set SWITCHYARD_RELAY_URL for a real relay)"
        if app.simulator is not None
        else app.relay_url
    )
    print(
        f"Switchyard is serving {SERVICE_NAME} on {address}\n"
        f"relay: {relay}\n"
        f"ledger: {database_target(settings).shown}\n"
        "try it (buf is installed in .venv/bin):\n"
        f"  buf curl --protocol grpc --http2-prior-knowledge"
        f" http://{address}/{SERVICE_NAME}/StreamQuery"
        """ -d '{"query": {"prompt": "Compare two sorting algorithms"}}'\n"""
        "stop with Ctrl-C",
        flush=True,
    )
    await stop.wait()
    grace = settings.server.shutdown_grace
    log.info("stopping: health NOT_SERVING, new calls refused, %gs for calls in flight", grace)
    await app.stop(grace)
    log.info("stopped")


if __name__ == "__main__":
    main()
