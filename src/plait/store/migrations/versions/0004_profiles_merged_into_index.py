"""Index profiles.merged_into: merges repoint the ids merged into a merged-away profile,
and without it each merge scanned every profile.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_index("ix_profiles_merged_into", "profiles", ["merged_into"])


def downgrade() -> None:
    op.drop_index("ix_profiles_merged_into", "profiles")
