"""The per-workspace lock that serializes the pipeline's batches with the operations that
must not interleave with one (a quarantine replay, a privacy deletion)."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa


def lock_key(workspace_id: str) -> int:
    digest = hashlib.blake2b(f"pipeline:{workspace_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def workspace_lock(conn: sa.Connection, workspace_id: str, wait: bool = True) -> bool:
    """Take the workspace's lock for the rest of the transaction; False when ``wait`` is
    off and another holds it. On SQLite a write transaction (``Store.write``) is the lock
    already: the database has one writer at a time."""
    if conn.dialect.name != "postgresql":
        return True
    func = sa.func.pg_advisory_xact_lock if wait else sa.func.pg_try_advisory_xact_lock
    result = conn.execute(sa.select(func(lock_key(workspace_id)))).scalar()
    return result is not False
