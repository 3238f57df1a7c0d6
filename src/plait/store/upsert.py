"""INSERT ... ON CONFLICT for both engines (SQLite and PostgreSQL share the syntax)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: list[dict],
    keys: list[str],
    update_if: Callable[[Any], sa.ColumnElement[bool]] | None = None,
) -> None:
    """Insert ``rows``; where a row's ``keys`` (a unique index) exist, replace its other
    columns (only where ``update_if(excluded)`` holds, if given: ``excluded`` is the row
    offered)."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    columns = [c for c in rows[0] if c not in keys]
    if columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c: stmt.excluded[c] for c in columns},
            where=update_if(stmt.excluded) if update_if is not None else None,
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt, rows)
