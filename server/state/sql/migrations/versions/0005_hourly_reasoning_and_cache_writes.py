"""Reasoning tokens and prompt-cache writes in the hourly model totals too.

Revision 0004 added them to each call and attempt; GetUsage's totals of a
window older than the retention come from the hourly totals, which now keep
them as well. Hours folded before this revision hold 0 for both: their
attempts are gone, so what they held cannot be recovered.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLE = "ledger_hourly_models"
_COLUMNS = ("reasoning_tokens", "cache_write_tokens")


def upgrade() -> None:
    for column in _COLUMNS:
        op.add_column(
            _TABLE, sa.Column(column, sa.BigInteger, nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column)
