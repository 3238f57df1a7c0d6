"""Reverse ETL: each sync's cursor and last run.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("workspace_id", sa.String(64), primary_key=True),
        sa.Column("sync", sa.String(100), primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("running_since", sa.BigInteger),
        sa.Column("last_run_at", sa.BigInteger),
        sa.Column("last_status", sa.String(8)),
        sa.Column("last_error", sa.Text),
        sa.Column("last_rows", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("sent", sa.BigInteger, nullable=False),
        sa.Column("rejected", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sync_runs")
