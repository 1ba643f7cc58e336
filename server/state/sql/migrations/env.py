"""Alembic's environment for the ledger's schema: run on the connection it is handed.

Switchyard runs migrations itself (``server/state/sql/migrate.py``): at start-up
under a lock, or with `switchyard db upgrade`. It passes the connection in
`config.attributes["connection"]`, already inside the transaction that holds
the lock, so this file only configures Alembic on it.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
