"""Many-row inserts straight through the driver's executemany."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import sqlalchemy as sa

# Values per IN list (a pair takes two parameters): SQLite allows 32,766 parameters per
# statement since 3.32, PostgreSQL 65,535.
CHUNK = 4000


def chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def mark(dialect: sa.Dialect) -> str:
    """The driver's parameter placeholder: sqlite3's ``?`` or psycopg's ``%s``."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def insert_rows(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: list[tuple]
) -> None:
    """Insert ``rows`` (tuples in ``columns`` order). SQLAlchemy's per-row parameter
    handling cost the pipeline more than SQLite's inserts did."""
    if not rows:
        return
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join([mark(conn.dialect)] * len(columns))})"
    )
    conn.exec_driver_sql(sql, rows)


def update_many(
    conn: sa.Connection,
    table: sa.Table,
    column: str,
    key: str | Sequence[str],
    rows: list[tuple],
) -> None:
    """``UPDATE table SET column = new WHERE key = old`` for each (new, *old) row; a key
    of several columns takes as many old values, in its order."""
    if not rows:
        return
    p = mark(conn.dialect)
    where = " AND ".join(f"{k} = {p}" for k in ([key] if isinstance(key, str) else key))
    conn.exec_driver_sql(f"UPDATE {table.name} SET {column} = {p} WHERE {where}", rows)


def select_in(conn: sa.Connection, sql: str, keys: Sequence, fixed: tuple = ()) -> list[tuple]:
    """Rows of ``sql`` for many keys: its ``{keys}`` is replaced by a list of placeholders
    (row values for tuple keys), ``?`` marks the ``fixed`` parameters before it. Plain SQL:
    SQLAlchemy compiled every expanding IN anew (~0.7 ms a statement in the pipeline)."""
    rows: list[tuple] = []
    qmark = mark(conn.dialect) == "?"
    for part in chunks(list(keys)):
        if isinstance(part[0], tuple):
            one = "(" + ", ".join(["?"] * len(part[0])) + ")"
            params = [*fixed, *(value for key in part for value in key)]
        else:
            one, params = "?", [*fixed, *part]
        text = sql.replace("{keys}", ", ".join([one] * len(part)))
        rows += conn.exec_driver_sql(text if qmark else text.replace("?", "%s"), tuple(params))
    return rows
