"""Reverse ETL: a scheduled SQL query whose rows become identify or track calls, sent into
the pipeline (through one of the workspace's sources, as an import is) or straight to one
destination's queue.

    reverse_etl:
      - key: crm_plans
        source: CRM                       # the source the calls come from (its PII policy)
        query: SELECT id, email, plan, updated_at FROM customers
        database: postgresql://crm@db/crm # omitted: the workspace's lake (DuckDB)
        cursor: updated_at                # incremental: rows after the last run's value
        type: identify                    # or track (with event: or an "event" column)
        map: {userId: id, traits.email: email}   # as `plait import --map`
        every: 15 minutes                 # omitted: run by hand (`plait syncs run`)
        destination: hubspot              # omitted: into the pipeline

- **Incremental.** With a ``cursor``, a run reads ``SELECT * FROM (query) WHERE cursor >
  last ORDER BY cursor`` and records, after each chunk, the last value every row up to
  which was sent (a value shared by rows that continue into the next chunk is not passed:
  those rows are read again after a crash, and the log drops them as repeats). Rows whose
  cursor is NULL are read by a full run only (the first, or ``full=True``).
- **Deterministic ids.** A row's messageId is ``retl-<sync>-<hash of the row>``: reading
  an unchanged row again (a run without a cursor, a crash) adds nothing to the log; a
  changed row is a new call.
- **Read-only.** A database is read in a read-only transaction (PostgreSQL); the lake
  through the same confined DuckDB connection as ``plait lake sql`` (one SELECT).
- **Nothing dropped silently.** A row that cannot become a valid call is counted and the
  first reasons are kept with the run (``plait syncs show``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import sqlalchemy as sa

from plait.collect.files import (
    FileImportError,
    ImportOptions,
    Mapper,
    RowError,
    parse_map,
    plain,
)
from plait.collect.guard import IngestGuards
from plait.collect.ingest import prepare
from plait.destinations import queue
from plait.destinations.config import KEY, compile_destinations, duration_seconds
from plait.destinations.config import SECTION as DESTINATIONS
from plait.govern.pii import Keyring
from plait.lake import export_events, export_profiles
from plait.lake.query import LakeQueryError, check_select, connect
from plait.lake.writer import lake_lock
from plait.log import backend_for
from plait.spec import Enrichment
from plait.spec.timestamps import now_utc
from plait.store import Store
from plait.store.db import now_ms
from plait.store.schema import sync_runs, workspace_settings
from plait.store.workspaces import Invalid, NotFound, Workspaces

logger = logging.getLogger("plait.reverse_etl")

SECTION = "reverse_etl"
ENV = "env:"  # a database URL read from this environment variable
FIELDS = {"key", "source", "query", "database", "cursor", "type", "map", "event", "every",
          "destination", "enabled", "chunk_size"}  # fmt: skip
COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_CHUNK = 1000
KEPT_REJECTIONS = 20
STALE_RUN_MS = 3_600_000  # a run marked running this long ago died with its process


class SyncError(Exception):
    """A run that could not read its rows (the query, the database): the message says why."""


@dataclass(frozen=True)
class Sync:
    key: str
    source: str  # a source's name or id
    query: str
    msg_type: str
    fields: dict[str, str]
    database: str | None = None
    cursor: str | None = None
    event: str | None = None
    every_seconds: float | None = None
    destination: str | None = None
    enabled: bool = True
    chunk_size: int = DEFAULT_CHUNK


@dataclass
class RunResult:
    rows: int = 0
    sent: int = 0  # new in the log, or queued at the destination
    repeats: int = 0  # already in the log (read again)
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    cursor: Any = None


# Definitions ---------------------------------------------------------------------------


def compile_sync(doc: Any, where: str) -> Sync:
    if not isinstance(doc, dict):
        raise Invalid(where, "must be a mapping")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise Invalid(f"{where}.{unknown[0]}",
                      f"unknown field; expected {', '.join(sorted(FIELDS))}")  # fmt: skip
    key = doc.get("key")
    if not isinstance(key, str) or not KEY.match(key):
        raise Invalid(f"{where}.key", "required: 1 to 100 of a-z, 0-9 and _")
    for name in ("source", "query"):
        if not isinstance(doc.get(name), str) or not doc[name].strip():
            raise Invalid(f"{where}.{name}", "required: a non-empty string")
    msg_type = doc.get("type", "identify")
    if msg_type not in ("identify", "track"):
        raise Invalid(f"{where}.type", "must be identify or track")
    mapping = doc.get("map") or {}
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise Invalid(f"{where}.map", "must map fields (userId, traits.email …) to columns")
    try:
        fields = parse_map([f"{k}={v}" for k, v in mapping.items()])
    except FileImportError as exc:
        raise Invalid(f"{where}.map", str(exc).replace("--map", "map")) from None
    cursor = doc.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not COLUMN.fullmatch(cursor)):
        raise Invalid(f"{where}.cursor", "a column name (letters, digits and _)")
    event = doc.get("event")
    if event is not None and (msg_type != "track" or not isinstance(event, str) or not event):
        raise Invalid(f"{where}.event", "the event name of a track sync (a non-empty string)")
    database = doc.get("database")
    if database is not None:
        if not isinstance(database, str):
            raise Invalid(f"{where}.database", "a database URL such as postgresql://…")
        if not database.startswith(ENV):  # env:NAME is read when the sync runs
            _url(database, f"{where}.database")
    every = doc.get("every")
    every_seconds = None if every is None else duration_seconds(every, f"{where}.every")
    if every_seconds is not None and every_seconds < 60:
        raise Invalid(f"{where}.every", "at least a minute")
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise Invalid(f"{where}.enabled", "must be true or false")
    chunk = doc.get("chunk_size", DEFAULT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= 100_000:
        raise Invalid(f"{where}.chunk_size", "1 to 100,000 rows")
    destination = doc.get("destination")
    if destination is not None and not isinstance(destination, str):
        raise Invalid(f"{where}.destination", "a destination's key")
    return Sync(key=key, source=doc["source"], query=doc["query"].strip().rstrip(";"),
                msg_type=msg_type, fields=fields, database=database, cursor=cursor,
                event=event, every_seconds=every_seconds, destination=destination,
                enabled=enabled, chunk_size=chunk)  # fmt: skip


def _url(text: str, where: str) -> sa.engine.URL:
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError:
        raise Invalid(where, "not a database URL") from None
    if url.get_backend_name() not in ("postgresql", "sqlite", "mysql", "mariadb"):
        raise Invalid(where, "postgresql://, mysql://, mariadb:// or sqlite:// (or env:NAME)")
    return url


def database_url(sync: Sync) -> str:
    """The sync's database URL, from the environment variable an ``env:NAME`` names."""
    text = sync.database or ""
    if text.startswith(ENV):
        name = text.removeprefix(ENV)
        if not os.environ.get(name):
            raise SyncError(f"the environment variable {name} (the database URL) is not set")
        text = os.environ[name]
        _url(text, "database")
    return text


def masked(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with the database URL's password masked (for the API and the export;
    saved back masked, it keeps the stored password)."""
    database = doc.get("database")
    if not isinstance(database, str) or database.startswith(ENV):
        return doc
    try:
        url = sa.engine.make_url(database)
    except sa.exc.ArgumentError:
        return doc
    if url.password is None:
        return doc
    return {**doc, "database": url.render_as_string(hide_password=True)}  # password: ***


def _unmasked(doc: Any, old: list[dict[str, Any]]) -> Any:
    if not isinstance(doc, dict) or ":***@" not in str(doc.get("database", "")):
        return doc
    before = next((d for d in old if d.get("key") == doc.get("key")), None)
    if before is not None and masked(before).get("database") == doc["database"]:
        return {**doc, "database": before["database"]}
    return doc


def compile_syncs(docs: Any) -> dict[str, Sync]:
    if docs is None:
        return {}
    if not isinstance(docs, list):
        raise Invalid(SECTION, "must be a list of syncs")
    found: dict[str, Sync] = {}
    for i, doc in enumerate(docs):
        sync = compile_sync(doc, f"{SECTION}[{i}]")
        if sync.key in found:
            raise Invalid(f"{SECTION}[{i}].key", f"{sync.key!r} is used twice")
        found[sync.key] = sync
    return found


def documents(repo: Workspaces, workspace_id: str) -> list[dict[str, Any]]:
    return repo.get_setting(workspace_id, SECTION) or []


def check(repo: Workspaces, workspace_id: str, docs: Any,
          source_names: set[str] = frozenset()) -> dict[str, Sync]:  # fmt: skip
    """The section compiled, its sources and destinations checked (``source_names``: sources
    a workspace file creates with it)."""
    syncs = compile_syncs(docs)
    sources = {s["name"] for s in repo.list_sources(workspace_id)} | {
        s["id"] for s in repo.list_sources(workspace_id)} | set(source_names)  # fmt: skip
    targets = compile_destinations(repo.get_setting(workspace_id, DESTINATIONS) or [])
    for i, sync in enumerate(syncs.values()):
        if sync.source not in sources:
            raise Invalid(f"{SECTION}[{i}].source", f"no source {sync.source!r}")
        if sync.destination is not None:
            dest = targets.get(sync.destination)
            if dest is None:
                raise Invalid(f"{SECTION}[{i}].destination",
                              f"no destination {sync.destination!r}")  # fmt: skip
            if sync.msg_type not in dest.types and dest.types:
                raise Invalid(
                    f"{SECTION}[{i}].type",
                    f"destination {dest.key!r} does not take {sync.msg_type}",
                )
    return syncs


def save(repo: Workspaces, workspace_id: str, docs: list[dict[str, Any]]) -> bool:
    """Check the whole section, then store it; True when it changed. A removed sync's
    cursor goes with it (added again, it starts over)."""
    old = documents(repo, workspace_id)
    docs = [_unmasked(d, old) for d in docs]
    syncs = check(repo, workspace_id, docs)
    if docs == old:
        return False
    repo.put_setting(workspace_id, SECTION, docs)
    with repo.store.write() as conn:
        conn.execute(
            sync_runs.delete().where(
                sync_runs.c.workspace_id == workspace_id,
                sync_runs.c.sync.not_in(list(syncs) or [""]),
            )
        )
    return True


def put(repo: Workspaces, workspace_id: str, doc: dict[str, Any]) -> bool:
    docs = [d for d in documents(repo, workspace_id) if d.get("key") != doc.get("key")]
    return save(repo, workspace_id, [*docs, doc])


def delete(repo: Workspaces, workspace_id: str, key: str) -> None:
    docs = documents(repo, workspace_id)
    if not any(d.get("key") == key for d in docs):
        raise NotFound(f"no sync {key!r}")
    save(repo, workspace_id, [d for d in docs if d.get("key") != key])


def status(store: Store, workspace_id: str, key: str) -> dict[str, Any]:
    with store.engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(sync_runs).where(
                    sync_runs.c.workspace_id == workspace_id, sync_runs.c.sync == key
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return {
            "runs": False,
            "cursor": None,
            "last_run_at": None,
            "last_status": None,
            "last_error": None,
            "last_rows": 0,
            "rows": 0,
            "sent": 0,
            "rejected": 0,
        }
    state = {str(k): v for k, v in row.items()}  # ("cursor" is a quoted name)
    state.pop("workspace_id"), state.pop("sync"), state.pop("running_since")
    state["cursor"] = _cursor_value(state["cursor"])
    if state["last_error"] and state["last_error"].startswith("["):
        state["rejections"] = orjson.loads(state.pop("last_error"))
        state["last_error"] = None
    return {"runs": True, **state}


# Running -------------------------------------------------------------------------------


def run(store: Store, workspace_id: str, key: str, lake_dir: Path | None, full: bool = False,
        progress: Callable[[RunResult], None] | None = None) -> RunResult:  # fmt: skip
    """Run one sync now (``full``: from the first row, its cursor forgotten)."""
    repo = Workspaces(store)
    syncs = compile_syncs(documents(repo, workspace_id))
    if key not in syncs:
        raise NotFound(f"no sync {key!r}")
    sync = syncs[key]
    source = repo.get_source(workspace_id, sync.source)
    if not _claim(store, workspace_id, key):
        raise SyncError(f"sync {key!r} is running already")
    result = RunResult()
    try:
        cursor = None if full else _load_cursor(store, workspace_id, key)
        result.cursor = cursor
        _run(store, workspace_id, sync, source["id"], lake_dir, cursor, result, progress)
    except Exception as exc:
        _finish(store, workspace_id, key, result, error=_describe(exc))
        if isinstance(exc, SyncError | LakeQueryError | sa.exc.DBAPIError):
            raise SyncError(_describe(exc)) from None
        raise
    _finish(store, workspace_id, key, result)
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
                    _save_cursor(store, workspace_id, sync.key, safe)
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


# State ---------------------------------------------------------------------------------


def _cursor_text(value: Any) -> str:
    if isinstance(value, datetime):
        return orjson.dumps({"kind": "datetime", "value": value.isoformat()}).decode()
    if isinstance(value, date):
        return orjson.dumps({"kind": "date", "value": value.isoformat()}).decode()
    return orjson.dumps({"kind": "plain", "value": plain(value)}).decode()


def _cursor_value(text: str | None) -> Any:
    if text is None:
        return None
    doc = orjson.loads(text)
    if doc["kind"] == "datetime":
        return datetime.fromisoformat(doc["value"])
    if doc["kind"] == "date":
        return date.fromisoformat(doc["value"])
    return doc["value"]


def _load_cursor(store: Store, workspace_id: str, key: str) -> Any:
    with store.engine.connect() as conn:
        text = conn.scalar(sa.select(sync_runs.c.cursor).where(
            sync_runs.c.workspace_id == workspace_id, sync_runs.c.sync == key))  # fmt: skip
    return _cursor_value(text)


def _save_cursor(store: Store, workspace_id: str, key: str, value: Any) -> None:
    with store.write() as conn:
        conn.execute(sync_runs.update().where(
            sync_runs.c.workspace_id == workspace_id, sync_runs.c.sync == key,
        ).values(cursor=_cursor_text(value)))  # fmt: skip


def _claim(store: Store, workspace_id: str, key: str) -> bool:
    """Mark the sync running (False: a live run has it)."""
    now = now_ms()
    c = sync_runs.c
    this = (c.workspace_id == workspace_id, c.sync == key)
    with store.write() as conn:
        if conn.scalar(sa.select(sa.func.count()).where(*this)) == 0:
            conn.execute(
                sync_runs.insert().values(
                    workspace_id=workspace_id, sync=key, last_rows=0, rows=0, sent=0, rejected=0
                )
            )
        claimed = conn.execute(sync_runs.update().where(
            *this, sa.or_(c.running_since.is_(None), c.running_since < now - STALE_RUN_MS),
        ).values(running_since=now))  # fmt: skip
        return claimed.rowcount == 1


def _finish(store: Store, workspace_id: str, key: str, result: RunResult,
            error: str | None = None) -> None:  # fmt: skip
    kept = error or (orjson.dumps(result.rejections).decode() if result.rejections else None)
    c = sync_runs.c
    with store.write() as conn:
        conn.execute(sync_runs.update().where(c.workspace_id == workspace_id, c.sync == key)
                     .values(running_since=None, last_run_at=now_ms(),
                             last_status="failed" if error else "ok", last_error=kept,
                             last_rows=result.rows, rows=c.rows + result.rows,
                             sent=c.sent + result.sent,
                             rejected=c.rejected + result.rejected))  # fmt: skip
    if error:
        logger.warning("reverse ETL: sync %s failed (%s): %s", key, workspace_id, error)


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
