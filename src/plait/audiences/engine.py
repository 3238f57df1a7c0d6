"""Evaluating profiles and applying what changed: memberships and their history, computed
values, the time-driven schedule, and the messages that carry each change into the log
(for destinations, in Segment's shapes), all inside the caller's transaction.

An entered or exited audience is an identify whose trait is the audience key set to true
or false, and/or an "Audience Entered" / "Audience Exited" track with ``audience_key``;
a computed trait that changed is an identify setting it, or a "Trait Computed" track.
Every one carries ``context.personas`` and comes from the workspace's "Plait Audiences"
source, so the pipeline gives it to the profile like any identify: an audience's flag and
a computed trait become traits of the profile. Their messageIds are derived from the change,
so a change is appended once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from plait.audiences.definitions import SECTIONS, Definitions, from_documents
from plait.audiences.evaluate import Evaluator, Event, ProfileState, walk
from plait.audiences.language import AccountTrait, Performed
from plait.govern.stage import append_to_log
from plait.ids import new_id
from plait.store.bulk import chunks, insert_rows, mark, select_in
from plait.store.db import now_ms
from plait.store.schema import (
    audience_history,
    audience_members,
    audience_schedule,
    computed_values,
    sources,
    workspace_settings,
)
from plait.store.upsert import upsert

logger = logging.getLogger("plait.audiences")

AUDIENCE_SOURCE = "Plait Audiences"  # where the emitted messages come from


class DefinitionsCache:
    """Compiled definitions per workspace, compiled again only when a document changed."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[dict, Definitions]] = {}
        self._lock = threading.Lock()

    def get(self, conn: sa.Connection, workspace_id: str) -> Definitions:
        docs = read_documents(conn, workspace_id)
        entry = self._entries.get(workspace_id)
        if entry is not None and entry[0] == docs:
            return entry[1]
        defs = from_documents(docs)
        with self._lock:
            self._entries[workspace_id] = (docs, defs)
        return defs


def read_documents(conn: sa.Connection, workspace_id: str) -> dict[str, str]:
    query = sa.select(workspace_settings.c.key, workspace_settings.c.value).where(
        workspace_settings.c.workspace_id == workspace_id,
        workspace_settings.c.key.in_(SECTIONS),
    )
    return dict(conn.execute(query).all())


# Loading profiles -----------------------------------------------------------------------


def _needs(defs: Definitions) -> tuple[list[Performed], bool]:
    """The behaviours whose events evaluation reads, and whether accounts are read."""
    behaviours = [t.behaviour for t in defs.event_traits.values()]
    accounts = False
    for audience in defs.audiences.values():
        for node in walk(audience.tree):
            if isinstance(node, Performed):
                behaviours.append(node)
            accounts = accounts or isinstance(node, AccountTrait)
    return behaviours, accounts


def load_states(
    conn: sa.Connection, workspace_id: str, defs: Definitions, profile_ids: Iterable[str]
) -> dict[str, ProfileState]:
    """The persons among ``profile_ids`` (not accounts, not merged away), with what the
    definitions read: traits, accounts' traits, and the events a behaviour may count."""
    ids = sorted(set(profile_ids))
    if not ids:
        return {}
    states = {
        pid: ProfileState(pid)
        for (pid,) in select_in(
            conn,
            "SELECT id FROM profiles WHERE kind = 'user' AND merged_into IS NULL "
            "AND id IN ({keys})",
            ids,
        )
    }
    ids = list(states)
    if not ids:
        return states
    for pid, key, value in select_in(
        conn, "SELECT profile_id, key, value FROM traits WHERE profile_id IN ({keys})", ids
    ):
        states[pid].traits[key] = orjson.loads(value)
    behaviours, accounts = _needs(defs)
    if accounts:
        members = select_in(
            conn,
            "SELECT m.profile_id, t.key, t.value, m.account_id FROM account_members m "
            "LEFT JOIN traits t ON t.profile_id = m.account_id WHERE m.profile_id IN ({keys})",
            ids,
        )
        by_account: dict[tuple[str, str], dict[str, Any]] = {}
        for pid, key, value, account in members:
            traits = by_account.setdefault((pid, account), {})
            if key is not None:
                traits[key] = orjson.loads(value)
        for (pid, _), traits in by_account.items():
            states[pid].accounts.append(traits)
    if behaviours:
        wanted = {(b.selector.type, b.selector.name) for b in behaviours}
        any_type = {name for kind, name in wanted if kind is None}
        rows = select_in(
            conn,
            "SELECT mp.profile_id, mp.timestamp, mp.log_offset, mp.type, mp.event, "
            "coalesce(mp.payload, lm.payload) FROM message_profiles mp "
            "JOIN log_messages lm ON lm.log_offset = mp.log_offset "
            "WHERE mp.profile_id IN ({keys}) ORDER BY mp.profile_id, mp.log_offset",
            ids,
        )
        for pid, ts, offset, kind, name, payload in rows:
            if (
                None in any_type
                or name in any_type
                or (kind, None) in wanted
                or (kind, name) in wanted
            ):
                states[pid].events.append(Event(ts, offset, kind, name, orjson.loads(payload)))
    return states


# Applying changes -----------------------------------------------------------------------


@dataclass
class Result:
    """One profile's evaluation: audience key -> inside, trait key -> value (None: absent),
    and when time alone may change it next."""

    audiences: dict[str, bool]
    traits: dict[str, Any]
    due: int | None = None


@dataclass
class Changes:
    entered: int = 0
    exited: int = 0
    traits: int = 0
    emitted: int = 0
    by_audience: dict[str, list[int]] = field(default_factory=dict)  # key -> [in, out]


def evaluate(
    conn: sa.Connection, workspace_id: str, defs: Definitions, profile_ids: Iterable[str],
    now: int,
) -> dict[str, Result]:  # fmt: skip
    """Evaluate profiles in memory (the real-time path)."""
    states = load_states(conn, workspace_id, defs, profile_ids)
    if not states:
        return {}
    sql_traits = [k for k, t in defs.traits.items() if t.kind == "sql"]
    stored = _stored_values(conn, workspace_id, list(states), sql_traits) if sql_traits else {}
    evaluator = Evaluator(defs, now)
    results = {}
    for pid, state in states.items():
        computed = evaluator.computed(state)
        given = {**computed, **stored.get(pid, {})}
        results[pid] = Result(
            evaluator.audiences(state, given), computed, evaluator.next_change(state)
        )
    return results


def _stored_values(
    conn: sa.Connection, workspace_id: str, ids: list[str], keys: list[str]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, pid, value in select_in(
        conn,
        "SELECT trait_key, profile_id, value FROM computed_values "
        "WHERE workspace_id = ? AND profile_id IN ({keys})",
        ids,
        (workspace_id,),
    ):
        if key in keys:
            out.setdefault(pid, {})[key] = orjson.loads(value)
    return out


def apply(
    conn: sa.Connection,
    workspace_id: str,
    defs: Definitions,
    results: dict[str, Result],
    now: int,
    reason: str,
    schedule: bool = True,
) -> Changes:
    """Store what changed for the profiles in ``results`` and emit it. A trait key absent
    from a result's ``traits`` is left as it is (SQL traits in a real-time evaluation)."""
    changes = Changes()
    if not results:
        return changes
    ids = list(results)
    members = {
        (key, pid)
        for key, pid in select_in(
            conn,
            "SELECT audience_key, profile_id FROM audience_members "
            "WHERE workspace_id = ? AND profile_id IN ({keys})",
            ids,
            (workspace_id,),
        )
    }
    values = {
        (key, pid): value
        for key, pid, value in select_in(
            conn,
            "SELECT trait_key, profile_id, value FROM computed_values "
            "WHERE workspace_id = ? AND profile_id IN ({keys})",
            ids,
            (workspace_id,),
        )
    }
    entered, exited, history, emits = [], [], [], []
    set_values, unset_values = [], []
    for pid, result in results.items():
        for key, inside in result.audiences.items():
            was = (key, pid) in members
            if inside == was:
                continue
            (entered if inside else exited).append((key, pid))
            history.append((workspace_id, key, pid, "entered" if inside else "exited", now,
                            reason))  # fmt: skip
            counts = changes.by_audience.setdefault(key, [0, 0])
            counts[0 if inside else 1] += 1
            emits.append(("audience", key, pid, inside))
        for key, value in result.traits.items():
            old = values.get((key, pid))
            new = None if value is None else orjson.dumps(value).decode()
            if new == old:
                continue
            if new is None:
                unset_values.append((key, pid))
            else:
                set_values.append({"workspace_id": workspace_id, "trait_key": key,
                                   "profile_id": pid, "value": new, "updated_at": now})  # fmt: skip
            emits.append(("trait", key, pid, value))
    if entered:
        insert_rows(conn, audience_members,
                    ("workspace_id", "audience_key", "profile_id", "entered_at"),
                    [(workspace_id, key, pid, now) for key, pid in entered])  # fmt: skip
    _delete_pairs(conn, audience_members, "audience_key", workspace_id, exited)
    insert_rows(conn, audience_history,
                ("workspace_id", "audience_key", "profile_id", "change", "at", "reason"),
                history)  # fmt: skip
    upsert(conn, computed_values, set_values, ["workspace_id", "trait_key", "profile_id"])
    _delete_pairs(conn, computed_values, "trait_key", workspace_id, unset_values)
    if schedule:
        _schedule(conn, workspace_id, results)
    changes.entered, changes.exited = len(entered), len(exited)
    changes.traits = len(set_values) + len(unset_values)
    changes.emitted = _emit(conn, workspace_id, defs, emits, now)
    return changes


def _delete_pairs(
    conn: sa.Connection, table: sa.Table, key_column: str, workspace_id: str, pairs: list
) -> None:
    if pairs:
        p = mark(conn.dialect)
        conn.exec_driver_sql(
            f"DELETE FROM {table.name} WHERE workspace_id = {p} AND {key_column} = {p} "
            f"AND profile_id = {p}",
            [(workspace_id, key, pid) for key, pid in pairs],
        )


def _schedule(conn: sa.Connection, workspace_id: str, results: dict[str, Result]) -> None:
    due = [
        {"workspace_id": workspace_id, "profile_id": pid, "due_at": r.due}
        for pid, r in results.items()
        if r.due is not None
    ]
    upsert(conn, audience_schedule, due, ["workspace_id", "profile_id"])
    none = [pid for pid, r in results.items() if r.due is None]
    if none:
        p = mark(conn.dialect)
        conn.exec_driver_sql(
            f"DELETE FROM audience_schedule WHERE workspace_id = {p} AND profile_id = {p}",
            [(workspace_id, pid) for pid in none],
        )


def forget(conn: sa.Connection, workspace_id: str, profile_ids: list[str], now: int,
           reason: str) -> None:  # fmt: skip
    """Profiles that are gone (merged away, deleted): their state goes, and each audience
    they were in records an exit (the survivor is evaluated on its own)."""
    if not profile_ids:
        return
    rows = select_in(
        conn,
        "SELECT audience_key, profile_id FROM audience_members "
        "WHERE workspace_id = ? AND profile_id IN ({keys})",
        profile_ids,
        (workspace_id,),
    )
    insert_rows(conn, audience_history,
                ("workspace_id", "audience_key", "profile_id", "change", "at", "reason"),
                [(workspace_id, key, pid, "exited", now, reason) for key, pid in rows])  # fmt: skip
    for table in (audience_members, computed_values, audience_schedule):
        for part in chunks(profile_ids):
            conn.execute(table.delete().where(table.c.workspace_id == workspace_id,
                                              table.c.profile_id.in_(part)))  # fmt: skip


# Emitting -------------------------------------------------------------------------------


def audience_source(conn: sa.Connection, workspace_id: str) -> str:
    """The id of the workspace's source of emitted messages, made on first use (it has
    no write key: nothing outside Plait sends from it)."""
    found = conn.execute(
        sa.select(sources.c.id).where(
            sources.c.workspace_id == workspace_id, sources.c.name == AUDIENCE_SOURCE
        )
    ).scalar()
    if found:
        return found
    source_id, now = new_id("src"), now_ms()
    conn.execute(sources.insert().values(
        id=source_id, workspace_id=workspace_id, name=AUDIENCE_SOURCE, type="server",
        enabled=True, created_at=now, updated_at=now,
    ))  # fmt: skip
    return source_id


def _identities(conn: sa.Connection, workspace_id: str, ids: list[str]) -> dict[str, dict]:
    """Per profile: its userId, else its most recently seen anonymousId."""
    best: dict[str, tuple] = {}
    for pid, kind, value, last_seen in select_in(
        conn,
        "SELECT profile_id, type, value, last_seen FROM identifiers WHERE workspace_id = ? "
        "AND type IN ('user_id', 'anonymous_id') AND profile_id IN ({keys})",
        ids,
        (workspace_id,),
    ):
        rank = (kind == "user_id", last_seen, value)
        if pid not in best or rank > best[pid][0]:
            best[pid] = (rank, kind, value)
    return {
        pid: {"userId" if kind == "user_id" else "anonymousId": value}
        for pid, (_, kind, value) in best.items()
    }


def _message_id(*parts: Any) -> str:
    return "aud-" + hashlib.sha256(orjson.dumps(parts)).hexdigest()[:32]


def _emit(conn: sa.Connection, workspace_id: str, defs: Definitions, emits: list, now: int) -> int:
    wanted = []
    for kind, key, pid, value in emits:
        mode = defs.audiences[key].emit if kind == "audience" else defs.traits[key].emit
        if mode != "none":
            wanted.append((kind, key, pid, value, mode))
    if not wanted:
        return 0
    who = _identities(conn, workspace_id, sorted({pid for _, _, pid, _, _ in wanted}))
    stamp = datetime.fromtimestamp(now / 1000, UTC).isoformat(timespec="milliseconds")
    stamp = stamp.replace("+00:00", "Z")
    messages = []
    for kind, key, pid, value, mode in wanted:
        ids = who.get(pid)
        if ids is None:  # no user or anonymous id left (an unmerge removed them)
            logger.warning("audiences: %s %s changed for %s, which has no id to send", kind,
                           key, pid)  # fmt: skip
            continue
        personas = {"computation_class": kind, "computation_key": key,
                    "computation_id": f"{'aud' if kind == 'audience' else 'trt'}_{key}",
                    "space_id": workspace_id, "profile_id": pid}  # fmt: skip
        base = {**ids, "timestamp": stamp, "context": {"personas": personas}}
        if mode in ("identify", "both"):
            mid = _message_id(kind, key, pid, value, now, "i")
            messages.append({**base, "type": "identify", "traits": {key: value}, "messageId": mid})
        if mode in ("track", "both"):
            if kind == "audience":
                event = "Audience Entered" if value else "Audience Exited"
                props = {"audience_key": key, key: value}
            else:
                event, props = "Trait Computed", {"trait_key": key, "value": value}
            mid = _message_id(kind, key, pid, value, now, "t")
            messages.append(
                {**base, "type": "track", "event": event, "properties": props, "messageId": mid}
            )
    if messages:
        append_to_log(conn, workspace_id, audience_source(conn, workspace_id), messages)
    return len(messages)
