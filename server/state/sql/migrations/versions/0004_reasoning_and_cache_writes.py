"""Reasoning tokens and prompt-cache writes, per call and per attempt (issue 15).

Both are parts of counts the rows had already (reasoning of the output, cache
writes of the input), priced apart: cache writes at the cache-write price. Rows
written before this revision hold 0 for both.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TABLES = ("ledger_calls", "ledger_attempts")
_COLUMNS = ("reasoning_tokens", "cache_write_tokens")


def upgrade() -> None:
    # Added last, in this order: the code's column lists and PostgreSQL's staging tables
    # (LIKE the table, then INSERT ... SELECT *) rely on the order of the columns.
    for table in _TABLES:
        for column in _COLUMNS:
            op.add_column(
                table,
                sa.Column(column, sa.BigInteger, nullable=False, server_default=sa.text("0")),
            )


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            for column in reversed(_COLUMNS):
                batch.drop_column(column)
