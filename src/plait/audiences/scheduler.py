"""What changes with time and with definitions, run by the pipeline's loop (``tick``):

- **Expiry**: profiles whose ``audience_schedule.due_at`` has passed (an event leaving a
  window, a day passing for ``days_since_last``, a trait's time leaving ``in last``) are
  evaluated again in memory.
- **Reconciliation** (the batch path): when a definition is new or changed, when a SQL
  trait is due, or every ``PLAIT_AUDIENCE_RECONCILE_SECONDS``, every audience and computed
  trait of the workspace is evaluated over the lake with DuckDB (one query, exported first)
  and the differences are applied, chunk by chunk, each chunk in a transaction of its own
  under the workspace's lock. Profiles that messages past the exported lake touched are
  evaluated in memory instead, so a reconciliation never undoes a newer real-time change.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import sqlalchemy as sa

from plait.audiences import engine
from plait.audiences.definitions import SECTIONS, Definitions
from plait.audiences.evaluate import plain_value
from plait.audiences.sql import workspace_sql
from plait.lake import export_events, export_profiles
from plait.lake.query import LakeQueryError, connect
from plait.lake.writer import consumer_name as lake_consumer
from plait.lake.writer import lake_lock
from plait.log import backend_for
from plait.store import Store
from plait.store.bulk import select_in
from plait.store.db import now_ms
from plait.store.locks import workspace_lock
from plait.store.schema import (
    audience_members,
    audience_schedule,
    audience_state,
    computed_values,
    workspace_settings,
)
from plait.store.upsert import upsert

logger = logging.getLogger("plait.audiences")

CHUNK = 5000  # profiles applied per transaction
EXPIRE_LIMIT = 5000  # due profiles evaluated per tick and workspace
RECONCILED = "reconciled"  # audience_state key: when the last reconciliation ran


@dataclass
class Report:
    evaluated: int = 0
    from_lake: int = 0
    in_memory: int = 0
    changes: list[engine.Changes] = field(default_factory=list)

    @property
    def entered(self) -> int:
        return sum(c.entered for c in self.changes)

    @property
    def exited(self) -> int:
        return sum(c.exited for c in self.changes)

    @property
    def traits(self) -> int:
        return sum(c.traits for c in self.changes)


def workspaces_with_definitions(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return sorted(
            conn.scalars(
                sa.select(workspace_settings.c.workspace_id)
                .where(workspace_settings.c.key.in_(SECTIONS))
                .distinct()
            )
        )


def definitions(store: Store, workspace_id: str) -> Definitions:
    with store.engine.connect() as conn:
        return engine.DEFINITIONS.get(conn, workspace_id)


# Expiry -----------------------------------------------------------------------------------


def expire(store: Store, workspace_id: str, now: int | None = None,
           limit: int = EXPIRE_LIMIT) -> Report:  # fmt: skip
    """Evaluate again the profiles whose values time may have changed by ``now``."""
    now = now or now_ms()
    report = Report()
    with store.write(derived=True) as conn:
        if not workspace_lock(conn, workspace_id, wait=False):
            return report
        defs = engine.DEFINITIONS.get(conn, workspace_id)
        due = list(conn.scalars(
            sa.select(audience_schedule.c.profile_id)
            .where(audience_schedule.c.workspace_id == workspace_id,
                   audience_schedule.c.due_at <= now)
            .order_by(audience_schedule.c.due_at)
            .limit(limit)
        ))  # fmt: skip
        if not due:
            return report
        results = engine.evaluate(conn, workspace_id, defs, due, now)
        engine.forget(conn, workspace_id, sorted(set(due) - set(results)), now, "gone")
        report.changes.append(engine.apply(conn, workspace_id, defs, results, now, "time"))
        report.evaluated = report.in_memory = len(results)
    return report


# Reconciliation ---------------------------------------------------------------------------


def _fingerprint(defs: Definitions) -> str:
    return hashlib.sha256(orjson.dumps(sorted(defs.fingerprints.items()))).hexdigest()


def needs_reconcile(
    store: Store, workspace_id: str, defs: Definitions, now: int, every_ms: int
) -> bool:
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(audience_state.c.fingerprint, audience_state.c.updated_at).where(
                audience_state.c.workspace_id == workspace_id, audience_state.c.key == RECONCILED
            )
        ).first()
    if row is None or row.fingerprint != _fingerprint(defs):
        return True
    since = now - row.updated_at
    sql_due = [t.schedule_ms for t in defs.traits.values() if t.kind == "sql"]
    return since >= every_ms or any(since >= ms for ms in sql_due)


def reconcile(
    store: Store, workspace_id: str, lake_dir: Path, now: int | None = None,
    reason: str = "backfill", progress=None,
) -> Report:  # fmt: skip
    """Evaluate every audience and computed trait over the lake and apply what differs
    from the stored state; returns what changed. ``progress`` hears profile counts."""
    now = now or now_ms()
    lake_dir = Path(lake_dir)
    defs = definitions(store, workspace_id)
    report = Report()
    export_events(store, workspace_id, lake_dir)
    export_profiles(store, workspace_id, lake_dir)
    log = backend_for(store)
    with store.engine.connect() as conn:
        exported = log.checkpoint(lake_consumer(workspace_id), conn)
    seen: set[str] = set()
    if not defs.empty:
        with lake_lock(lake_dir, workspace_id, shared=True):  # no snapshot swap meanwhile
            seen = _apply_lake(store, workspace_id, lake_dir, defs, exported, now, reason,
                               report, progress)  # fmt: skip
    _apply_rest(store, workspace_id, defs, seen, exported, now, reason, report)
    with store.write() as conn:
        _drop_undefined(conn, workspace_id, defs)
        upsert(conn, audience_state, [{"workspace_id": workspace_id, "key": RECONCILED,
                                       "fingerprint": _fingerprint(defs), "updated_at": now}],
               ["workspace_id", "key"])  # fmt: skip
    return report


def _apply_lake(store, workspace_id, lake_dir, defs, exported, now, reason, report, progress):
    """Run the workspace's query over the lake and apply its rows, chunk by chunk; returns
    the profiles it had."""
    sql, audiences, traits = workspace_sql(defs, now)
    seen: set[str] = set()
    con = connect(lake_dir, workspace_id)
    timer = threading.Timer(600, con.interrupt)
    timer.start()
    try:
        cursor = con.execute(sql)
        while rows := cursor.fetchmany(CHUNK):
            results = {}
            for row in rows:
                a = dict(zip(audiences, row[1 : 1 + len(audiences)], strict=True))
                texts = row[1 + len(audiences) : 1 + len(audiences) + len(traits)]
                t = {
                    key: None if text is None
                    else plain_value(defs.traits[key], orjson.loads(text))
                    for key, text in zip(traits, texts, strict=True)
                }  # fmt: skip
                results[row[0]] = engine.Result({k: bool(v) for k, v in a.items()}, t, row[-1])
            seen |= set(results)
            _apply_chunk(store, workspace_id, defs, results, exported, now, reason, report)
            if progress is not None:
                progress(len(rows))
    except duckdb.Error as exc:
        error = str(exc).strip()
    else:
        return seen
    finally:
        timer.cancel()
        con.close()
    raise LakeQueryError(error)


def _persons(conn: sa.Connection, ids: list[str]) -> set[str]:
    return {
        pid
        for (pid,) in select_in(
            conn,
            "SELECT id FROM profiles WHERE kind = 'user' AND merged_into IS NULL "
            "AND id IN ({keys})",
            ids,
        )
    }


def _touched_after(conn: sa.Connection, workspace_id: str, ids: list[str], offset: int) -> set:
    return {
        pid
        for (pid,) in select_in(
            conn,
            "SELECT DISTINCT profile_id FROM message_profiles WHERE workspace_id = ? "
            "AND log_offset > ? AND profile_id IN ({keys})",
            ids,
            (workspace_id, offset),
        )
    }


def _apply_chunk(store, workspace_id, defs, results, exported, now, reason, report) -> None:
    with store.write(derived=True) as conn:
        workspace_lock(conn, workspace_id)
        ids = list(results)
        persons = _persons(conn, ids)
        fresh = _touched_after(conn, workspace_id, ids, exported) & persons
        kept = {pid: r for pid, r in results.items() if pid in persons and pid not in fresh}
        if fresh:
            kept |= engine.evaluate(conn, workspace_id, defs, fresh, now)
        engine.forget(conn, workspace_id, sorted(set(ids) - persons), now, "gone")
        report.changes.append(engine.apply(conn, workspace_id, defs, kept, now, reason))
        report.evaluated += len(kept)
        report.in_memory += len(fresh)
        report.from_lake += len(kept) - len(fresh)


def _apply_rest(store, workspace_id, defs, seen, exported, now, reason, report) -> None:
    """Profiles the lake did not have: those with stored state (gone, or new since the
    export) and those messages past the export made."""
    with store.engine.connect() as conn:
        stored = set()
        for table in (audience_members, computed_values, audience_schedule):
            stored |= set(conn.scalars(
                sa.select(table.c.profile_id).where(table.c.workspace_id == workspace_id)
                .distinct()
            ))  # fmt: skip
        stored |= set(conn.scalars(
            sa.text("SELECT DISTINCT profile_id FROM message_profiles WHERE workspace_id = "
                    ":ws AND log_offset > :after AND profile_id IS NOT NULL"),
            {"ws": workspace_id, "after": exported},
        ))  # fmt: skip
    rest = sorted(stored - seen)
    for start in range(0, len(rest), CHUNK):
        part = rest[start : start + CHUNK]
        with store.write(derived=True) as conn:
            workspace_lock(conn, workspace_id)
            results = engine.evaluate(conn, workspace_id, defs, part, now) if not defs.empty else {}
            engine.forget(conn, workspace_id, sorted(set(part) - set(results)), now, "gone")
            report.changes.append(engine.apply(conn, workspace_id, defs, results, now, reason))
            report.evaluated += len(results)
            report.in_memory += len(results)


def _drop_undefined(conn: sa.Connection, workspace_id: str, defs: Definitions) -> None:
    """Memberships of audiences and values of traits that are no longer defined."""
    conn.execute(audience_members.delete().where(
        audience_members.c.workspace_id == workspace_id,
        audience_members.c.audience_key.notin_(list(defs.audiences) or [""]),
    ))  # fmt: skip
    conn.execute(computed_values.delete().where(
        computed_values.c.workspace_id == workspace_id,
        computed_values.c.trait_key.notin_(list(defs.traits) or [""]),
    ))  # fmt: skip


# The pipeline's tick ----------------------------------------------------------------------


def tick(store: Store, lake_dir: Path, reconcile_every_ms: int, now: int | None = None) -> None:
    """One round over the workspaces that define computed traits or audiences."""
    for workspace_id in workspaces_with_definitions(store):
        at = now or now_ms()
        try:
            defs = definitions(store, workspace_id)
            if needs_reconcile(store, workspace_id, defs, at, reconcile_every_ms):
                report = reconcile(store, workspace_id, lake_dir, at)
                logger.info("audiences: reconciled %s: %d profiles (%d entered, %d exited, "
                            "%d trait values)", workspace_id, report.evaluated, report.entered,
                            report.exited, report.traits)  # fmt: skip
            while expire(store, workspace_id, at).evaluated >= EXPIRE_LIMIT:
                pass
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            raise  # the store is unavailable: the pipeline's loop retries
        except Exception:  # one workspace's failure (a SQL trait's query) must not stop others
            logger.exception("audiences: the scheduled run failed for %s", workspace_id)
