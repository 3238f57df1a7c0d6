"""The pipeline's consent stage: profile-level consent from "Segment Consent Preference
Updated" events, with its history, following merges.

A profile's consent per category is the value of its latest preference event (event time,
then log offset), a category the event leaves out being false, as Segment reads them; every
event is kept in consent_history. A merge brings the merged
profile's consent and history to the survivor, the later value winning per category.
"""

from __future__ import annotations

import orjson
import sqlalchemy as sa

from plait.govern.consent import is_preference_update, message_preferences
from plait.identity.resolver import Graph, Merge
from plait.log.processing import Batch
from plait.store.bulk import chunks, insert_rows, update_many
from plait.store.schema import consent_history, profile_consent
from plait.store.upsert import upsert

HISTORY_COLUMNS = (
    "profile_id", "preferences", "timestamp", "log_offset", "source_id", "message_id",
)  # fmt: skip


def update_consent(batch: Batch) -> None:
    conn = batch.conn
    graph: Graph | None = batch.context.get("graph")
    merges: list[Merge] = batch.context.get("merges", [])
    if merges and graph is not None:
        _move(conn, [(graph.resolve_id(m.survivor), m.merged) for m in merges])
    updates = [
        (item, prefs)
        for item in batch.items
        if item.profile_id and is_preference_update(item.message)
        if (prefs := message_preferences(item.message)) is not None
    ]
    if not updates:
        return
    known = _categories(conn, list({item.profile_id for item, _ in updates}))
    latest: dict[tuple[str, str], dict] = {}
    history = []
    for item, prefs in updates:
        record = item.record
        history.append((item.profile_id, orjson.dumps(prefs).decode(), item.timestamp_ms,
                        record.offset, record.source_id, record.message_id))  # fmt: skip
        # As Segment reads preferences, a category the event leaves out is false.
        stated = {**dict.fromkeys(known.setdefault(item.profile_id, set()), False), **prefs}
        known[item.profile_id].update(prefs)
        for category, allowed in stated.items():
            row = {"profile_id": item.profile_id, "category": category[:200],
                   "allowed": bool(allowed), "timestamp": item.timestamp_ms,
                   "log_offset": record.offset}  # fmt: skip
            key = (item.profile_id, row["category"])
            if key not in latest or _newer(row, latest[key]):
                latest[key] = row
    insert_rows(conn, consent_history, HISTORY_COLUMNS, history)
    _keep_latest(conn, list(latest.values()))


def _categories(conn: sa.Connection, profile_ids: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for part in chunks(profile_ids):
        query = sa.select(profile_consent.c.profile_id, profile_consent.c.category).where(
            profile_consent.c.profile_id.in_(part)
        )
        for profile_id, category in conn.execute(query):
            found.setdefault(profile_id, set()).add(category)
    return found


def _newer(row: dict, than: dict) -> bool:
    return (row["timestamp"], row["log_offset"]) > (than["timestamp"], than["log_offset"])


def _keep_latest(conn: sa.Connection, rows: list[dict]) -> None:
    """Upsert per (profile, category), where the offered value is the later one."""
    upsert(
        conn, profile_consent, rows, ["profile_id", "category"],
        update_if=lambda offered: sa.or_(
            offered.timestamp > profile_consent.c.timestamp,
            sa.and_(offered.timestamp == profile_consent.c.timestamp,
                    offered.log_offset > profile_consent.c.log_offset),
        ),
    )  # fmt: skip


def _move(conn: sa.Connection, moves: list[tuple[str, str]]) -> None:
    """(survivor, merged) pairs: the merged profiles' consent becomes their survivors'."""
    update_many(conn, consent_history, "profile_id", "profile_id", moves)
    survivor_of = {merged: survivor for survivor, merged in moves}
    for part in chunks(list(survivor_of)):
        rows = [
            {**row, "profile_id": survivor_of[row["profile_id"]]}
            for row in conn.execute(
                sa.select(profile_consent).where(profile_consent.c.profile_id.in_(part))
            ).mappings()
        ]
        if rows:
            conn.execute(profile_consent.delete().where(profile_consent.c.profile_id.in_(part)))
            latest: dict[tuple[str, str], dict] = {}
            for row in rows:
                key = (row["profile_id"], row["category"])
                if key not in latest or _newer(row, latest[key]):
                    latest[key] = row
            _keep_latest(conn, list(latest.values()))


def profile_consent_of(conn: sa.Connection, profile_id: str) -> dict:
    """A profile's current consent and its history, for the Profile API and exports."""
    current = {
        row.category: {"allowed": bool(row.allowed), "timestamp": row.timestamp}
        for row in conn.execute(
            sa.select(profile_consent).where(profile_consent.c.profile_id == profile_id)
        )
    }
    history = [
        {"preferences": orjson.loads(row.preferences), "timestamp": row.timestamp,
         "source_id": row.source_id, "message_id": row.message_id}
        for row in conn.execute(
            sa.select(consent_history)
            .where(consent_history.c.profile_id == profile_id)
            .order_by(consent_history.c.timestamp, consent_history.c.log_offset)
        )
    ]  # fmt: skip
    return {"categories": current, "history": history}


def profile_preferences(conn: sa.Connection, profile_id: str) -> dict[str, bool] | None:
    """The profile's preferences as ``consent.allows`` takes them (None: never stated)."""
    rows = conn.execute(
        sa.select(profile_consent.c.category, profile_consent.c.allowed).where(
            profile_consent.c.profile_id == profile_id
        )
    ).all()
    return {category: bool(allowed) for category, allowed in rows} if rows else None
