"""Identity and profiles: settings, profiles, identifiers, edges, removals, lineage,
message profiles, traits and their history, account members; the log indexed per workspace
for the pipeline's per-workspace reads.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "account_members",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "profile_id"),
    )
    with op.batch_alter_table("account_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_account_members_profile_id"), ["profile_id"], unique=False
        )

    op.create_table(
        "identifiers",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "type", "value"),
    )
    with op.batch_alter_table("identifiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identifiers_profile_id"), ["profile_id"], unique=False)

    op.create_table(
        "identity_edges",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("a_type", sa.String(length=64), nullable=False),
        sa.Column("a_value", sa.String(length=256), nullable=False),
        sa.Column("b_type", sa.String(length=64), nullable=False),
        sa.Column("b_value", sa.String(length=256), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "a_type", "a_value", "b_type", "b_value"),
    )
    with op.batch_alter_table("identity_edges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_edges_profile_id"), ["profile_id"], unique=False
        )

    op.create_table(
        "identity_removals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("a_type", sa.String(length=64), nullable=False),
        sa.Column("a_value", sa.String(length=256), nullable=False),
        sa.Column("b_type", sa.String(length=64), nullable=True),
        sa.Column("b_value", sa.String(length=256), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("identity_removals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_identity_removals_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "lineage",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("other_id", sa.String(length=40), nullable=False),
        sa.Column("log_offset", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.String(length=100), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("lineage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lineage_other_id"), ["other_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_profile_id"), ["profile_id"], unique=False)

    op.create_table(
        "message_profiles",
        sa.Column("log_offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("profile_id", sa.String(length=40), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("log_offset"),
    )
    with op.batch_alter_table("message_profiles", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_profiles_profile", ["profile_id", "timestamp"], unique=False
        )

    op.create_table(
        "profiles",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("first_offset", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("merged_into", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("profiles", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_profiles_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "trait_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("trait_history", schema=None) as batch_op:
        batch_op.create_index("ix_trait_history_profile", ["profile_id", "key"], unique=False)

    op.create_table(
        "traits",
        sa.Column("profile_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("profile_id", "key"),
    )
    op.create_table(
        "workspace_settings",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "key"),
    )
    op.create_index("ix_log_workspace_offset", "log_messages", ["workspace_id", "log_offset"])


def downgrade() -> None:
    op.drop_index("ix_log_workspace_offset", "log_messages")
    for table in (
        "workspace_settings", "traits", "trait_history", "profiles", "message_profiles",
        "lineage", "identity_removals", "identity_edges", "identifiers", "account_members",
    ):  # fmt: skip
        op.drop_table(table)
