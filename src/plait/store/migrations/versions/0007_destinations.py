"""Destinations: what each has not delivered for good yet (queued, failed) and its counters.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", BigId, sa.Identity(always=False), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("log_offset", sa.BigInteger, nullable=False),
        sa.Column("person", sa.String(200), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_attempt_at", sa.BigInteger),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_response", sa.Text),
        sa.Column("payload", sa.Text),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint(
            "workspace_id", "destination", "log_offset", name="uq_deliveries_message"
        ),  # fmt: skip
    )
    op.create_index("ix_deliveries_due", "deliveries",
                    ["workspace_id", "destination", "status", "next_attempt_at"])  # fmt: skip
    op.create_index("ix_deliveries_person", "deliveries",
                    ["workspace_id", "destination", "person", "log_offset"])  # fmt: skip
    op.create_table(
        "destination_stats",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("destination", sa.String(100), primary_key=True),
        sa.Column("delivered", sa.BigInteger, nullable=False),
        sa.Column("filtered", sa.BigInteger, nullable=False),
        sa.Column("retried", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_response", sa.Text),
        sa.Column("last_attempt_at", sa.BigInteger),
        sa.Column("last_delivered_at", sa.BigInteger),
        sa.Column("owner", sa.String(64)),
        sa.Column("lease_until", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("destination_stats")
    op.drop_table("deliveries")
