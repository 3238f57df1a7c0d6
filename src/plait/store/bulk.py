"""Many-row inserts straight through the driver's executemany."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa


def insert_rows(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[tuple]
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order). SQLAlchemy's per-row parameter
    handling cost the pipeline more than SQLite's inserts did."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    conn.exec_driver_sql(sql, rows)


def update_many(
    conn: sa.Connection, table: sa.Table, column: str, key: str, pairs: list[tuple]
) -> None:
    """``UPDATE table SET column = new WHERE key = old`` for each (new, old) pair."""
    if not pairs:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(f"UPDATE {table.name} SET {column} = {mark} WHERE {key} = {mark}", pairs)
