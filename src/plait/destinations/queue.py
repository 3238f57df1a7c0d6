"""A destination's durable state in the store: its checkpoint in the processed log, its
queue (``deliveries``: messages queued for a retry or waiting behind an earlier message of
the same person, and the dead letters), its counters and its lease.

Ordering: a person's messages go out in log order. A message whose person has a queued
message waits (queued, not tried yet) behind it; the queue's head per person is the
lowest offset, and it is the only one of that person sent.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from plait.log import LogBackend
from plait.store.bulk import insert_rows, select_in
from plait.store.schema import deliveries, destination_stats

LEASE_MS = 15_000
DELETION = "deletion:"  # the person of a forwarded deletion (its user id follows)
OWN_BASE = 1 << 62  # own offsets lie below every log offset, from -OWN_BASE up

_own_lock = threading.Lock()
_own_next = 0


def own_offsets(n: int) -> range:
    """``n`` offsets for messages queued without a log offset of their own (an audience's
    full sync, a forwarded deletion, a reverse ETL row): negative, so before every log
    message, and rising with time, so a person's later ones go after the earlier ones.
    Unique in the process; one per microsecond of the clock across processes."""
    global _own_next
    with _own_lock:
        start = max(time.time_ns() // 1000, _own_next)
        _own_next = start + n
    return range(start - OWN_BASE, start - OWN_BASE + n)


def consumer_name(workspace_id: str, key: str) -> str:
    return f"destination:{workspace_id}:{key}"


def pipeline_position(log: LogBackend, conn: sa.Connection, workspace_id: str) -> int:
    # plait.pipeline.runner.consumer_name (destinations sit below the pipeline)
    return log.checkpoint(f"pipeline:{workspace_id}", conn)


def delivery_key(key: str, log_offset: int) -> str:
    """The idempotency key of a message's delivery to a destination: the same on every
    retry and replay."""
    return f"{key}-{log_offset}"


def backoff_ms(attempts: int, first: float, most: float) -> int:
    """Exponential with full jitter around it: ~first, 2x, 4x ... capped at ``most``."""
    base = min(most, first * 2 ** max(0, attempts - 1))
    return int(base * random.uniform(0.5, 1.5) * 1000)


# Reading ----------------------------------------------------------------------------------


def checkpoint(log: LogBackend, conn: sa.Connection, workspace_id: str, key: str) -> int | None:
    """Where the destination is in the log (None: not started)."""
    return log.position(consumer_name(workspace_id, key), conn)


def queued_persons(
    conn: sa.Connection, workspace_id: str, key: str, persons: Iterable[str]
) -> set[str]:
    """The persons among ``persons`` with a message queued (their next ones wait)."""
    return {
        p
        for (p,) in select_in(
            conn,
            "SELECT DISTINCT person FROM deliveries WHERE workspace_id = ? AND destination = ? "
            "AND status = 'queued' AND person IN ({keys})",
            sorted(set(persons)),
            (workspace_id, key),
        )
    }


@dataclass
class Queued:
    id: int
    log_offset: int
    person: str
    attempts: int
    first_attempt_at: int | None
    payload: str | None  # a forwarded deletion's (else the log's message is sent)


def due(conn: sa.Connection, workspace_id: str, key: str, now: int, limit: int) -> list[Queued]:
    """Queued messages due now that are their person's head (lowest offset)."""
    rows = conn.execute(
        sa.text(
            "SELECT d.id, d.log_offset, d.person, d.attempts, d.first_attempt_at, d.payload "
            "FROM deliveries d WHERE d.workspace_id = :ws AND d.destination = :key "
            "AND d.status = 'queued' AND d.next_attempt_at <= :now AND NOT EXISTS ("
            "SELECT 1 FROM deliveries e WHERE e.workspace_id = d.workspace_id "
            "AND e.destination = d.destination AND e.person = d.person "
            "AND e.status = 'queued' AND e.log_offset < d.log_offset) "
            "ORDER BY d.next_attempt_at, d.log_offset LIMIT :limit"
        ),
        {"ws": workspace_id, "key": key, "now": now, "limit": limit},
    ).all()
    return [Queued(*row) for row in rows]


def next_due_at(conn: sa.Connection, workspace_id: str, key: str) -> int | None:
    return conn.execute(
        sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.workspace_id == workspace_id,
            deliveries.c.destination == key,
            deliveries.c.status == "queued",
        )
    ).scalar()


# Writing ----------------------------------------------------------------------------------


def enqueue(conn: sa.Connection, workspace_id: str, key: str, rows: list[dict], now: int) -> None:
    """New queue rows: dicts with log_offset, person, status, attempts, first_attempt_at,
    next_attempt_at, last_status, last_response. A message queued already (a window sent
    again after a crash) keeps its row."""
    if not rows:
        return
    have = {
        o
        for (o,) in select_in(
            conn,
            "SELECT log_offset FROM deliveries WHERE workspace_id = ? AND destination = ? "
            "AND log_offset IN ({keys})",
            [r["log_offset"] for r in rows],
            (workspace_id, key),
        )
    }
    columns = ("workspace_id", "destination", "log_offset", "person", "status", "attempts",
               "first_attempt_at", "next_attempt_at", "last_status", "last_response",
               "payload", "updated_at")  # fmt: skip
    insert_rows(conn, deliveries, columns, [
        (workspace_id, key, r["log_offset"], r["person"], r["status"], r["attempts"],
         r.get("first_attempt_at"), r["next_attempt_at"], r.get("last_status"),
         r.get("last_response"), r.get("payload"), now)
        for r in rows if r["log_offset"] not in have
    ])  # fmt: skip


def remove(conn: sa.Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(deliveries.delete().where(deliveries.c.id.in_(ids)))


def update(conn: sa.Connection, rows: list[dict], now: int) -> None:
    """Rows tried again: dicts with id, status, attempts, first_attempt_at,
    next_attempt_at, last_status, last_response."""
    for r in rows:
        conn.execute(
            deliveries.update()
            .where(deliveries.c.id == r["id"])
            .values(**{k: v for k, v in r.items() if k != "id"}, updated_at=now)
        )


def count(
    conn: sa.Connection, workspace_id: str, key: str, now: int, *, delivered: int = 0,
    filtered: int = 0, retried: int = 0, failed: int = 0, last_status: int | None = None,
    last_response: str | None = None, attempted: bool = False,
) -> None:  # fmt: skip
    """Add to the destination's counters (and keep the last response when ``attempted``)."""
    _ensure_stats(conn, workspace_id, key)
    c = destination_stats.c
    values: dict = {
        "delivered": c.delivered + delivered, "filtered": c.filtered + filtered,
        "retried": c.retried + retried, "failed": c.failed + failed,
    }  # fmt: skip
    if attempted:
        values |= {"last_status": last_status, "last_response": last_response,
                   "last_attempt_at": now}  # fmt: skip
    if delivered:
        values["last_delivered_at"] = now
    conn.execute(destination_stats.update().where(
        c.workspace_id == workspace_id, c.destination == key).values(**values))  # fmt: skip


def _ensure_stats(conn: sa.Connection, workspace_id: str, key: str) -> None:
    c = destination_stats.c
    if conn.execute(sa.select(c.destination).where(
            c.workspace_id == workspace_id, c.destination == key)).first() is None:  # fmt: skip
        conn.execute(destination_stats.insert().values(
            workspace_id=workspace_id, destination=key, delivered=0, filtered=0, retried=0,
            failed=0))  # fmt: skip


def take_lease(conn: sa.Connection, workspace_id: str, key: str, owner: str, now: int) -> bool:
    """Hold the destination for ``owner`` for LEASE_MS (renewed by taking it again)."""
    _ensure_stats(conn, workspace_id, key)
    c = destination_stats.c
    taken = conn.execute(
        destination_stats.update()
        .where(c.workspace_id == workspace_id, c.destination == key,
               sa.or_(c.owner.is_(None), c.owner == owner, c.lease_until < now))
        .values(owner=owner, lease_until=now + LEASE_MS)
    )  # fmt: skip
    return taken.rowcount == 1


def drop_lease(conn: sa.Connection, workspace_id: str, key: str, owner: str) -> None:
    c = destination_stats.c
    conn.execute(destination_stats.update().where(
        c.workspace_id == workspace_id, c.destination == key, c.owner == owner,
    ).values(owner=None, lease_until=None))  # fmt: skip
