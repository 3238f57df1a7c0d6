"""PostgreSQL warehouse: messages loaded in Segment's warehouse schema
(plait.destinations.warehouse_schema) into ``schema`` of the database at ``url``.

A batch is one transaction: per table, its rows are COPYed into a temporary table and
inserted from there, ``ON CONFLICT (id) DO NOTHING`` (a message loaded twice, after a
crash or a replay, stays one row); ``users`` is upserted on the user id, a trait missing
from a later identify keeping its value. Tables and columns are created as they first
appear (``ADD COLUMN``, never dropped), under an advisory lock so concurrent loads never
race. A lost connection is retried; an error PostgreSQL raises for the data (which
should not happen: values are converted to the columns' types) makes the batch a dead
letter with the error.
"""

from __future__ import annotations

import asyncio
import queue as queues
import threading
import zlib
from typing import Any

import httpx
import psycopg
from psycopg import sql

from plait.destinations import warehouse_schema as ws
from plait.destinations.connectors.base import Connector, Item, Outcome, Setting, known_settings
from plait.store.workspaces import Invalid

SETTINGS = {
    "url": Setting(required=True, example="postgresql://plait@db.example.com/warehouse"),
    "schema": Setting(example="plait"),
}
POOL = 8  # connections per database (a destination's lanes load at once)


class _Pool:
    """A few connections to one database, each used by one load at a time."""

    def __init__(self, url: str):
        self.url = url
        self.idle: queues.SimpleQueue[psycopg.Connection] = queues.SimpleQueue()
        self.slots = threading.BoundedSemaphore(POOL)

    def take(self) -> psycopg.Connection:
        self.slots.acquire()
        try:
            conn = self.idle.get_nowait()
        except queues.Empty:
            try:
                return psycopg.connect(self.url, connect_timeout=10, autocommit=True)
            except BaseException:
                self.slots.release()
                raise
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            conn = psycopg.connect(self.url, connect_timeout=10, autocommit=True)
        return conn

    def give(self, conn: psycopg.Connection, broken: bool = False) -> None:
        if broken:
            conn.close()
        else:
            self.idle.put(conn)
        self.slots.release()


class Postgres(Connector):
    name = "postgres"
    max_batch = 10_000
    default_batch = 1000
    lanes = 2  # loads are CPU-bound in Python: more lanes only contend for the GIL
    secrets = ("url",)  # it may hold a password

    def __init__(self) -> None:
        self._pools: dict[str, _Pool] = {}
        self._columns: dict[tuple[str, str, str], dict[str, str]] = {}  # (url, schema, table)
        self._lock = threading.Lock()

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        url = settings.get("url")
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise Invalid(f"{where}.url", "required: a postgresql:// URL")
        schema = settings.get("schema", "plait")
        if not isinstance(schema, str) or ws.snake(schema) != schema:
            raise Invalid(f"{where}.schema", "a snake_case name (a-z, 0-9 and _)")
        return {"url": url, "schema": schema}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        return await asyncio.to_thread(self.load, settings, items)

    # Loading -------------------------------------------------------------------------------

    def load(self, settings: dict[str, Any], items: list[Item]) -> list[Outcome]:
        tables = ws.tables_of([item.message for item in items])
        with self._lock:
            pool = self._pools.setdefault(settings["url"], _Pool(settings["url"]))
        try:
            conn = pool.take()
        except psycopg.Error as exc:
            return [Outcome(False, retry=True, response=f"connect: {exc}"[:1000])] * len(items)
        broken = False
        try:
            self._ensure(conn, settings, tables)
            with conn.transaction():
                for n, (table, rows) in enumerate(tables.items()):
                    self._insert(conn, settings, table, rows, f"load_{n}")
            return [Outcome(True, response=f"loaded into {len(tables)} tables")] * len(items)
        except psycopg.OperationalError as exc:
            broken = True
            return [Outcome(False, retry=True, response=str(exc)[:1000])] * len(items)
        except psycopg.Error as exc:
            self._forget(settings)  # the schema may differ from what was cached
            return [Outcome(False, response=f"{type(exc).__name__}: {exc}"[:1000])] * len(items)
        finally:
            pool.give(conn, broken or conn.closed)

    def _forget(self, settings: dict[str, Any]) -> None:
        with self._lock:
            for key in [k for k in self._columns if k[:2] == (settings["url"], settings["schema"])]:
                del self._columns[key]

    def _known(self, conn: psycopg.Connection, settings: dict[str, Any], table: str
               ) -> dict[str, str]:  # fmt: skip
        key = (settings["url"], settings["schema"], table)
        found = self._columns.get(key)
        if found is None:
            found = dict(conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s", (settings["schema"], table),
            ).fetchall())  # fmt: skip
            if found:
                self._columns[key] = found
        return found

    def _ensure(self, conn: psycopg.Connection, settings: dict[str, Any],
                tables: dict[str, list[dict[str, Any]]]) -> None:  # fmt: skip
        """Create the schema, tables and columns the rows need that are not there yet."""
        schema = settings["schema"]
        wanted: dict[str, dict[str, str]] = {}
        for table, rows in tables.items():
            have = self._known(conn, settings, table)
            new: dict[str, str] = {}
            for row in rows:
                for column, value in row.items():
                    if column not in have and column not in new and value is not None:
                        new[column] = ws.column_type(column, value)
            if new or not have:
                wanted[table] = new
        if not wanted:
            return
        with conn.transaction():
            lock = zlib.crc32(f"{settings['url']}/{schema}".encode())
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            for table, new in wanted.items():
                ident = sql.Identifier(schema, table)
                conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, uuid_ts timestamptz)"
                ).format(ident))  # fmt: skip
                for column, kind in new.items():
                    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                        ident, sql.Identifier(column), sql.SQL(kind)))  # fmt: skip
        for table in wanted:  # read back: another load may have made a column first
            self._columns.pop((settings["url"], schema, table), None)
            self._known(conn, settings, table)

    def _insert(self, conn: psycopg.Connection, settings: dict[str, Any], table: str,
                rows: list[dict[str, Any]], temp_name: str) -> None:  # fmt: skip
        have = self._known(conn, settings, table)
        columns = sorted({c for row in rows for c in row if c in have})
        kinds = [_kind(have[c]) for c in columns]
        target = sql.Identifier(settings["schema"], table)
        temp = sql.Identifier(temp_name)
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(temp, target))
        with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(temp, names)) as copy:
            pairs = [(c, ws.converter(k)) for c, k in zip(columns, kinds, strict=True)]
            for row in rows:
                copy.write_row([to(row.get(c)) for c, to in pairs])
        if table == "users":  # the latest traits; one missing keeps its value
            updates = sql.SQL(", ").join(
                sql.SQL("{0} = coalesce(EXCLUDED.{0}, {1}.{0})").format(
                    sql.Identifier(c), sql.Identifier(table))
                for c in columns if c != "id"
            )  # fmt: skip
            conflict = sql.SQL("DO UPDATE SET {}").format(updates)
        else:
            conflict = sql.SQL("DO NOTHING")
        insert = sql.SQL("INSERT INTO {} AS {} ({}) SELECT {} FROM {} ON CONFLICT (id) {}")
        conn.execute(insert.format(target, sql.Identifier(table), names, names, temp, conflict))


def _kind(data_type: str) -> str:
    """information_schema's name of a type as warehouse_schema.convert knows it."""
    return {"timestamp with time zone": "timestamptz"}.get(data_type, data_type)
