"""INSERT ... ON CONFLICT for both engines (SQLite and PostgreSQL share the syntax)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert(
    conn: sa.Connection, table: sa.Table, rows: list[dict], keys: list[str], update: bool = True
) -> None:
    """Insert ``rows``; where a row's ``keys`` (a unique index) exist, replace its other
    columns, or with ``update=False`` keep the existing row."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    columns = [c for c in rows[0] if c not in keys]
    if update and columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={c: stmt.excluded[c] for c in columns}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt, rows)
