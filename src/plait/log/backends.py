"""Log backends: a table in the state store, SQLite or PostgreSQL.

Appends go through the driver directly (no SQLAlchemy statement building) because they
are the hot path of ingestion; everything else about the table is plain SQLAlchemy.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import sqlalchemy as sa

from plait.log.dedup import RecentMessageIds, now_us
from plait.store import Store
from plait.store.bulk import mark, select_in
from plait.store.db import now_ms
from plait.store.schema import checkpoints, log_messages

# (workspace_id, source_id, message_id, type, received_at_us, payload_json)
Row = tuple[str, str, str, str, int, str]

_COLUMNS = "workspace_id, source_id, message_id, type, received_at, payload"
_READ_COLUMNS = f"log_offset, {_COLUMNS}"


@dataclass(frozen=True, slots=True)
class LogRecord:
    offset: int
    workspace_id: str
    source_id: str
    message_id: str
    type: str
    received_at: int
    payload: str


class LogBackend:
    """Append and read the log table; one subclass per engine for the append statement."""

    def __init__(self, store: Store):
        self.store = store
        self._conn = None  # the writer's own connection, used from one thread only

    def _writer_connection(self):
        if self._conn is None:
            self._conn = self.store.engine.raw_connection()
        return self._conn

    def append(self, rows: Sequence[Row]) -> int:
        """Commit rows in one transaction; returns how many were new (not duplicates)."""
        conn = self._writer_connection()
        try:
            inserted = self._insert(conn, rows)
            conn.commit()
        except BaseException:
            self._discard(conn)
            raise
        return inserted

    def _insert(self, conn, rows: Sequence[Row]) -> int:
        raise NotImplementedError

    def _discard(self, conn) -> None:
        try:
            conn.rollback()
        finally:
            conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Reading -------------------------------------------------------------------------

    def read(
        self,
        after: int = 0,
        limit: int = 1000,
        workspace_id: str | None = None,
        conn: sa.Connection | None = None,
    ) -> list[LogRecord]:
        """Records with offset > ``after``, in offset order (in ``conn``'s transaction
        when given). Plain SQL through the driver: the pipeline reads every row, and
        SQLAlchemy's row objects cost ~10% of its time."""
        p = mark(self.store.engine.dialect)
        where = f"log_offset > {p}" + (f" AND workspace_id = {p}" if workspace_id else "")
        sql = (
            f"SELECT {_READ_COLUMNS} FROM log_messages WHERE {where} "
            f"ORDER BY log_offset LIMIT {int(limit)}"
        )
        if conn is None:
            with self.store.engine.connect() as own:
                return self.read(after, limit, workspace_id, own)
        params = (after, workspace_id) if workspace_id else (after,)
        return [LogRecord(*row) for row in conn.exec_driver_sql(sql, params)]

    def read_offsets(self, offsets: list[int], conn: sa.Connection) -> list[LogRecord]:
        """The records at these offsets, in offset order."""
        sql = f"SELECT {_READ_COLUMNS} FROM log_messages WHERE log_offset IN ({{keys}})"
        found = [LogRecord(*row) for row in select_in(conn, sql, offsets)] if offsets else []
        return sorted(found, key=lambda record: record.offset)

    def iter_all(self, after: int = 0, chunk: int = 5000) -> Iterator[LogRecord]:
        while records := self.read(after, chunk):
            yield from records
            after = records[-1].offset

    def last_offset(self) -> int:
        with self.store.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(log_messages.c.log_offset))).scalar()
        return value or 0

    def count(self, workspace_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(log_messages)
        if workspace_id is not None:
            query = query.where(log_messages.c.workspace_id == workspace_id)
        with self.store.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    # Checkpoints ---------------------------------------------------------------------

    def checkpoint(self, consumer: str, conn: sa.Connection | None = None) -> int:
        if conn is None:
            with self.store.engine.connect() as own:
                return self.checkpoint(consumer, own)
        query = sa.select(checkpoints.c.log_offset).where(checkpoints.c.consumer == consumer)
        return conn.execute(query).scalar() or 0

    def position(self, consumer: str, conn: sa.Connection) -> int | None:
        """A reader's checkpoint, or None when it never recorded one (``checkpoint``
        says 0 then)."""
        query = sa.select(checkpoints.c.log_offset).where(checkpoints.c.consumer == consumer)
        return conn.execute(query).scalar()

    def save_checkpoint(self, consumer: str, offset: int, conn: sa.Connection | None = None):
        """Record a reader's position; pass ``conn`` to commit it with the reader's effects."""
        if conn is None:
            with self.store.engine.begin() as own:
                return self.save_checkpoint(consumer, offset, own)
        values = {"consumer": consumer, "log_offset": offset, "updated_at": now_ms()}
        updated = conn.execute(
            checkpoints.update().where(checkpoints.c.consumer == consumer).values(values)
        )
        if updated.rowcount == 0:
            conn.execute(checkpoints.insert().values(values))


class SQLiteLogBackend(LogBackend):
    # Rows go in multi-row statements: one for a group of up to 64 rows, else statements
    # of 4096, 2048 ... 64 rows and one for the rest (at most ~80 cached statements). The
    # driver releases the GIL around every statement it steps, and getting it back waits
    # for the event loop's switch interval: one statement per row made the writer wait
    # for the GIL once per row.
    chunk_rows = 4096
    exact_rows = 64

    def __init__(self, store: Store):
        super().__init__(store)
        self._recent: RecentMessageIds | None = None  # None: (re)load from the log
        database = store.url.database
        self._lock_path = f"{database}-append.lock" if database and database != ":memory:" else None
        self._lock_file = None

    def append(self, rows: Sequence[Row]) -> int:
        with self._append_lock():
            return super().append(rows)

    @contextmanager
    def _append_lock(self):
        """Appending processes (`plait serve --workers`, `plait import`) take turns on a
        file lock before SQLite's own. Waiting on SQLite's lock is its busy handler, which
        sleeps 1, 2, 5 ... 100 ms between tries (measured with two workers: batch p99
        1.9 s); a blocked flock wakes as soon as the holder commits, and releases the GIL
        while it waits."""
        if self._lock_path is None:
            yield
            return
        if self._lock_file is None:
            self._lock_file = open(self._lock_path, "a+b")  # noqa: SIM115 (kept open)
        fd = self._lock_file.fileno()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        super().close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _insert(self, conn, rows: Sequence[Row]) -> int:
        driver = conn.driver_connection
        # Take the write lock first: the rows other processes appended before it are
        # then all visible, and none can be appended until this commit.
        driver.execute("BEGIN IMMEDIATE")
        recent = self._catch_up(driver)
        new = [row for row in rows if recent.add(row[0], row[2])]
        # SQLite older than 3.32 allows only 999 parameters per statement.
        size = min(self.chunk_rows, driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 6)
        start, total = 0, len(new)
        while start < total:
            if total - start <= self.exact_rows:
                size = total - start
            while size > total - start:
                size //= 2
            stop = start + size
            cursor = driver.execute(
                _multi_row_sql(size), list(chain.from_iterable(new[start:stop]))
            )
            recent.seen_offset = cursor.lastrowid
            start = stop
        return total

    def _catch_up(self, driver) -> RecentMessageIds:
        """The window of recent messageIds, with every row committed so far in it."""
        now = now_us()
        recent = self._recent
        if recent is None:
            recent = RecentMessageIds(self.store.dedup_window_seconds)
            recent.seen_offset = driver.execute(_LAST_OFFSET).fetchone()[0] or 0
            cutoff = now - recent.window_us
            for workspace_id, message_id in driver.execute(_IDS_SINCE, (cutoff,)):
                recent.add(workspace_id, message_id)
            self._recent = recent
        else:
            recent.rotate(now)
            for offset, workspace_id, message_id in driver.execute(
                _IDS_AFTER, (recent.seen_offset,)
            ):  # appended by other processes
                recent.add(workspace_id, message_id)
                recent.seen_offset = offset
        return recent

    def _discard(self, conn) -> None:
        # The window may hold ids of rows the failed transaction never committed.
        self._recent = None
        super()._discard(conn)


_LAST_OFFSET = "SELECT max(log_offset) FROM log_messages"
# Source by source along the log's (workspace_id, source_id, received_at) index: the pairs
# found by skipping through the index (a loose index scan: one seek a pair, whatever the
# log's size), then each pair's recent range. CROSS JOIN keeps the pairs the outer loop.
_IDS_SINCE = """
WITH RECURSIVE pairs(ws, src) AS (
  SELECT * FROM (SELECT workspace_id, source_id FROM log_messages
                 ORDER BY workspace_id, source_id LIMIT 1)
  UNION ALL
  SELECT n.workspace_id, n.source_id FROM pairs CROSS JOIN log_messages n
  WHERE n.rowid = coalesce(
    (SELECT rowid FROM log_messages WHERE workspace_id = ws AND source_id > src
     ORDER BY workspace_id, source_id LIMIT 1),
    (SELECT rowid FROM log_messages WHERE workspace_id > ws
     ORDER BY workspace_id, source_id LIMIT 1))
)
SELECT l.workspace_id, l.message_id FROM pairs CROSS JOIN log_messages l
WHERE l.workspace_id = pairs.ws AND l.source_id = pairs.src AND l.received_at >= ?
"""
_IDS_AFTER = (
    "SELECT log_offset, workspace_id, message_id FROM log_messages "
    "WHERE log_offset > ? ORDER BY log_offset"
)


# PostgreSQL: one appender at a time across processes, so offsets commit in order and a
# reader that checkpoints on an offset never skips a row committed later.
_APPEND_LOCK = "SELECT pg_advisory_xact_lock(7411002)"


def append_in(conn: sa.Connection, rows: Sequence[Row]) -> None:
    """Append rows inside the caller's transaction (messages Plait makes in the pipeline).
    PostgreSQL's unique index drops a repeated messageId; SQLite's dedup window belongs to
    the appending writer, so a caller appends each message once."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_APPEND_LOCK)
        conn.exec_driver_sql(PostgresLogBackend.insert_sql, list(rows))
    else:
        conn.exec_driver_sql(f"INSERT INTO log_messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                             list(rows))  # fmt: skip


class PostgresLogBackend(LogBackend):
    insert_sql = (
        f"INSERT INTO log_messages ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (workspace_id, message_id) DO NOTHING"
    )
    # Big groups go through COPY into a session-local staging table, then one INSERT ...
    # SELECT: psycopg writes COPY rows in C (~3 us of the writer's GIL time per row against
    # ~15 us for executemany, which sends one INSERT per row), and the server has one
    # statement to run instead of thousands.
    copy_from_rows = 64
    _STAGING = (
        "CREATE TEMP TABLE IF NOT EXISTS plait_log_staging (seq bigserial, workspace_id text, "
        "source_id text, message_id text, type text, received_at bigint, payload text) "
        "ON COMMIT DELETE ROWS"
    )
    _COPY = f"COPY plait_log_staging ({_COLUMNS}) FROM STDIN"
    _FROM_STAGING = (
        f"INSERT INTO log_messages ({_COLUMNS}) SELECT {_COLUMNS} FROM plait_log_staging "
        "ORDER BY seq ON CONFLICT (workspace_id, message_id) DO NOTHING"
    )

    def __init__(self, store: Store):
        super().__init__(store)
        self._staging_on = None  # the writer connection that has the staging table

    def _insert(self, conn, rows: Sequence[Row]) -> int:
        cur = conn.cursor()
        try:
            cur.execute(_APPEND_LOCK)
            if len(rows) < self.copy_from_rows:
                cur.executemany(self.insert_sql, rows)
                return cur.rowcount  # psycopg sums rowcount over executemany
            if self._staging_on is not conn:  # once a connection (a failure closes it)
                cur.execute(self._STAGING)
                self._staging_on = conn
            with cur.copy(self._COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(self._FROM_STAGING)
            return cur.rowcount
        finally:
            cur.close()


@lru_cache(maxsize=128)
def _multi_row_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO log_messages ({_COLUMNS}) VALUES {values}"


def backend_for(store: Store) -> LogBackend:
    if store.kind == "sqlite":
        return SQLiteLogBackend(store)
    return PostgresLogBackend(store)
