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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from plait.audiences.definitions import SECTIONS, Definitions, from_documents
from plait.audiences.evaluate import (
    Compiled,
    Evaluator,
    Event,
    MatchKey,
    ProfileState,
    match_keys,
    matches,
)
from plait.audiences.language import Selector
from plait.govern.stage import append_to_log
from plait.ids import new_id
from plait.store.bulk import chunks, insert_rows, mark, select_in
from plait.store.db import now_ms
from plait.store.schema import (
    audience_cache,
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


DEFINITIONS = DefinitionsCache()  # the process's one cache (the stage's and the scheduler's)


def read_documents(conn: sa.Connection, workspace_id: str) -> dict[str, str]:
    query = sa.select(workspace_settings.c.key, workspace_settings.c.value).where(
        workspace_settings.c.workspace_id == workspace_id,
        workspace_settings.c.key.in_(SECTIONS),
    )
    return dict(conn.execute(query).all())


# Loading profiles -----------------------------------------------------------------------


def _marks(values: list) -> str:
    """``?, ?, ...``: select_in's fixed parameters, one per value."""
    return ", ".join(["?"] * len(values))


def load_states(
    conn: sa.Connection, workspace_id: str, defs: Definitions, profile_ids: Iterable[str],
    now: int, arrived: dict[str, list[Event]] | None = None, dirty: set[str] | None = None,
    uncached: set[str] = frozenset(),
) -> dict[str, ProfileState]:  # fmt: skip
    """The persons among ``profile_ids`` (not accounts, not merged away), with what the
    definitions read: traits, accounts' traits, and each profile's matches: its cached
    ones plus the events that ``arrived`` since, or else (and for those ``uncached``: a
    merge's survivors) made from its whole history. With ``dirty`` (the profiles whose
    read traits or accounts changed), a profile whose arrived events match nothing is
    left out: nothing it is evaluated on changed."""
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
    if not states:
        return states
    history = _from_cache(conn, workspace_id, defs, states, now, arrived or {}, uncached)
    if dirty is not None:
        states = {pid: st for pid, st in states.items()
                  if pid in dirty or not st.cache.get("unchanged")}  # fmt: skip
    ids = list(states)
    if not ids:
        return states
    compiled = Compiled.of(defs)
    wanted = sorted(compiled.trait_keys)  # only the traits a definition reads
    if wanted:
        for pid, key, value in select_in(
            conn,
            f"SELECT profile_id, key, value FROM traits WHERE key IN ({_marks(wanted)}) "
            "AND profile_id IN ({keys})",
            ids,
            tuple(wanted),
        ):
            states[pid].traits[key] = orjson.loads(value)
    keys = compiled.keys
    if compiled.account_keys:
        wanted = sorted(compiled.account_keys)
        members = select_in(
            conn,
            "SELECT m.profile_id, t.key, t.value, m.account_id FROM account_members m "
            "LEFT JOIN traits t ON t.profile_id = m.account_id "
            f"AND t.key IN ({_marks(wanted)}) WHERE m.profile_id IN ({{keys}})",
            ids,
            tuple(wanted),
        )
        by_account: dict[tuple[str, str], dict[str, Any]] = {}
        for pid, key, value, account in members:
            traits = by_account.setdefault((pid, account), {})
            if key is not None:
                traits[key] = orjson.loads(value)
        for (pid, _), traits in by_account.items():
            states[pid].accounts.append(traits)
    if keys and history:
        # Payloads only for the events a condition or a property reads: most match lists
        # count events by type, name and time alone.
        reading = [selector for selector, where, path in keys if where or path]
        needs, needs_params = _events_filter(reading) if reading else ("1 = 0", ())
        where, params = _events_filter([selector for selector, _, _ in keys])
        rows = select_in(
            conn,
            "SELECT mp.profile_id, mp.timestamp, mp.log_offset, mp.type, mp.event, "
            f"CASE WHEN {needs} THEN coalesce(mp.payload, (SELECT lm.payload FROM "
            "log_messages lm WHERE lm.log_offset = mp.log_offset)) END "
            f"FROM message_profiles mp WHERE {where} AND mp.profile_id IN ({{keys}}) "
            "ORDER BY mp.log_offset",
            history,
            (*needs_params, *params),
        )
        for pid, ts, offset, kind, name, payload in rows:
            states[pid].events.append(Event(ts, offset, kind, name, payload=payload))
    return states


# The cache of matches ------------------------------------------------------------------


def _cache_ids(defs: Definitions) -> dict[str, MatchKey]:
    """A stable id per match list (a hash of its meaning), and the fingerprint of them."""
    if "cache_ids" not in defs.cache:
        ids = {hashlib.sha256(repr(k).encode()).hexdigest()[:12]: k for k in match_keys(defs)}
        defs.cache["cache_ids"] = ids
        defs.cache["cache_fp"] = hashlib.sha256("".join(sorted(ids)).encode()).hexdigest()[:16]
    return defs.cache["cache_ids"]


def _from_cache(
    conn: sa.Connection, workspace_id: str, defs: Definitions,
    states: dict[str, ProfileState], now: int, arrived: dict[str, list[Event]],
    uncached: set[str],
) -> list[str]:  # fmt: skip
    """Fill the states' matches from the cache, adding the events that arrived after what
    it holds; returns the profiles with no usable cache (their history is read)."""
    ids = _cache_ids(defs)
    fp = defs.cache["cache_fp"]
    found = dict(select_in(
        conn,
        "SELECT profile_id, state FROM audience_cache WHERE workspace_id = ? "
        "AND profile_id IN ({keys})",
        list(states),
        (workspace_id,),
    ))  # fmt: skip
    history = []
    for pid, state in states.items():
        cached = orjson.loads(found[pid]) if pid in found and pid not in uncached else None
        if cached is None or cached["fp"] != fp:
            history.append(pid)
            continue
        upto = cached["upto"]
        new = [e for e in arrived.get(pid, ()) if e.offset > upto]
        state.matched = {
            key: [tuple(m) for m in cached["m"].get(kid, ())] + matches(key, new, now)
            for kid, key in ids.items()
        }
        state.cache["upto"] = max([upto, *(e.offset for e in new)])
        state.cache["unchanged"] = not any(
            len(state.matched[key]) > len(cached["m"].get(kid, ())) for kid, key in ids.items()
        )
    return history


def save_cache(
    conn: sa.Connection, workspace_id: str, defs: Definitions, states: dict[str, ProfileState],
    now: int,
) -> None:  # fmt: skip
    """Keep each profile's matches (those a window still reaches) for its next evaluation."""
    ids, reach = _cache_ids(defs), match_keys(defs)
    rows = []
    for pid, state in states.items():
        if state.matched is None:
            continue
        kept = {}
        for kid, key in ids.items():
            low = now - reach[key] if reach[key] is not None else None
            kept[kid] = [m for m in state.matched[key] if low is None or m[0] > low]
        upto = state.cache.get("upto")
        if upto is None:  # made from the history: everything up to its latest event
            upto = max((e.offset for e in state.events), default=0)
        doc = {"fp": defs.cache["cache_fp"], "upto": upto, "m": kept}
        rows.append({"workspace_id": workspace_id, "profile_id": pid,
                     "state": orjson.dumps(doc).decode()})  # fmt: skip
    upsert(conn, audience_cache, rows, ["workspace_id", "profile_id"])


def drop_cache(conn: sa.Connection, workspace_id: str, profile_ids: Iterable[str]) -> None:
    """Forget profiles' cached matches (their history changed: a merge, an unmerge)."""
    for part in chunks(sorted(set(profile_ids))):
        conn.execute(audience_cache.delete().where(
            audience_cache.c.workspace_id == workspace_id,
            audience_cache.c.profile_id.in_(part),
        ))  # fmt: skip


def _events_filter(selectors: list[Selector]) -> tuple[str, tuple]:
    """SQL keeping the events of some selector (by type and name); the parameters are
    ``?`` placeholders, before the profile ids."""
    selectors = {(s.type, s.name) for s in selectors}
    if (None, None) in selectors:
        return "1 = 1", ()
    types = sorted({kind for kind, name in selectors if name is None and kind is not None})
    named = sorted((kind, name) for kind, name in selectors if name is not None)
    parts, params = [], []
    if types:
        parts.append(f"mp.type IN ({_marks(types)})")
        params += types
    for kind, name in named:
        parts.append("mp.event = ?" if kind is None else "(mp.type = ? AND mp.event = ?)")
        params += [name] if kind is None else [kind, name]
    return "(" + " OR ".join(parts) + ")", tuple(params)


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


def evaluate(
    conn: sa.Connection, workspace_id: str, defs: Definitions, profile_ids: Iterable[str],
    now: int, arrived: dict[str, list[Event]] | None = None, dirty: set[str] | None = None,
) -> dict[str, Result]:  # fmt: skip
    """Evaluate profiles in memory (the real-time path) and keep their matches;
    ``arrived``: each profile's events of the batch being processed (they are in its
    history already); ``dirty``: see ``load_states``."""
    states, results = evaluate_states(conn, workspace_id, defs, profile_ids, now, arrived,
                                      dirty)  # fmt: skip
    save_cache(conn, workspace_id, defs, states, now)
    return results


def evaluate_states(
    conn: sa.Connection, workspace_id: str, defs: Definitions, profile_ids: Iterable[str],
    now: int, arrived: dict[str, list[Event]] | None = None, dirty: set[str] | None = None,
    uncached: set[str] = frozenset(),
) -> tuple[dict[str, ProfileState], dict[str, Result]]:  # fmt: skip
    """``evaluate`` reading only: the states (for ``save_cache``) and the results."""
    states = load_states(conn, workspace_id, defs, profile_ids, now, arrived, dirty, uncached)
    if not states:
        return {}, {}
    sql_traits = {k for k, t in defs.traits.items() if t.kind == "sql"}
    stored: dict[str, dict[str, Any]] = {}
    if sql_traits:  # read, not computed, in real time: the last scheduled run's values
        for (key, pid), value in stored_values(conn, workspace_id, list(states)).items():
            if key in sql_traits:
                stored.setdefault(pid, {})[key] = orjson.loads(value)
    evaluator = Evaluator(defs, now)
    results = {}
    for pid, state in states.items():
        computed = evaluator.computed(state)
        given = {**computed, **stored.get(pid, {})}
        results[pid] = Result(
            evaluator.audiences(state, given), computed, evaluator.next_change(state)
        )
    return states, results


def stored_values(conn: sa.Connection, workspace_id: str, ids: list[str]) -> dict:
    """The profiles' computed values as stored: (trait key, profile id) -> JSON text."""
    return {
        (key, pid): value
        for key, pid, value in select_in(
            conn,
            "SELECT trait_key, profile_id, value FROM computed_values "
            "WHERE workspace_id = ? AND profile_id IN ({keys})",
            ids,
            (workspace_id,),
        )
    }


def apply(
    conn: sa.Connection,
    workspace_id: str,
    defs: Definitions,
    results: dict[str, Result],
    now: int,
    reason: str,
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
    values = stored_values(conn, workspace_id, ids)
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
    _delete_rows(conn, audience_members, ("workspace_id", "audience_key", "profile_id"),
                 [(workspace_id, key, pid) for key, pid in exited])  # fmt: skip
    insert_rows(conn, audience_history,
                ("workspace_id", "audience_key", "profile_id", "change", "at", "reason"),
                history)  # fmt: skip
    upsert(conn, computed_values, set_values, ["workspace_id", "trait_key", "profile_id"])
    _delete_rows(conn, computed_values, ("workspace_id", "trait_key", "profile_id"),
                 [(workspace_id, key, pid) for key, pid in unset_values])  # fmt: skip
    _schedule(conn, workspace_id, results)
    changes.entered, changes.exited = len(entered), len(exited)
    changes.traits = len(set_values) + len(unset_values)
    changes.emitted = _emit(conn, workspace_id, defs, emits, now)
    return changes


def _delete_rows(conn: sa.Connection, table: sa.Table, columns: tuple, rows: list) -> None:
    """``DELETE FROM table WHERE columns = row`` for each row (tuples in column order)."""
    if rows:
        p = mark(conn.dialect)
        where = " AND ".join(f"{c} = {p}" for c in columns)
        conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE {where}", rows)


def _schedule(conn: sa.Connection, workspace_id: str, results: dict[str, Result]) -> None:
    due = [
        {"workspace_id": workspace_id, "profile_id": pid, "due_at": r.due}
        for pid, r in results.items()
        if r.due is not None
    ]
    upsert(conn, audience_schedule, due, ["workspace_id", "profile_id"])
    _delete_rows(conn, audience_schedule, ("workspace_id", "profile_id"),
                 [(workspace_id, pid) for pid, r in results.items() if r.due is None])  # fmt: skip


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
    for table in (audience_members, computed_values, audience_schedule, audience_cache):
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


def change_messages(
    conn: sa.Connection, workspace_id: str, defs: Definitions, emits: list, now: int
) -> list[dict[str, Any]]:
    """The messages in Segment's shapes for changes ``(kind, key, profile id, value)``:
    an identify with the trait, "Audience Entered"/"Audience Exited" or "Trait Computed",
    as each definition's ``emit`` says, with ``context.personas`` (the destinations' full
    sync of a connected audience makes its members' entries with it too)."""
    wanted = []
    for kind, key, pid, value in emits:
        mode = defs.audiences[key].emit if kind == "audience" else defs.traits[key].emit
        if mode != "none":
            wanted.append((kind, key, pid, value, mode))
    if not wanted:
        return []
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
    return messages


def _emit(conn: sa.Connection, workspace_id: str, defs: Definitions, emits: list, now: int) -> int:
    messages = change_messages(conn, workspace_id, defs, emits, now)
    if messages:
        append_to_log(conn, workspace_id, audience_source(conn, workspace_id), messages)
    return len(messages)
