"""Tenants, the certificate identities bound to them, and their API keys (hashes only).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("day_budget_nanos", sa.BigInteger),
        sa.Column("month_budget_nanos", sa.BigInteger),
        sa.Column("rpm", sa.BigInteger, nullable=False),
        sa.Column("tpm", sa.BigInteger, nullable=False),
        sa.Column("models", sa.Text, nullable=False),  # a JSON array; [] for every model
        sa.Column("labels", sa.Text, nullable=False),  # a JSON object
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tenant_identities",
        sa.Column("identity", sa.Text, primary_key=True),  # SPIFFE ID or DNS name
        sa.Column("tenant", sa.Text, nullable=False),
    )
    op.create_index("tenant_identities_tenant", "tenant_identities", ["tenant"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),  # SHA-256 of the secret, hex
        sa.Column("previous_hash", sa.Text),
        sa.Column("previous_until_us", sa.BigInteger),
        sa.Column("expires_at_us", sa.BigInteger),
        sa.Column("revoked_at_us", sa.BigInteger),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("rotated_at_us", sa.BigInteger),
    )
    op.create_index("api_keys_tenant", "api_keys", ["tenant"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("tenant_identities")
    op.drop_table("tenants")
