"""The Profile API's reads: profiles by identifier, traits, external ids, events, links.

Pure SQLAlchemy Core over the state store, the same statements on SQLite and PostgreSQL.
Lists are read with keyset pagination: each function takes the last key of the previous
page (``after``) and returns up to ``limit + 1`` rows, the extra row telling the caller
that there is more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from plait.identity import explain
from plait.identity.explain import ProfileNotFound
from plait.identity.identifiers import normalize
from plait.identity.rules import Rules
from plait.identity.stage import ACCOUNT_TYPE
from plait.store.schema import (
    account_members,
    identifiers,
    log_messages,
    message_profiles,
    profiles,
    traits,
)

SEGMENT_ID = "segment_id"  # the profile's own id, as Segment names it in lookups
ACCOUNT_SCAN = 500  # rows read per round when filtering members' events for an account


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    kind: str  # user | account
    created_at: int  # event time, ms
    first_offset: int


@dataclass(frozen=True, slots=True)
class EventWindow:
    """Which events, in which order, from where."""

    start_ms: int | None = None  # inclusive
    end_ms: int | None = None  # exclusive
    descending: bool = True
    include: tuple[str, ...] = ()  # event names
    exclude: tuple[str, ...] = ()
    after: tuple[int, int] | None = None  # (timestamp ms, log offset) of the last row seen


# Profiles -----------------------------------------------------------------------------


def find_profile(
    conn: sa.Connection, workspace_id: str, kind: str, id_type: str, value: str, rules: Rules
) -> Profile | None:
    """The live profile of kind ``kind`` an identifier names; a merged-away
    ``segment_id`` resolves to the profile it was merged into."""
    try:
        profile_id = explain.find_profile(conn, workspace_id, f"{id_type}:{value}", rules)
    except ProfileNotFound:
        return None
    row = conn.execute(
        sa.select(profiles.c.id, profiles.c.kind, profiles.c.created_at, profiles.c.first_offset)
        .where(profiles.c.workspace_id == workspace_id, profiles.c.id == profile_id)
    ).first()  # fmt: skip
    return Profile(*row) if row is not None and row.kind == kind else None


def search_profiles(
    conn: sa.Connection,
    workspace_id: str,
    kind: str,
    rules: Rules,
    *,
    id_type: str | None = None,
    value: str | None = None,
    after: str | None = None,
    limit: int = 10,
) -> list[Profile]:
    """Live profiles of ``kind`` ordered by id: those owning ``id_type:value``, or with
    ``value`` alone those owning that exact value under any identifier type, or with
    neither all of them."""
    query = sa.select(
        profiles.c.id, profiles.c.kind, profiles.c.created_at, profiles.c.first_offset
    ).where(
        profiles.c.workspace_id == workspace_id,
        profiles.c.kind == kind,
        profiles.c.merged_into.is_(None),
    )
    if value is not None:
        owners = _owners_of(conn, workspace_id, kind, rules, id_type, value)
        query = query.where(profiles.c.id.in_(owners))
    if after is not None:
        query = query.where(profiles.c.id > after)
    rows = conn.execute(query.order_by(profiles.c.id).limit(limit + 1))
    return [Profile(*row) for row in rows]


def _owners_of(
    conn: sa.Connection,
    workspace_id: str,
    kind: str,
    rules: Rules,
    id_type: str | None,
    value: str,
) -> list[str]:
    if id_type == SEGMENT_ID:
        profile = find_profile(conn, workspace_id, kind, id_type, value, rules)
        return [profile.id] if profile else []
    types = [id_type] if id_type else [*rules.types, ACCOUNT_TYPE]
    forms = {t: normalize(t, value, rules) for t in types}
    wanted = {form for form in forms.values() if form is not None}
    if not wanted:
        return []
    query = sa.select(identifiers.c.type, identifiers.c.value, identifiers.c.profile_id).where(
        identifiers.c.workspace_id == workspace_id, identifiers.c.value.in_(sorted(wanted))
    )
    if id_type:
        query = query.where(identifiers.c.type == id_type)
    # Types no longer in the rules (or never: group_id) compare as the value stripped.
    stripped = value.strip()
    return sorted(
        {pid for type_, found, pid in conn.execute(query) if forms.get(type_, stripped) == found}
    )


# Traits -------------------------------------------------------------------------------


def trait_rows(
    conn: sa.Connection,
    profile_id: str,
    keys: Sequence[str] = (),
    from_key: str | None = None,
    limit: int = 10,
) -> list[sa.Row]:
    """(key, value as JSON, timestamp, source_id, message_id) ordered by key, from
    ``from_key`` on (the key a previous page named as its ``next``, Segment's trait cursor)."""
    query = sa.select(
        traits.c.key, traits.c.value, traits.c.timestamp, traits.c.source_id, traits.c.message_id
    ).where(traits.c.profile_id == profile_id)
    if keys:
        query = query.where(traits.c.key.in_(list(keys)))
    if from_key is not None:
        query = query.where(traits.c.key >= from_key)
    return list(conn.execute(query.order_by(traits.c.key).limit(limit + 1)))


# External ids -------------------------------------------------------------------------


# Oldest first; also the keyset of identifier_rows' pages.
_IDENTIFIER_ORDER = (identifiers.c.first_seen, identifiers.c.type, identifiers.c.value)


def _identifier_query(workspace_id: str):
    """Identifiers with the source and message that first carried them."""
    return (
        sa.select(
            identifiers.c.profile_id, identifiers.c.type, identifiers.c.value,
            identifiers.c.first_seen, identifiers.c.message_id, log_messages.c.source_id,
        )
        .select_from(identifiers)
        .outerjoin(log_messages, log_messages.c.log_offset == identifiers.c.log_offset)
        .where(identifiers.c.workspace_id == workspace_id)
    )  # fmt: skip


def identifier_rows(
    conn: sa.Connection,
    workspace_id: str,
    profile_id: str,
    types: Sequence[str] = (),
    after: tuple[int, str, str] | None = None,
    limit: int = 10,
) -> list[sa.Row]:
    """A profile's identifiers, oldest first; ``after`` is (first_seen, type, value)."""
    query = _identifier_query(workspace_id).where(identifiers.c.profile_id == profile_id)
    if types:
        query = query.where(identifiers.c.type.in_(list(types)))
    if after is not None:
        query = query.where(sa.tuple_(*_IDENTIFIER_ORDER) > tuple(after))
    return list(conn.execute(query.order_by(*_IDENTIFIER_ORDER).limit(limit + 1)))


def identifiers_of(
    conn: sa.Connection, workspace_id: str, profile_ids: Sequence[str]
) -> dict[str, list[sa.Row]]:
    """Every identifier of each profile, oldest first."""
    found: dict[str, list[sa.Row]] = {pid: [] for pid in profile_ids}
    if not profile_ids:
        return found
    query = _identifier_query(workspace_id).where(identifiers.c.profile_id.in_(list(profile_ids)))
    for row in conn.execute(query.order_by(*_IDENTIFIER_ORDER)):
        found[row.profile_id].append(row)
    return found


# Links --------------------------------------------------------------------------------


def linked_ids(
    conn: sa.Connection,
    profile: Profile,
    after: tuple[int, str] | None = None,
    limit: int = 10,
) -> list[tuple[int, str]]:
    """(since, id): a user's accounts, or an account's member users, in the order they
    were linked (the first group call); ``after`` is the last pair seen."""
    members = account_members.c
    mine, theirs = (
        (members.account_id, members.profile_id)
        if profile.kind == "account"
        else (members.profile_id, members.account_id)
    )
    query = sa.select(members.timestamp, theirs).where(mine == profile.id)
    if after is not None:
        query = query.where(sa.tuple_(members.timestamp, theirs) > tuple(after))
    rows = conn.execute(query.order_by(members.timestamp, theirs).limit(limit + 1))
    return [(ts, pid) for ts, pid in rows]


# Events -------------------------------------------------------------------------------


def _events_query(workspace_id: str, window: EventWindow):
    mp = message_profiles.c
    query = (
        sa.select(
            mp.log_offset, mp.timestamp, mp.type, mp.event, mp.profile_id,
            log_messages.c.source_id, log_messages.c.message_id,
            # the event as governance left it (transformed, properties omitted)
            sa.func.coalesce(mp.payload, log_messages.c.payload).label("payload"),
        )
        .join(log_messages, log_messages.c.log_offset == mp.log_offset)
        .where(mp.workspace_id == workspace_id)
    )  # fmt: skip
    if window.start_ms is not None:
        query = query.where(mp.timestamp >= window.start_ms)
    if window.end_ms is not None:
        query = query.where(mp.timestamp < window.end_ms)
    if window.include:
        query = query.where(mp.event.in_(window.include))
    if window.exclude:
        query = query.where(sa.or_(mp.event.is_(None), mp.event.not_in(window.exclude)))
    return query


def _page(query, window: EventWindow, after: tuple[int, int] | None, limit: int):
    mp = message_profiles.c
    key = sa.tuple_(mp.timestamp, mp.log_offset)
    if after is not None:
        query = query.where(key < tuple(after) if window.descending else key > tuple(after))
    order = (mp.timestamp.desc(), mp.log_offset.desc()) if window.descending else (
        mp.timestamp, mp.log_offset)  # fmt: skip
    return query.order_by(*order).limit(limit)


def event_rows(
    conn: sa.Connection, workspace_id: str, profile: Profile, window: EventWindow, limit: int
) -> list[sa.Row]:
    """A user's messages in event-time order (ties by log offset), or an account's."""
    if profile.kind == "account":
        return _account_event_rows(conn, workspace_id, profile, window, limit)
    query = _events_query(workspace_id, window).where(message_profiles.c.profile_id == profile.id)
    return list(conn.execute(_page(query, window, window.after, limit + 1)))


def _account_event_rows(
    conn: sa.Connection, workspace_id: str, account: Profile, window: EventWindow, limit: int
) -> list[sa.Row]:
    """An account's events: its members' messages that name it, group calls by
    ``groupId`` and the others by ``context.groupId`` (how Segment attributes events to
    an account). The text test keeps the scan to messages with a group id at all."""
    group_ids = set(
        conn.scalars(
            sa.select(identifiers.c.value).where(
                identifiers.c.profile_id == account.id, identifiers.c.type == ACCOUNT_TYPE
            )
        )
    )
    members = sa.select(account_members.c.profile_id).where(
        account_members.c.account_id == account.id
    )
    query = _events_query(workspace_id, window).where(
        message_profiles.c.profile_id.in_(members),
        log_messages.c.payload.contains('"groupId"'),
    )
    found: list[sa.Row] = []
    after = window.after
    while len(found) <= limit:
        rows = list(conn.execute(_page(query, window, after, ACCOUNT_SCAN)))
        found += [row for row in rows if _group_id(row.payload) in group_ids]
        if len(rows) < ACCOUNT_SCAN:
            break
        after = (rows[-1].timestamp, rows[-1].log_offset)
    return found[: limit + 1]


def _group_id(payload: str) -> str | None:
    msg: dict[str, Any] = orjson.loads(payload)
    if msg.get("type") == "group":
        value = msg.get("groupId")
    else:
        context = msg.get("context")
        value = context.get("groupId") if isinstance(context, dict) else None
    return str(value).strip() if isinstance(value, str | int) else None


def log_row(conn: sa.Connection, log_offset: int) -> sa.Row | None:
    """(message_id, source_id) of a log record."""
    return conn.execute(
        sa.select(log_messages.c.message_id, log_messages.c.source_id).where(
            log_messages.c.log_offset == log_offset
        )
    ).first()
