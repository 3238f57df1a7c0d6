"""SQL over one workspace's lake, read-only, in an in-memory DuckDB connection.

The views (``events``, ``tracks``, ``identifies``, ``pages``, ``profiles``, ``identifiers``,
``traits``, ``memberships``) read only the workspace's own directories. Then the connection
is confined: file access is allowed under those directories only (``allowed_directories``
with ``enable_external_access=false``), and the configuration is locked, so a query's
``read_parquet('<another workspace>')``, ``COPY``, ``ATTACH`` or ``INSTALL`` fails. Only one
SELECT (or WITH ... SELECT) statement runs, told by DuckDB's own parser.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from plait.lake.writer import (
    EVENT_SCHEMA,
    SNAPSHOT_SCHEMAS,
    current_snapshot,
    event_files,
    events_dir,
    lake_lock,
    profiles_dir,
)

DEFAULT_LIMIT = 10_000
TIMEOUT_SECONDS = 60.0
MEMORY_LIMIT = "2GB"


class LakeQueryError(ValueError):
    """SQL that is not allowed, or that DuckDB could not run (the message says why)."""


_DUCK_TYPES = {
    pa.int64(): "BIGINT",
    pa.string(): "VARCHAR",
    pa.timestamp("ms", tz="UTC"): "TIMESTAMPTZ",
    pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ",
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source(files: str | None, schema: pa.Schema) -> str:
    """A relation reading ``files`` (a glob), or an empty one of the same columns."""
    if files is not None:
        # Every file has the writer's schema: no union_by_name (it reads every footer again
        # for each view that binds the relation, ~3x slower to connect).
        return f"read_parquet({_literal(files)}, hive_partitioning=false)"
    columns = ", ".join(f"CAST(NULL AS {_DUCK_TYPES[f.type]}) AS {f.name}" for f in schema)
    return f"(SELECT {columns} WHERE false)"


def _views(con: duckdb.DuckDBPyConnection, lake_dir: Path, workspace_id: str) -> list[str]:
    """Create the workspace's views; returns the directories they read."""
    events_root = events_dir(lake_dir, workspace_id)
    events = _source(
        str(events_root / "day=*" / "part-*.parquet")
        if next(event_files(lake_dir, workspace_id), None)
        else None,
        EVENT_SCHEMA,
    )
    snapshot = current_snapshot(lake_dir, workspace_id)
    snap = {
        name: _source(str(snapshot / f"{name}.parquet") if snapshot else None, schema)
        for name, schema in SNAPSHOT_SCHEMAS.items()
    }
    statements = [
        f"CREATE VIEW all_profiles AS SELECT * FROM {snap['profiles']}",
        # Profiles merged away point at their survivor (kept one hop deep): an event names
        # the profile it belongs to now, and original_profile_id the one it was given.
        "CREATE VIEW events AS SELECT e.* REPLACE (coalesce(p.merged_into, e.profile_id) "
        "AS profile_id), e.profile_id AS original_profile_id "
        f"FROM {events} e LEFT JOIN (SELECT profile_id, merged_into FROM all_profiles "
        "WHERE merged_into IS NOT NULL) p ON p.profile_id = e.profile_id",
        "CREATE VIEW tracks AS SELECT * FROM events WHERE type = 'track'",
        "CREATE VIEW identifies AS SELECT * FROM events WHERE type = 'identify'",
        "CREATE VIEW pages AS SELECT * FROM events WHERE type = 'page'",
        "CREATE VIEW screens AS SELECT * FROM events WHERE type = 'screen'",
        "CREATE VIEW groups AS SELECT * FROM events WHERE type = 'group'",
        "CREATE VIEW profiles AS SELECT * EXCLUDE (merged_into) FROM all_profiles "
        "WHERE merged_into IS NULL",
        f"CREATE VIEW identifiers AS SELECT * FROM {snap['identifiers']}",
        f"CREATE VIEW traits AS SELECT * FROM {snap['traits']}",
        f"CREATE VIEW memberships AS SELECT * FROM {snap['account_members']}",
    ]
    for statement in statements:
        con.execute(statement)
    return [str(events_root) + "/", str(profiles_dir(lake_dir, workspace_id)) + "/"]


def connect(lake_dir: Path, workspace_id: str) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the workspace's views, confined to its directories."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})  # fmt: skip
    try:
        con.execute("SET TimeZone = 'UTC'")
        allowed = _views(con, Path(lake_dir), workspace_id)
        con.execute(f"SET memory_limit = {_literal(MEMORY_LIMIT)}")
        con.execute(f"SET allowed_directories = [{', '.join(map(_literal, allowed))}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def check_select(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one SELECT statement (WITH ... SELECT is one too)."""
    if not sql or not sql.strip():
        raise LakeQueryError("empty SQL")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        error = _message(exc)
    else:
        error = None
    if error is not None:  # raised outside the handler: no reference to DuckDB's objects
        raise LakeQueryError(error)
    if len(statements) != 1:
        raise LakeQueryError(f"one statement at a time ({len(statements)} given)")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise LakeQueryError(f"only SELECT is allowed (this is {kind.name})")


def _message(exc: BaseException) -> str:
    return str(exc).strip()


def run_sql(
    lake_dir: Path,
    workspace_id: str,
    sql: str,
    limit: int = DEFAULT_LIMIT,
    timeout: float = TIMEOUT_SECONDS,
) -> tuple[list[str], list[tuple]]:
    """Run one SELECT over the workspace's lake: (column names, at most ``limit`` rows)."""
    with lake_lock(lake_dir, workspace_id, shared=True):
        return _run_sql(lake_dir, workspace_id, sql, limit, timeout)


def _run_sql(
    lake_dir: Path, workspace_id: str, sql: str, limit: int, timeout: float
) -> tuple[list[str], list[tuple]]:
    con = connect(lake_dir, workspace_id)
    timer = threading.Timer(timeout, con.interrupt)
    try:
        check_select(con, sql)
        timer.start()
        try:
            relation = con.sql(sql)
            # DuckDB 2 names it to_arrow_reader; 1.x record_batch.
            to_reader = getattr(relation, "to_arrow_reader", None) or relation.record_batch
            reader = to_reader(min(limit, 100_000))
            columns = list(reader.schema.names)
            rows: list[tuple] = []
            while len(rows) < limit:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                # Through Arrow: times with time zones come back as datetime (UTC).
                rows.extend(zip(*(c.to_pylist() for c in batch.columns), strict=True))
            rows = rows[:limit]
        except duckdb.InterruptException:
            error = f"the query took longer than {timeout:g} s"
        except duckdb.Error as exc:
            error = _message(exc)
        else:
            return columns, rows
        # Raised outside the handler, so the error keeps no reference to DuckDB's objects
        # (a server thread would keep them alive).
        raise LakeQueryError(error)
    finally:
        timer.cancel()
        con.close()


def jsonable(value: Any) -> Any:
    """A DuckDB value as JSON can carry it (times as ISO 8601, decimals as numbers)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return str(value)
