"""Running a sync: its query read in chunks after the cursor, rows mapped to calls and sent
into the log (or a destination's queue), the cursor moved; and running the due ones."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import sqlalchemy as sa

from plait.collect.files import (
    ImportOptions,
    Mapper,
    RowError,
    plain,
)
from plait.collect.guard import IngestGuards
from plait.collect.ingest import prepare
from plait.destinations import queue
from plait.govern.pii import Keyring
from plait.lake import export_events, export_profiles
from plait.lake.query import LakeQueryError, check_select, connect
from plait.lake.writer import lake_lock
from plait.log import backend_for
from plait.reverse_etl.definitions import (
    SECTION,
    Sync,
    SyncError,
    compile_syncs,
    database_url,
    documents,
)
from plait.reverse_etl.state import (
    KEPT_REJECTIONS,
    RunResult,
    claim,
    finish,
    load_cursor,
    save_cursor,
)
from plait.spec import Enrichment
from plait.spec.timestamps import now_utc
from plait.store import Store
from plait.store.db import now_ms
from plait.store.schema import sync_runs, workspace_settings
from plait.store.workspaces import Invalid, NotFound, Workspaces

logger = logging.getLogger("plait.reverse_etl")


def run(store: Store, workspace_id: str, key: str, lake_dir: Path | None, full: bool = False,
        progress: Callable[[RunResult], None] | None = None) -> RunResult:  # fmt: skip
    """Run one sync now (``full``: from the first row, its cursor forgotten)."""
    repo = Workspaces(store)
    syncs = compile_syncs(documents(repo, workspace_id))
    if key not in syncs:
        raise NotFound(f"no sync {key!r}")
    sync = syncs[key]
    source = repo.get_source(workspace_id, sync.source)
    if not claim(store, workspace_id, key):
        raise SyncError(f"sync {key!r} is running already")
    result = RunResult()
    try:
        cursor = None if full else load_cursor(store, workspace_id, key)
        result.cursor = cursor
        _run(store, workspace_id, sync, source["id"], lake_dir, cursor, result, progress)
    except Exception as exc:
        finish(store, workspace_id, key, result, error=_describe(exc))
        if isinstance(exc, SyncError | LakeQueryError | sa.exc.DBAPIError):
            raise SyncError(_describe(exc)) from None
        raise
    finish(store, workspace_id, key, result)
    return result


def _run(store: Store, workspace_id: str, sync: Sync, source_id: str, lake_dir: Path | None,
         cursor: Any, result: RunResult, progress) -> None:  # fmt: skip
    mapper = Mapper(ImportOptions(msg_type=sync.msg_type, fields=sync.fields), "parquet")
    guard = IngestGuards(store.engine, 0.0, Keyring.from_env()).for_source(workspace_id,
                                                                            source_id)  # fmt: skip
    log = backend_for(store)
    try:
        for columns, chunk, more in _chunks(store, workspace_id, sync, lake_dir, cursor):
            _check_columns(sync, columns)
            messages, rows = [], []
            for values in chunk:
                raw = {c: plain(v) for c, v in zip(columns, values, strict=True)}
                try:
                    msg = mapper.message(raw, columns)
                except RowError as exc:
                    _reject(result, raw, exc.field, exc.reason)
                    continue
                if sync.event and not msg.get("event"):
                    msg["event"] = sync.event
                msg["messageId"] = f"retl-{sync.key}-{_fingerprint(raw)}"
                messages.append(msg)
                rows.append(raw)
            env = Enrichment(received_at=now_utc(), workspace_id=workspace_id,
                             source_id=source_id)  # fmt: skip
            prepared = prepare(messages, sync.msg_type, env, guard)
            for item in prepared.rejected:
                _reject(result, rows[item["index"]], item["field"], item["message"])
            if sync.destination is None:
                inserted = log.append(prepared.rows) if prepared.rows else 0
            else:
                inserted = _enqueue(store, workspace_id, sync, prepared.rows)
            result.rows += len(chunk)
            result.sent += inserted
            result.repeats += len(prepared.rows) - inserted
            if sync.cursor is not None:
                index = columns.index(sync.cursor)
                safe = _safe_cursor([v[index] for v in chunk], more)
                if safe is not None:
                    result.cursor = safe
                    save_cursor(store, workspace_id, sync.key, safe)
            if progress is not None:
                progress(result)
    finally:
        log.close()


def _safe_cursor(values: list[Any], more: bool) -> Any:
    """The cursor to record after a chunk (ordered by it): its last value, unless more rows
    follow that may share it; then the last value before it (None: nothing to record)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    if not more:
        return values[-1]
    last = values[-1]
    for value in reversed(values):
        if value != last:
            return value
    return None


def _chunks(store: Store, workspace_id: str, sync: Sync, lake_dir: Path | None,
            cursor: Any) -> Iterator[tuple[tuple[str, ...], list[tuple], bool]]:  # fmt: skip
    """(columns, rows, more rows follow) of the sync's query after ``cursor``."""
    if sync.database is not None:
        yield from _database_chunks(sync, cursor)
    else:
        if lake_dir is None:
            raise SyncError("a sync over the lake needs the lake (PLAIT_LAKE_DIR)")
        yield from _lake_chunks(store, workspace_id, sync, Path(lake_dir), cursor)


def _wrapped(sync: Sync, cursor: Any, placeholder: str) -> str:
    if sync.cursor is None:
        return sync.query
    where = f' WHERE q."{sync.cursor}" > {placeholder}' if cursor is not None else ""
    return f'SELECT * FROM ({sync.query}) AS q{where} ORDER BY q."{sync.cursor}"'


def _ahead(batches: Iterator[list[tuple]]) -> Iterator[tuple[list[tuple], bool]]:
    """Each batch with whether another follows."""
    previous = None
    for batch in batches:
        if previous is not None:
            yield previous, True
        previous = batch
    if previous is not None:
        yield previous, False


def _database_chunks(sync: Sync, cursor: Any):
    engine = sa.create_engine(database_url(sync), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            result = conn.execution_options(stream_results=True, yield_per=sync.chunk_size) \
                .execute(sa.text(_wrapped(sync, cursor, ":cursor")),
                         {"cursor": cursor} if cursor is not None else {})  # fmt: skip
            columns = tuple(result.keys())
            batches = (list(map(tuple, part)) for part in result.partitions(sync.chunk_size))
            for batch, more in _ahead(batches):
                yield columns, batch, more
    finally:
        engine.dispose()


def _lake_chunks(store: Store, workspace_id: str, sync: Sync, lake_dir: Path, cursor: Any):
    export_events(store, workspace_id, lake_dir)  # the lake holds what was processed so far
    export_profiles(store, workspace_id, lake_dir)
    with lake_lock(lake_dir, workspace_id, shared=True):
        con = connect(lake_dir, workspace_id)
        try:
            check_select(con, sync.query)
            try:
                relation = con.sql(_wrapped(sync, cursor, "$1"),
                                   params=[cursor] if cursor is not None else None)  # fmt: skip
                # DuckDB 2 names it to_arrow_reader; 1.x record_batch.
                to_reader = getattr(relation, "to_arrow_reader", None) or relation.record_batch
                reader = to_reader(sync.chunk_size)
            except duckdb.Error as exc:  # the query's fault
                raise LakeQueryError(str(exc).strip()) from None
            columns = tuple(reader.schema.names)
            batches = (list(zip(*(c.to_pylist() for c in b.columns), strict=True))
                       for b in reader)  # fmt: skip
            for batch, more in _ahead(batches):
                yield columns, batch, more
        finally:
            con.close()


def _check_columns(sync: Sync, columns: tuple[str, ...]) -> None:
    names = ", ".join(columns)
    if sync.cursor is not None and sync.cursor not in columns:
        raise SyncError(f"the query has no cursor column {sync.cursor!r} (columns: {names})")
    for name, column in sync.fields.items():
        if column not in columns:
            raise SyncError(f"map {name}={column}: no column {column!r} (columns: {names})")


def _enqueue(store: Store, workspace_id: str, sync: Sync, rows: list[tuple]) -> int:
    """Straight to the destination: queued like an audience's full sync, in order per user."""
    offsets = queue.own_offsets(len(rows))
    queued = []
    for offset, (_, _, message_id, _, _, payload) in zip(offsets, rows, strict=True):
        msg = orjson.loads(payload)
        who = msg.get("userId") or msg.get("anonymousId") or message_id
        queued.append({"log_offset": offset, "person": f"retl:{sync.key}:{who}",
                       "status": "queued", "attempts": 0, "next_attempt_at": 0,
                       "payload": payload})  # fmt: skip
    with store.write() as conn:
        queue.enqueue(conn, workspace_id, sync.destination, queued, now_ms())
    return len(queued)


def _fingerprint(raw: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _reject(result: RunResult, raw: dict[str, Any], where: str | None, reason: str) -> None:
    result.rejected += 1
    if len(result.rejections) < KEPT_REJECTIONS:
        result.rejections.append({"field": where, "reason": reason, "row": raw})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, sa.exc.DBAPIError):
        return f"the database refused the query: {str(exc.orig).strip()}"[:2000]
    return str(exc)[:2000]


def run_due(store: Store, lake_dir: Path | None, now: int | None = None) -> list[str]:
    """Run every enabled sync whose ``every`` has passed since its last run (every
    workspace); the keys run. A failing sync is recorded and the others go on."""
    now = now_ms() if now is None else now
    with store.engine.connect() as conn:
        docs = conn.execute(sa.select(workspace_settings.c.workspace_id,
                                      workspace_settings.c.value)
                            .where(workspace_settings.c.key == SECTION)).all()  # fmt: skip
        last = {
            (r.workspace_id, r.sync): r.last_run_at
            for r in conn.execute(
                sa.select(sync_runs.c.workspace_id, sync_runs.c.sync, sync_runs.c.last_run_at)
            )
        }
    ran = []
    for workspace_id, value in docs:
        try:
            syncs = compile_syncs(orjson.loads(value))
        except Invalid:
            logger.exception("reverse ETL: the definitions of %s do not compile", workspace_id)
            continue
        for sync in syncs.values():
            if not sync.enabled or sync.every_seconds is None:
                continue
            at = last.get((workspace_id, sync.key))
            if at is not None and now - at < sync.every_seconds * 1000:
                continue
            try:
                run(store, workspace_id, sync.key, lake_dir)
            except (SyncError, NotFound):
                pass  # recorded with the run (a query or a reference that fails)
            except Exception:
                logger.exception("reverse ETL: sync %s (%s)", sync.key, workspace_id)
            ran.append(sync.key)
    return ran


class Scheduler:
    """Runs due syncs in a thread of their own (beside the pipeline and the deliveries), so
    a slow query never holds up either."""

    def __init__(self, store: Store, lake_dir: Path | None, interval: float = 30.0):
        self.store, self.lake_dir, self.interval = store, lake_dir, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                run_due(self.store, self.lake_dir)
            except Exception:  # the store is down: try again at the next tick
                logger.exception("reverse ETL: the scheduler's tick failed")
            self._stop.wait(self.interval)

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self.run_forever, name="plait-reverse-etl",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
