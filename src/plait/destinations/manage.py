"""Operations on a workspace's destinations, shared by the admin API and the CLI: change
the definitions (checked whole first), read each destination's status and queue, a
message's delivery status everywhere, and replay dead letters or a time range."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from plait.audiences.engine import DEFINITIONS, change_messages
from plait.destinations import queue
from plait.destinations.config import (
    MASK,
    SECTION,
    Destination,
    compile_destinations,
    masked,
)
from plait.destinations.dispatcher import (
    admits,
    item_for,
    loads,
    person_of,
    profile_preferences,
    source_ids,
    source_names,
)
from plait.govern.config import GovernanceCache
from plait.govern.transformations import destination_mapping, with_destination_mapping
from plait.lake.writer import read_processed
from plait.log import backend_for
from plait.spec.timestamps import parse_timestamp
from plait.store import Store
from plait.store.db import now_ms
from plait.store.schema import (
    audience_members,
    deliveries,
    destination_stats,
    log_messages,
    message_profiles,
)
from plait.store.workspaces import Invalid, NotFound, Workspaces

STATUSES = ("retrying", "waiting", "failed")


def documents(repo: Workspaces, workspace_id: str) -> list[dict[str, Any]]:
    return repo.get_setting(workspace_id, SECTION) or []


def compiled(repo: Workspaces, workspace_id: str) -> dict[str, Destination]:
    return compile_destinations(documents(repo, workspace_id))


def save(repo: Workspaces, workspace_id: str, docs: list[dict[str, Any]]) -> bool:
    """Check the whole section, then store it; True when it changed. A secret sent back
    masked (as the API and the export show it) keeps the stored one. A new destination
    receives what the pipeline processes from now on (``replay`` sends the past)."""
    old = documents(repo, workspace_id)
    docs = [unmasked(d, old) for d in docs]
    compiled_docs = compile_destinations(docs)
    with repo.store.engine.connect() as conn:
        known = DEFINITIONS.get(conn, workspace_id).audiences
    for i, dest in enumerate(compiled_docs.values()):
        for key in dest.audiences:
            if key not in known:
                raise Invalid(f"{SECTION}[{i}].audiences", f"no audience {key!r}")
    if docs == old:
        return False
    repo.put_setting(workspace_id, SECTION, docs)
    new = {d["key"] for d in docs} - {d.get("key") for d in old}
    if new:
        log = backend_for(repo.store)
        with repo.store.write() as conn:
            at = queue.pipeline_position(log, conn, workspace_id)
            for key in new:
                if queue.checkpoint(log, conn, workspace_id, key) is None:
                    log.save_checkpoint(queue.consumer_name(workspace_id, key), at, conn)
    before = {d.get("key"): set(d.get("audiences") or ()) for d in old}
    for doc in docs:  # audiences connected now: their members so far, once
        added = sorted(set(doc.get("audiences") or ()) - before.get(doc["key"], set()))
        if added and doc.get("enabled", True):
            full_sync(repo.store, workspace_id, doc["key"], added)
    return True


def full_sync(store: Store, workspace_id: str, key: str, audiences: list[str]) -> int:
    """Queue, for destination ``key``, each current member's entry into ``audiences``
    (in the audience's emit shape, with ``context.personas``); returns how many messages.
    Queued per person, they go before that person's later entries and exits."""
    now = now_ms()
    total = 0
    with store.engine.connect() as conn:
        defs = DEFINITIONS.get(conn, workspace_id)
        members = conn.execute(
            sa.select(audience_members.c.audience_key, audience_members.c.profile_id)
            .where(audience_members.c.workspace_id == workspace_id,
                   audience_members.c.audience_key.in_(audiences))
            .order_by(audience_members.c.profile_id)
        ).all()  # fmt: skip
    for i in range(0, len(members), 5000):
        part = members[i : i + 5000]
        with store.write() as conn:
            messages = change_messages(
                conn, workspace_id, defs, [("audience", a, pid, True) for a, pid in part], now
            )
            offsets = queue.own_offsets(len(messages))
            rows = [{"log_offset": offsets[n],
                     "person": m["context"]["personas"]["profile_id"], "status": "queued",
                     "attempts": 0, "next_attempt_at": 0,
                     "payload": orjson.dumps({**m, "receivedAt": _iso(now)}).decode()}
                    for n, m in enumerate(messages)]  # fmt: skip
            queue.enqueue(conn, workspace_id, key, rows, now)
        total += len(rows)
    return total


def _iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def unmasked(doc: Any, old: list[dict[str, Any]]) -> Any:
    before = next((d for d in old if d.get("key") == doc.get("key")), None) \
        if isinstance(doc, dict) else None  # fmt: skip
    if before is None or not isinstance(doc.get("settings"), dict):
        return doc
    settings = {
        k: before.get("settings", {}).get(k, v) if v == MASK else v
        for k, v in doc["settings"].items()
    }
    return {**doc, "settings": settings}


def put(repo: Workspaces, workspace_id: str, doc: dict[str, Any]) -> bool:
    """Create or replace one destination (by its key)."""
    items = documents(repo, workspace_id)
    if any(d.get("key") == doc.get("key") for d in items):
        items = [doc if d.get("key") == doc.get("key") else d for d in items]
    else:
        items = [*items, doc]
    return save(repo, workspace_id, items)


def delete(repo: Workspaces, store: Store, workspace_id: str, key: str) -> None:
    items = documents(repo, workspace_id)
    kept = [d for d in items if d.get("key") != key]
    if len(kept) == len(items):
        raise NotFound(f"no destination {key!r}")
    save(repo, workspace_id, kept)
    with store.write() as conn:  # its queue, counters and checkpoint go with it
        for table in (deliveries, destination_stats):
            conn.execute(table.delete().where(table.c.workspace_id == workspace_id,
                                              table.c.destination == key))  # fmt: skip
        conn.execute(sa.text("DELETE FROM checkpoints WHERE consumer = :c"),
                     {"c": queue.consumer_name(workspace_id, key)})  # fmt: skip


def _require(repo: Workspaces, workspace_id: str, key: str) -> Destination:
    found = compiled(repo, workspace_id).get(key)
    if found is None:
        raise NotFound(f"no destination {key!r}")
    return found


def with_mapping(repo: Workspaces, workspace_id: str, key: str, mapping: Any) -> list[Any]:
    """The workspace's transformations with destination ``key``'s own replaced by
    ``mapping`` (checked; saving them is the caller's governance change)."""
    name = _require(repo, workspace_id, key).name
    sources = {s["name"]: s["id"] for s in repo.list_sources(workspace_id)}
    docs = repo.get_setting(workspace_id, "transformations") or []
    return with_destination_mapping(docs, name, mapping, sources)


# Reading ------------------------------------------------------------------------------------


def mapping(repo: Workspaces, workspace_id: str, key: str) -> dict[str, Any]:
    """Destination ``key``'s transformations: its own (its mapping) and those it shares."""
    name = _require(repo, workspace_id, key).name
    docs = repo.get_setting(workspace_id, "transformations") or []
    return {"destination": name, **destination_mapping(docs, name)}


def status(store: Store, workspace_id: str, key: str) -> dict[str, Any]:
    """Counters, the queue by status, the last response, and how far behind it is."""
    log = backend_for(store)
    with store.engine.connect() as conn:
        stats = conn.execute(sa.select(destination_stats).where(
            destination_stats.c.workspace_id == workspace_id,
            destination_stats.c.destination == key)).mappings().first()  # fmt: skip
        queued = dict(conn.execute(sa.text(
            "SELECT CASE WHEN status = 'failed' THEN 'failed' WHEN attempts = 0 THEN 'waiting' "
            "ELSE 'retrying' END, count(*) FROM deliveries WHERE workspace_id = :ws "
            "AND destination = :key GROUP BY 1"),
            {"ws": workspace_id, "key": key}).all())  # fmt: skip
        at = queue.checkpoint(log, conn, workspace_id, key)
        behind = conn.scalar(sa.select(sa.func.count()).where(
            message_profiles.c.workspace_id == workspace_id,
            message_profiles.c.log_offset > (at or 0),
            message_profiles.c.log_offset <= queue.pipeline_position(log, conn, workspace_id),
        )) if at is not None else 0  # fmt: skip
    stats = dict(stats or {})
    return {
        "delivered": stats.get("delivered", 0), "filtered": stats.get("filtered", 0),
        "retried": stats.get("retried", 0), "failed": stats.get("failed", 0),
        "queue": {s: queued.get(s, 0) for s in STATUSES},
        "behind": behind,
        "last_status": stats.get("last_status"), "last_response": stats.get("last_response"),
        "last_attempt_at": stats.get("last_attempt_at"),
        "last_delivered_at": stats.get("last_delivered_at"),
    }  # fmt: skip


def describe(store: Store, repo: Workspaces, workspace_id: str, key: str) -> dict[str, Any]:
    doc = next((d for d in documents(repo, workspace_id) if d.get("key") == key), None)
    if doc is None:
        raise NotFound(f"no destination {key!r}")
    return {**masked(doc), "status": status(store, workspace_id, key)}


def queued(
    store: Store, repo: Workspaces, workspace_id: str, key: str, state: str | None = None,
    limit: int = 100, after: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """The destination's queue (retrying, waiting) and dead letters (failed), oldest first."""
    _require(repo, workspace_id, key)
    if state is not None and state not in STATUSES:
        raise Invalid("status", f"one of {', '.join(STATUSES)}")
    d = deliveries.c
    query = (
        sa.select(d.id, d.log_offset, d.person, d.status, d.attempts, d.first_attempt_at,
                  d.next_attempt_at, d.last_status, d.last_response, d.updated_at,
                  log_messages.c.message_id, log_messages.c.type)
        .join(log_messages, log_messages.c.log_offset == d.log_offset, isouter=True)
        .where(d.workspace_id == workspace_id, d.destination == key, d.id > after)
        .order_by(d.id).limit(limit)
    )  # fmt: skip
    if state == "failed":
        query = query.where(d.status == "failed")
    elif state == "waiting":
        query = query.where(d.status == "queued", d.attempts == 0)
    elif state == "retrying":
        query = query.where(d.status == "queued", d.attempts > 0)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [{
        "id": r.id, "message_id": r.message_id, "type": r.type, "log_offset": r.log_offset,
        "status": _status(r.status, r.attempts), "attempts": r.attempts,
        "first_attempt_at": r.first_attempt_at,
        "next_attempt_at": r.next_attempt_at if r.status == "queued" else None,
        "last_status": r.last_status, "last_response": r.last_response,
        "idempotency_key": queue.delivery_key(key, r.log_offset),
    } for r in rows]  # fmt: skip


def _status(status: str, attempts: int) -> str:
    if status == "failed":
        return "failed"
    return "retrying" if attempts else "waiting"


def message_status(store: Store, repo: Workspaces, workspace_id: str, message_id: str
                   ) -> dict[str, Any]:  # fmt: skip
    """A message's delivery status at each destination: delivered, filtered (its filters
    or consent leave it out), pending (not reached yet), retrying, waiting or failed."""
    log = backend_for(store)
    dests = compiled(repo, workspace_id)
    with store.engine.connect() as conn:
        offsets = [o for (o,) in conn.execute(
            sa.select(log_messages.c.log_offset).where(
                log_messages.c.workspace_id == workspace_id,
                log_messages.c.message_id == message_id))]  # fmt: skip
        if not offsets:
            raise NotFound(f"no message {message_id!r}")
        rows = [r for o in offsets for r in read_processed(conn, workspace_id, o - 1, o, 1)]
        governance = GovernanceCache().get(conn, workspace_id)
        consent, shapes = governance.consent, governance.transformations
        prefs = profile_preferences(conn, {r.profile_id for r in rows if r.profile_id})
        queued_rows = {(r.destination, r.log_offset): r for r in conn.execute(
            sa.select(deliveries).where(deliveries.c.workspace_id == workspace_id,
                                        deliveries.c.log_offset.in_(offsets)))}  # fmt: skip
        positions = {key: queue.checkpoint(log, conn, workspace_id, key) for key in dests}
        names = source_names(conn, workspace_id)
    out = []
    for key, dest in dests.items():
        for row in rows or [None]:
            entry: dict[str, Any] = {"destination": key}
            q = queued_rows.get((key, row.log_offset)) if row is not None else None
            if row is None:
                entry["status"] = "pending"  # not processed by the pipeline yet
            elif q is not None:
                entry |= {"status": _status(q.status, q.attempts), "attempts": q.attempts,
                          "last_status": q.last_status,
                          "last_response": q.last_response}  # fmt: skip
            elif positions[key] is None or row.log_offset > positions[key]:
                entry["status"] = "pending"
            else:
                msg = loads(row.payload)
                admitted = admits(dest, source_ids(names, dest), row, msg, consent, prefs) and (
                    item_for(dest, shapes, row.log_offset, row.payload, msg) is not None
                )
                entry["status"] = "delivered" if admitted else "filtered"
            if row is not None:
                entry["idempotency_key"] = queue.delivery_key(key, row.log_offset)
            out.append(entry)
    return {"message_id": message_id, "destinations": out}


# Replays --------------------------------------------------------------------------------------


def replay(
    store: Store, repo: Workspaces, workspace_id: str, key: str, *, dead_letters: bool = False,
    start: str | None = None, end: str | None = None,
) -> int:  # fmt: skip
    """Queue again the destination's dead letters, or every processed message whose event
    time is in [start, end) that its filters admit; returns how many were queued. They
    are sent in log order per person, before that person's newer messages."""
    dest = _require(repo, workspace_id, key)
    now = now_ms()
    if dead_letters == (start is not None or end is not None):
        raise Invalid("replay", "give dead_letters, or a time range (start and end)")
    if dead_letters:
        with store.write() as conn:
            return conn.execute(
                deliveries.update()
                .where(deliveries.c.workspace_id == workspace_id,
                       deliveries.c.destination == key, deliveries.c.status == "failed")
                .values(status="queued", attempts=0, first_attempt_at=None, next_attempt_at=0,
                        updated_at=now)
            ).rowcount  # fmt: skip
    bounds = []
    for name, text in (("start", start), ("end", end)):
        if not isinstance(text, str):
            raise Invalid(name, "required: an ISO 8601 time")
        try:
            bounds.append(int(parse_timestamp(text).timestamp() * 1000))
        except (ValueError, TypeError):
            raise Invalid(name, f"not an ISO 8601 time: {text!r}") from None
    low, high = bounds
    if high <= low:
        raise Invalid("end", "must be after start")
    log = backend_for(store)
    total = 0
    with store.engine.connect() as conn:
        # Only what the destination has passed: the rest reaches it anyway.
        reached = queue.checkpoint(log, conn, workspace_id, key) or 0
        offsets = [o for (o,) in conn.execute(
            sa.select(message_profiles.c.log_offset).where(
                message_profiles.c.workspace_id == workspace_id,
                message_profiles.c.timestamp >= low, message_profiles.c.timestamp < high,
                message_profiles.c.log_offset <= reached,
            ).order_by(message_profiles.c.log_offset))]  # fmt: skip
        consent = GovernanceCache().get(conn, workspace_id).consent
        ids = source_ids(source_names(conn, workspace_id), dest)
    for i in range(0, len(offsets), 1000):
        part = offsets[i : i + 1000]
        wanted = set(part)  # the range's messages among those the offsets span
        with store.engine.connect() as conn:
            rows = [r for r in read_processed(conn, workspace_id, part[0] - 1, part[-1], 100_000)
                    if r.log_offset in wanted]  # fmt: skip
            prefs = profile_preferences(conn, {r.profile_id for r in rows if r.profile_id})
        chosen = [
            {"log_offset": r.log_offset, "person": person_of(r), "status": "queued",
             "attempts": 0, "next_attempt_at": 0}
            for r in rows if admits(dest, ids, r, loads(r.payload), consent, prefs)
        ]  # fmt: skip
        with store.write() as conn:
            queue.enqueue(conn, workspace_id, key, chosen, now)
        total += len(chosen)
    return total


def discard(store: Store, repo: Workspaces, workspace_id: str, key: str) -> int:
    """Forget the destination's dead letters; returns how many."""
    _require(repo, workspace_id, key)
    with store.write() as conn:
        return conn.execute(deliveries.delete().where(
            deliveries.c.workspace_id == workspace_id, deliveries.c.destination == key,
            deliveries.c.status == "failed")).rowcount  # fmt: skip
