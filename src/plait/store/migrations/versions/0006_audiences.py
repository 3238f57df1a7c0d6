"""Computed traits and audiences: memberships and their history, computed values, the
schedule of time-driven re-evaluations, what each definition was backfilled at, and each
profile's cached matches.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audience_members",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("audience_key", sa.String(100), primary_key=True),
        sa.Column("profile_id", sa.String(40), primary_key=True),
        sa.Column("entered_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_audience_members_profile", "audience_members", ["profile_id"])
    op.create_table(
        "audience_history",
        sa.Column("id", BigId, sa.Identity(always=False), primary_key=True),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("audience_key", sa.String(100), nullable=False),
        sa.Column("profile_id", sa.String(40), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
    )
    op.create_index("ix_audience_history_profile_id", "audience_history", ["profile_id"])
    op.create_index(
        "ix_audience_history_key_at", "audience_history", ["workspace_id", "audience_key", "at"]
    )
    op.create_table(
        "computed_values",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("trait_key", sa.String(100), primary_key=True),
        sa.Column("profile_id", sa.String(40), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_computed_values_profile", "computed_values", ["profile_id"])
    op.create_table(
        "audience_schedule",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(40), primary_key=True),
        sa.Column("due_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_audience_schedule_due", "audience_schedule", ["workspace_id", "due_at"])
    op.create_table(
        "audience_state",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(120), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audience_cache",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("profile_id", sa.String(40), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("audience_cache", "audience_state", "audience_schedule", "computed_values",
                  "audience_history", "audience_members"):  # fmt: skip
        op.drop_table(table)
