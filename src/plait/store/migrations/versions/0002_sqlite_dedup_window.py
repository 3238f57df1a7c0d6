"""Log: an index on received_at; on SQLite, no unique index on (workspace, messageId).

On SQLite the unique index cost ~14 of every 17 µs an append spends per row: messageIds
are random, so each new row dirties a random index page, and WAL mode writes every dirty
page whole at commit. The SQLite log backend now deduplicates against the messageIds of
its recent rows in memory (see plait.log.dedup). PostgreSQL keeps its unique index.
received_at is indexed to load that window at start (and, later, to replay time ranges).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"

_SQLITE_LOG = """
CREATE TABLE log_messages_new (
    log_offset INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    workspace_id VARCHAR(64) NOT NULL,
    source_id VARCHAR(64) NOT NULL,
    message_id VARCHAR(100) NOT NULL,
    type VARCHAR(16) NOT NULL,
    received_at BIGINT NOT NULL,
    payload TEXT NOT NULL
)
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop a table's constraint: copy the rows into a table without it.
        # Explicit offsets carry AUTOINCREMENT's high-water mark over to the new table.
        op.execute(_SQLITE_LOG)
        op.execute("INSERT INTO log_messages_new SELECT * FROM log_messages ORDER BY log_offset")
        op.execute("DROP TABLE log_messages")
        op.execute("ALTER TABLE log_messages_new RENAME TO log_messages")
    op.create_index("ix_log_received_at", "log_messages", ["received_at"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Rows the window let through twice (after 24 h) would break a unique index.
        raise NotImplementedError("0002 cannot be undone on SQLite")
    op.drop_index("ix_log_received_at", "log_messages")
