"""Hourly totals per tenant (and per model) that calls past the retention fold into.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_hourly_calls",
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("hour_us", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("cache_hits", sa.BigInteger, nullable=False),
        sa.Column("cache_misses", sa.BigInteger, nullable=False),
        sa.Column("saved_cost_nanos", sa.BigInteger, nullable=False),
        sa.Column("cost_nanos", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ledger_hourly_models",
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("hour_us", sa.BigInteger, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("attempts", sa.BigInteger, nullable=False),
        sa.Column("failed_attempts", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_nanos", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_hourly_models")
    op.drop_table("ledger_hourly_calls")
