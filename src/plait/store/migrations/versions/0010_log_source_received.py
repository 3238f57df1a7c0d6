"""The log's arrivals by source: (workspace_id, source_id, received_at). The console's
overview counts a source's arrivals in each minute as ranges of this index (1,000,000
events: 1.2 s reading the rows and grouping them -> ranges of the index), and the SQLite
dedup window's restart reads recent ids source by source with it. It replaces the index on
received_at alone (as many indexes as before: appends pay only wider entries).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_index("ix_log_source_received", "log_messages",
                    ["workspace_id", "source_id", "received_at"])  # fmt: skip
    op.drop_index("ix_log_received_at", "log_messages")


def downgrade() -> None:
    op.create_index("ix_log_received_at", "log_messages", ["received_at"])
    op.drop_index("ix_log_source_received", "log_messages")
