"""The audience step of the pipeline: the profiles a batch touched are evaluated again, in
memory, and what changed is applied (plait.audiences.engine).

The pipeline runs it after a batch commits (``follow``), with a checkpoint of its own
(consumer ``audiences:<ws>``): the profiles are loaded and evaluated on a read connection,
without the store's write lock, which on SQLite ingestion needs too; only applying the
changes takes it, in a short transaction that moves the checkpoint. When the checkpoint is
not where the batch began (a crash between the two transactions, another worker's batch
not applied yet), the range from the checkpoint is evaluated again from the profiles'
whole histories instead (``recover``). Replays and unmerges run ``update_audiences`` in
their own transaction.

Merged-away profiles leave their audiences (their survivor is evaluated instead). A group
call touches the account's members when an audience reads account traits. A workspace with
no computed traits or audiences costs one settings query per batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from plait.audiences import engine
from plait.audiences.definitions import Definitions
from plait.audiences.evaluate import Compiled, Event, ProfileState
from plait.audiences.language import AccountTrait, walk
from plait.log import LogBackend, backend_for
from plait.log.processing import Batch
from plait.observability import AUDIENCE_PASSED_OVER
from plait.profiles.stage import event_name, identify_traits
from plait.store import Store
from plait.store.bulk import select_in
from plait.store.db import now_ms
from plait.store.locks import workspace_lock

logger = logging.getLogger("plait.audiences")


def consumer_name(workspace_id: str) -> str:
    return f"audiences:{workspace_id}"


def reads_accounts(defs) -> bool:
    if "reads_accounts" not in defs.cache:
        defs.cache["reads_accounts"] = any(
            isinstance(n, AccountTrait) for a in defs.audiences.values() for n in walk(a.tree)
        )
    return defs.cache["reads_accounts"]


@dataclass
class Evaluated:
    """A batch's profiles evaluated, not yet applied."""

    merged: list[str] = field(default_factory=list)  # merged away: they leave
    survivors: set[str] = field(default_factory=set)  # their cached matches are stale
    states: dict[str, ProfileState] = field(default_factory=dict)
    results: dict[str, engine.Result] = field(default_factory=dict)


def evaluate_batch(conn: sa.Connection, batch: Batch, defs: Definitions, now: int) -> Evaluated:
    """Evaluate the profiles ``batch`` touched; reads only."""
    graph = batch.context.get("graph")
    resolve = graph.resolve_id if graph is not None else (lambda pid: pid)
    merges = batch.context.get("merges", ())
    merged = [m.merged for m in merges]
    touched = {resolve(item.profile_id) for item in batch.items if item.profile_id}
    accounts = {item.account_id for item in batch.items if item.account_id}
    if accounts and reads_accounts(defs):
        touched |= {
            pid
            for (pid,) in select_in(
                conn, "SELECT profile_id FROM account_members WHERE account_id IN ({keys})",
                sorted(accounts),
            )
        }  # fmt: skip
    touched -= set(merged)
    # A survivor's history gained the merged profiles' events: its matches are made again.
    survivors = {resolve(m.survivor) for m in merges}
    arrived: dict[str, list[Event]] = {}
    for item in batch.items:
        if item.profile_id:
            arrived.setdefault(resolve(item.profile_id), []).append(Event(
                item.timestamp_ms, item.record.offset, item.record.type, event_name(item),
                item.message,
            ))  # fmt: skip
    # Profiles whose events match nothing are evaluated only when a trait an audience reads
    # was set, or an account changed (the emitted identifies read back set neither).
    read = Compiled.of(defs).trait_keys
    dirty = {resolve(i.profile_id) for i in batch.items if i.profile_id and i.record.type
             == "identify" and read & set(identify_traits(i.message) or ())}  # fmt: skip
    dirty |= touched - {resolve(i.profile_id) for i in batch.items if i.profile_id}
    dirty |= {resolve(i.profile_id) for i in batch.items if i.account_id and i.profile_id}
    states, results = engine.evaluate_states(
        conn, batch.workspace_id, defs, touched, now, arrived, dirty, survivors
    )
    return Evaluated(merged, survivors, states, results)


def apply_evaluated(
    conn: sa.Connection, workspace_id: str, defs: Definitions, done: Evaluated, now: int
) -> engine.Changes:
    """Apply an evaluation in the write transaction ``conn``. Profiles deleted or merged
    away since it was made are left out (nothing is stored for a person who is gone)."""
    engine.forget(conn, workspace_id, done.merged, now, "merged")
    engine.drop_cache(conn, workspace_id, done.survivors)  # saved again below if evaluated
    present = {
        pid
        for (pid,) in select_in(
            conn, "SELECT id FROM profiles WHERE merged_into IS NULL AND id IN ({keys})",
            sorted(done.results),
        )
    } if done.results else set()  # fmt: skip
    states = {pid: s for pid, s in done.states.items() if pid in present}
    engine.save_cache(conn, workspace_id, defs, states, now)
    results = {pid: r for pid, r in done.results.items() if pid in present}
    return engine.apply(conn, workspace_id, defs, results, now, "event")


def update_audiences(batch: Batch) -> None:
    """The step as a stage of a transaction of its own (replays, unmerges)."""
    defs = engine.DEFINITIONS.get(batch.conn, batch.workspace_id)
    if defs.empty:
        return
    now = batch.context.get("now_ms") or now_ms()
    done = evaluate_batch(batch.conn, batch, defs, now)
    apply_evaluated(batch.conn, batch.workspace_id, defs, done, now)


# Following the pipeline ------------------------------------------------------------------


def prepare(conn: sa.Connection, log: LogBackend, workspace_id: str, after: int, last: int
            ) -> bool:  # fmt: skip
    """In the pipeline's transaction of a batch (the messages after ``after`` up to
    ``last``): whether the step must follow it. With no definitions there is nothing to
    evaluate and the checkpoint moves here; a first checkpoint starts where the batch
    begins, so a crash before ``follow`` leaves the batch to ``recover``."""
    if engine.DEFINITIONS.get(conn, workspace_id).empty:
        log.save_checkpoint(consumer_name(workspace_id), last, conn)
        return False
    if log.position(consumer_name(workspace_id), conn) is None:
        log.save_checkpoint(consumer_name(workspace_id), after, conn)
    return True


def follow(
    store: Store, workspace_id: str, batch: Batch | None, after: int, last: int, now: int
) -> None:
    """After the pipeline committed the messages after ``after`` up to ``last`` (``batch``:
    the ones it processed, None if it skipped them all): evaluate, then apply."""
    log, consumer = backend_for(store), consumer_name(workspace_id)
    try:
        done = None
        with store.engine.connect() as conn:  # no write lock: ingestion goes on meanwhile
            defs = engine.DEFINITIONS.get(conn, workspace_id)
            if batch is not None and not defs.empty and log.position(consumer, conn) == after:
                done = evaluate_batch(conn, batch, defs, now)
        with store.write(derived=True) as conn:
            workspace_lock(conn, workspace_id)
            at = log.position(consumer, conn)
            at = after if at is None else at  # (removed meanwhile by a rebuild)
            if at >= last:
                return  # another worker applied it
            current = engine.DEFINITIONS.get(conn, workspace_id)
            if at == after and (batch is None or done is not None) and current is defs:
                if done is not None:
                    apply_evaluated(conn, workspace_id, defs, done, now)
            elif not current.empty:
                recover(conn, workspace_id, current, at, last, now)
            log.save_checkpoint(consumer, last, conn)
    except (sa.exc.OperationalError, sa.exc.InterfaceError):
        raise  # the store is unavailable or busy: the next batch starts from the checkpoint
    except Exception:
        # One failing evaluation never stops a workspace's audiences: its profiles are
        # passed over, and the next reconciliation over the lake sets them right.
        logger.exception("audiences: passing over offsets %s-%s (%s)", after, last, workspace_id)
        AUDIENCE_PASSED_OVER.inc()
        with store.write(derived=True) as conn:
            workspace_lock(conn, workspace_id)
            if (log.position(consumer, conn) or 0) < last:
                log.save_checkpoint(consumer, last, conn)


def recover(
    conn: sa.Connection, workspace_id: str, defs: Definitions, after: int, last: int, now: int
) -> engine.Changes:
    """Evaluate again, from their whole histories, the profiles of the processed messages
    after ``after`` up to ``last``, and the members of accounts changed meanwhile; profiles
    merged away since leave their audiences."""
    ids = set(
        conn.scalars(
            sa.text(
                "SELECT DISTINCT profile_id FROM message_profiles WHERE workspace_id = :ws "
                "AND log_offset > :after AND log_offset <= :last AND profile_id IS NOT NULL"
            ),
            {"ws": workspace_id, "after": after, "last": last},
        )
    )
    if reads_accounts(defs):
        ids |= set(
            conn.scalars(
                sa.text(
                    "SELECT m.profile_id FROM account_members m WHERE (m.log_offset > :after "
                    "AND m.log_offset <= :last) OR m.account_id IN (SELECT t.profile_id FROM "
                    "traits t JOIN profiles a ON a.id = t.profile_id WHERE a.workspace_id = "
                    ":ws AND a.kind = 'account' AND t.log_offset > :after "
                    "AND t.log_offset <= :last)"
                ),
                {"ws": workspace_id, "after": after, "last": last},
            )
        )
    gone = list(
        conn.scalars(
            sa.text(
                "SELECT DISTINCT m.profile_id FROM audience_members m JOIN profiles p "
                "ON p.id = m.profile_id WHERE m.workspace_id = :ws "
                "AND p.merged_into IS NOT NULL"
            ),
            {"ws": workspace_id},
        )
    )
    engine.forget(conn, workspace_id, gone, now, "merged")
    survivors = {
        survivor
        for (_, survivor) in select_in(
            conn, "SELECT id, coalesce(merged_into, id) FROM profiles WHERE id IN ({keys})",
            sorted(ids),
        )
    } if ids else set()  # fmt: skip
    engine.drop_cache(conn, workspace_id, survivors)
    results = engine.evaluate(conn, workspace_id, defs, survivors, now)
    return engine.apply(conn, workspace_id, defs, results, now, "event")
