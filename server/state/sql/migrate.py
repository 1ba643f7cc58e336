"""Schema migrations (Alembic), run at start-up under a lock or by `switchyard db upgrade`.

Every replica starting at once runs `upgrade`; PostgreSQL serialises them
with a transaction-scoped advisory lock taken in the migration's own
transaction, so one replica migrates and the others find the schema current.
SQLite is written by one process only (the data directory's lock says so).
SQLAlchemy and Alembic are imported only here, and only when the schema is
behind: a gateway whose database is current starts without them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from server.settings.database import DatabaseTarget

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0005"  # the newest revision under migrations/versions (a test checks they agree)
log = logging.getLogger("switchyard")
_LOCK_KEY = 0x5377_7963_6800  # pg_advisory_xact_lock key: "Swych" and a zero


def sqlalchemy_url(target: DatabaseTarget) -> str:
    """The SQLAlchemy URL of `target` (asyncpg for PostgreSQL, the stdlib driver for SQLite)."""
    if target.kind == "sqlite":
        return f"sqlite:///{target.path}"
    rest = target.dsn.split("://", 1)[1]
    return f"postgresql+asyncpg://{rest}"


def _run(connection: Any, revision: str) -> None:
    from alembic import command  # noqa: PLC0415 (only when migrating)
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    log.info("ledger: migrating the schema to revision %s", revision)
    command.upgrade(config, revision)


def upgrade_sqlite(path: Path, revision: str = "head") -> None:
    """Bring the SQLite file at `path` to `revision` (blocking: call from a thread)."""
    from sqlalchemy import create_engine  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            _run(connection, revision)
    finally:
        engine.dispose()


async def upgrade_postgres(dsn: str, revision: str = "head") -> None:
    """Bring the PostgreSQL database at `dsn` to `revision`, one replica at a time."""
    from sqlalchemy import text  # noqa: PLC0415
    from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415

    engine = create_async_engine(sqlalchemy_url(DatabaseTarget("postgresql", dsn=dsn)))
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"))
            await connection.run_sync(_run, revision)
    finally:
        await engine.dispose()


def command_upgrade(out: TextIO, err: TextIO, environ: Mapping[str, str] | None = None) -> int:
    """`switchyard db upgrade`: migrate the configured database to head; the exit code."""
    from server.settings import ConfigError, load_settings  # noqa: PLC0415
    from server.settings.validation import database_target  # noqa: PLC0415

    try:
        settings = load_settings(os.environ if environ is None else environ)
        target = database_target(settings)
    except ConfigError as error:
        err.write(f"switchyard: configuration error: {error}\n")
        return 2
    if target.kind == "memory":
        out.write("the ledger is in memory (SWITCHYARD_DATABASE_URL=memory): nothing to migrate\n")
        return 0
    try:
        if target.kind == "sqlite":
            assert target.path is not None
            upgrade_sqlite(target.path)
        else:
            asyncio.run(upgrade_postgres(target.dsn))
    except Exception as error:  # the driver's own error may carry the URL: name only its type
        err.write(
            f"switchyard: cannot migrate {target.shown}: {type(error).__name__};"
            " check SWITCHYARD_DATABASE_URL and that the database answers\n"
        )
        return 2
    out.write(f"{target.shown}: schema at revision {HEAD}\n")
    return 0
