"""The pipeline's profile stage: timeline, traits by event time, accounts and members.

A trait's value is the one set by the message with the latest corrected timestamp (the
later log offset on a tie), whatever order messages arrive in; every value a message sets
is kept in the trait's history with its provenance. Identify calls set a person's traits
(``context.traits`` first, then ``traits`` over it: RudderStack's SDKs send them in
context); group calls set the account's traits and make the person a member.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from plait.identity.resolver import Graph, Merge
from plait.log.processing import Batch, Item
from plait.store.bulk import chunks, insert_rows, select_in, update_many
from plait.store.schema import account_members, message_profiles, trait_history, traits
from plait.store.upsert import upsert

# key -> (value as JSON, timestamp ms, log offset, source id, message id)
TraitState = dict[str, tuple[str, int, int, str, str]]
HISTORY_COLUMNS = (
    "profile_id", "key", "value", "timestamp", "log_offset", "source_id", "message_id",
)  # fmt: skip


def update_profiles(batch: Batch) -> None:
    conn = batch.conn
    graph: Graph = batch.context["graph"]
    merges: list[Merge] = batch.context["merges"]
    insert_rows(
        conn, message_profiles,
        ("log_offset", "workspace_id", "profile_id", "timestamp", "type", "event", "payload"),
        [(item.record.offset, batch.workspace_id, item.profile_id, item.timestamp_ms,
          item.record.type, event_name(item),
          item.governed_payload) for item in batch.items],
    )  # fmt: skip
    _move_rows(conn, [(graph.resolve_id(m.survivor), m.merged) for m in merges])
    _update_traits(batch, graph, merges)
    members = [
        {"account_id": item.account_id, "profile_id": item.profile_id,
         "timestamp": item.timestamp_ms, "log_offset": item.record.offset}
        for item in batch.items
        if item.account_id and item.profile_id
    ]  # fmt: skip
    _add_members(conn, members)


def event_name(item: Item) -> str | None:
    """What message_profiles.event holds: a track's event, a page's or screen's name."""
    msg = item.message
    name = msg.get("event") if item.record.type == "track" else msg.get("name")
    return name[:200] if isinstance(name, str) else None


def _move_rows(conn: sa.Connection, moves: list[tuple[str, str]]) -> None:
    """Merged-away profiles' events, history and memberships become their survivors'
    (``moves``: (survivor, merged) pairs)."""
    for table in (message_profiles, trait_history):
        update_many(conn, table, "profile_id", "profile_id", moves)
    survivor_of = {merged: survivor for survivor, merged in moves}
    for part in chunks(list(survivor_of)):
        rows = conn.execute(
            sa.select(account_members).where(account_members.c.profile_id.in_(part))
        ).mappings()
        moved = [{**row, "profile_id": survivor_of[row["profile_id"]]} for row in rows]
        if moved:
            conn.execute(account_members.delete().where(account_members.c.profile_id.in_(part)))
            _add_members(conn, moved)


def _add_members(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """The earliest group call (in log order) makes the membership; later ones change
    nothing. A merge brings the merged profile's memberships to its survivor, where the
    earlier of two wins, as a rebuild (which sees the final profiles) decides it."""
    earliest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["account_id"], row["profile_id"])
        if key not in earliest or row["log_offset"] < earliest[key]["log_offset"]:
            earliest[key] = row
    upsert(
        conn, account_members, list(earliest.values()), ["account_id", "profile_id"],
        update_if=lambda offered: offered.log_offset < account_members.c.log_offset,
    )  # fmt: skip


def _update_traits(batch: Batch, graph: Graph, merges: list[Merge]) -> None:
    conn = batch.conn
    setters = [
        (item.profile_id, identify_traits(item.message), item)
        for item in batch.items
        if item.record.type == "identify" and item.profile_id
    ] + [
        (item.account_id, item.message.get("traits"), item)
        for item in batch.items
        if item.account_id
    ]
    setters = [
        (pid, values, item) for pid, values, item in setters if isinstance(values, dict) and values
    ]
    merged_ids = [m.merged for m in merges]
    touched = {pid for pid, _, _ in setters} | {graph.resolve_id(m.survivor) for m in merges}
    if not touched:
        return
    state = _load_traits(conn, list(touched | set(merged_ids)))
    changed: dict[str, set[str]] = {}
    for merged in merged_ids:  # fold each merged-away profile's traits into its survivor
        survivor = graph.resolve_id(merged)
        for key, value in state.pop(merged, {}).items():
            if _set(state.setdefault(survivor, {}), key, value):
                changed.setdefault(survivor, set()).add(key)
    history = []
    for pid, values, item in setters:
        record = item.record
        current = state.setdefault(pid, {})
        for key, value in values.items():
            encoded = orjson.dumps(value).decode()
            entry = (encoded, item.timestamp_ms, record.offset, record.source_id, record.message_id)
            history.append((pid, key[:200], *entry))
            if _set(current, key[:200], entry):
                changed.setdefault(pid, set()).add(key[:200])
    if merged_ids:
        for part in chunks(merged_ids):
            conn.execute(traits.delete().where(traits.c.profile_id.in_(part)))
    rows = [
        {"profile_id": pid, "key": key, "value": state[pid][key][0],
         "timestamp": state[pid][key][1], "log_offset": state[pid][key][2],
         "source_id": state[pid][key][3], "message_id": state[pid][key][4]}
        for pid, keys in changed.items()
        for key in keys
    ]  # fmt: skip
    upsert(conn, traits, rows, ["profile_id", "key"])
    insert_rows(conn, trait_history, HISTORY_COLUMNS, history)


def identify_traits(msg: dict[str, Any]) -> dict[str, Any] | None:
    """An identify's traits: ``context.traits``, then ``traits`` over them."""
    context = msg.get("context")
    in_context = context.get("traits") if isinstance(context, dict) else None
    own = msg.get("traits")
    merged = {**(in_context if isinstance(in_context, dict) else {})}
    if isinstance(own, dict):
        merged.update(own)
    return merged


def _set(current: TraitState, key: str, entry: tuple) -> bool:
    """Keep the newer of two values by (event time, log offset); True if ``entry`` won."""
    existing = current.get(key)
    if existing is not None and (existing[1], existing[2]) >= (entry[1], entry[2]):
        return False
    current[key] = entry
    return True


def _load_traits(conn: sa.Connection, profile_ids: list[str]) -> dict[str, TraitState]:
    state: dict[str, TraitState] = {}
    for pid, key, *entry in select_in(
        conn,
        "SELECT profile_id, key, value, timestamp, log_offset, source_id, message_id "
        "FROM traits WHERE profile_id IN ({keys})",
        profile_ids,
    ):
        state.setdefault(pid, {})[key] = tuple(entry)
    return state
