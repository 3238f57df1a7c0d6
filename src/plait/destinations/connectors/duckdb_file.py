"""A DuckDB database file in Segment's warehouse schema (the same tables, columns and types
as the PostgreSQL warehouse: plait.destinations.warehouse_schema), for analysts who want
a file (``path``) rather than a server; ``COPY … TO '….parquet'`` turns any table into
Parquet.

A batch is one transaction: ``INSERT … ON CONFLICT (id) DO NOTHING`` (``users``: upserted,
a trait missing from a later identify keeping its value), so a batch loaded twice stays
one row each; tables and columns are created as they first appear, never dropped. One
connection per file in the process (DuckDB lets one process write a file), used by one
load at a time; another process holding the file makes the load retry.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import duckdb
import httpx

from plait.destinations import warehouse_schema as ws
from plait.destinations.connectors.base import Connector, Item, Outcome, Setting, known_settings
from plait.store.workspaces import Invalid

SETTINGS = {
    "path": Setting(
        required=True, example="/var/lib/plait/events.duckdb", about="the database file"
    ),
    "schema": Setting(example="plait"),
}
KINDS = {"VARCHAR": "text", "BIGINT": "bigint", "DOUBLE": "double precision",
         "BOOLEAN": "boolean", "TIMESTAMP WITH TIME ZONE": "timestamptz"}  # fmt: skip


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBFile(Connector):
    name = "duckdb"
    max_batch = 10_000
    default_batch = 1000
    lanes = 1  # one writer per file

    def __init__(self) -> None:
        self._files: dict[str, tuple[duckdb.DuckDBPyConnection, threading.Lock]] = {}
        self._lock = threading.Lock()

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        path = settings.get("path")
        if not isinstance(path, str) or not path.strip():
            raise Invalid(f"{where}.path", "required: the database file's path")
        schema = settings.get("schema", "plait")
        if not isinstance(schema, str) or ws.snake(schema) != schema:
            raise Invalid(f"{where}.schema", "a snake_case name (a-z, 0-9 and _)")
        return {"path": str(Path(path).expanduser().resolve()), "schema": schema}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        return await asyncio.to_thread(self.load, settings, items)

    def _file(self, path: str) -> tuple[duckdb.DuckDBPyConnection, threading.Lock]:
        with self._lock:
            if path not in self._files:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._files[path] = (duckdb.connect(path), threading.Lock())
            return self._files[path]

    def close(self, path: str) -> None:
        """Let go of a file (tests, or before another process reads it)."""
        with self._lock:
            found = self._files.pop(str(Path(path).resolve()), None)
        if found is not None:
            with found[1]:
                found[0].close()

    def load(self, settings: dict[str, Any], items: list[Item]) -> list[Outcome]:
        tables = ws.tables_of([item.message for item in items])
        try:
            con, lock = self._file(settings["path"])
        except duckdb.IOException as exc:  # another process has the file
            return [Outcome(False, retry=True, response=str(exc)[:1000])] * len(items)
        schema = _quote(settings["schema"])
        with lock:
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                for table, rows in tables.items():
                    self._insert(con, settings["schema"], table, rows)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                return [Outcome(False, response=f"{type(exc).__name__}: {exc}"[:1000])] * len(items)
        return [Outcome(True, response=f"loaded into {len(tables)} tables")] * len(items)

    def _insert(self, con: duckdb.DuckDBPyConnection, schema: str, table: str,
                rows: list[dict[str, Any]]) -> None:  # fmt: skip
        target = f"{_quote(schema)}.{_quote(table)}"
        con.execute(f"CREATE TABLE IF NOT EXISTS {target} (id VARCHAR PRIMARY KEY, "
                    "uuid_ts TIMESTAMPTZ)")  # fmt: skip
        have = {name: KINDS.get(kind, "text") for name, kind in con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?", [schema, table]).fetchall()}  # fmt: skip
        for row in rows:
            for column, value in row.items():
                if column not in have and value is not None:
                    have[column] = ws.column_type(column, value)
                    con.execute(f"ALTER TABLE {target} ADD COLUMN {_quote(column)} "
                                f"{have[column]}")  # fmt: skip
        columns = sorted({c for row in rows for c in row if c in have})
        to = [ws.converter(have[c]) for c in columns]
        names = ", ".join(map(_quote, columns))
        marks = ", ".join("?" * len(columns))
        if table == "users":
            sets = ", ".join(f"{_quote(c)} = coalesce(EXCLUDED.{_quote(c)}, {_quote(c)})"
                             for c in columns if c != "id")  # fmt: skip
            conflict = f"DO UPDATE SET {sets}"
        else:
            conflict = "DO NOTHING"
        con.executemany(
            f"INSERT INTO {target} ({names}) VALUES ({marks}) ON CONFLICT (id) {conflict}",
            [[f(row.get(c)) for c, f in zip(columns, to, strict=True)] for row in rows],
        )
