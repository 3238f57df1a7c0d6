"""Data subject access requests: everything Plait holds about a person, as one JSON document.

The person is found as a deletion finds them (plait.govern.erase): the profile an identifier
resolves to, the profiles merged into it, all their identifiers, and the log messages that
are theirs (processed, left unlinked by governance, or not processed yet). The document
holds every profile, identifier (first and last seen), link, trait and its history, account
membership, consent and its history, lineage entry, tracking-plan violation, and every
message as it was received (and as governance left it, where that differs).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from plait.govern import audit
from plait.govern.erase import Person, find_person
from plait.govern.identity_hash import identity_hash
from plait.govern.privacy import identifier_type, lookup_values
from plait.identity import graph_store
from plait.identity.explain import ProfileNotFound, find_profile
from plait.identity.identifiers import Identifier
from plait.identity.rules import Rules
from plait.identity.stage import ACCOUNT_TYPE
from plait.spec.timestamps import format_ms
from plait.store import Store
from plait.store.bulk import chunks, select_in
from plait.store.schema import (
    account_members,
    consent_history,
    identifiers,
    identity_edges,
    lineage,
    profile_consent,
    profiles,
    trait_history,
    traits,
    violations,
)
from plait.store.workspaces import Invalid

FORMAT = "plait.dsar/1"


def parse_identifier(
    conn: sa.Connection, workspace_id: str, ref: Any, rules: Rules
) -> list[Identifier]:
    """``type:value`` (any person identifier type; the value as sent, normalized here) or a
    profile id (``prf_...``, or ``segment_id:prf_...``) as ``plait profiles explain`` takes
    them. Raises Invalid("identifier", ...)."""
    if not isinstance(ref, str) or not ref.strip():
        raise Invalid("identifier", "write an identifier as type:value, e.g. email:jo@x.com")
    type_name, sep, value = ref.strip().partition(":")
    if not sep or type_name in ("segment_id", "profile_id"):
        try:
            profile_id = find_profile(conn, workspace_id, ref.strip(), rules)
        except ProfileNotFound:
            raise Invalid("identifier", "no such profile; or write type:value") from None
        owned = conn.execute(
            sa.select(identifiers.c.type, identifiers.c.value).where(
                identifiers.c.profile_id == profile_id
            )
        ).all()
        if not owned or any(t == ACCOUNT_TYPE for t, _ in owned):
            raise Invalid("identifier", "that profile is an account, not a person")
        return [(t, v) for t, v in owned]
    if type_name == ACCOUNT_TYPE:
        raise Invalid("identifier", "group_id names an account, not a person")
    try:
        type_name = identifier_type(type_name.upper(), rules)
    except Invalid as exc:
        raise Invalid("identifier", exc.message.replace("must be", "the type must be")) from None
    values = lookup_values(workspace_id, type_name, value, rules)
    if not values:
        raise Invalid("identifier", f"that value can never be a {type_name}")
    return [(type_name, v) for v in values]


def export_person(conn: sa.Connection, workspace_id: str, identifier: str) -> dict[str, Any]:
    """Everything held about the person ``identifier`` names (see the module's docstring).
    A person Plait holds nothing about gets a document with ``found: false``."""
    rules = graph_store.load_rules(conn, workspace_id)
    wanted = parse_identifier(conn, workspace_id, identifier, rules)
    person = find_person(conn, workspace_id, [wanted], rules)
    ids = sorted(person.profile_ids)
    events = _events(conn, person)
    return {
        "format": FORMAT,
        "workspace_id": workspace_id,
        "generated_at": _iso(int(datetime.now(UTC).timestamp() * 1000)),
        "found": bool(ids or events),
        "profiles": _profiles(conn, ids),
        "identifiers": _identifiers(conn, workspace_id, ids, person),
        "links": _rows(conn, identity_edges, "profile_id", ids, _edge),
        "traits": _rows(conn, traits, "profile_id", ids, _trait),
        "trait_history": _rows(conn, trait_history, "profile_id", ids, _trait, "id"),
        "accounts": _accounts(conn, workspace_id, ids),
        "consent": _rows(conn, profile_consent, "profile_id", ids, _consent),
        "consent_history": _rows(conn, consent_history, "profile_id", ids, _consent, "id"),
        "lineage": _lineage(conn, workspace_id, ids),
        "violations": _rows(
            conn, violations, "log_offset", sorted(person.offsets), _violation, "id"
        ),  # fmt: skip
        "events": events,
    }


def summary(document: dict[str, Any]) -> dict[str, int]:
    """Counts of a document's parts (what an audit record may say about it)."""
    return {key: len(value) for key, value in document.items() if isinstance(value, list)}


def _iso(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def _rows(conn, table: sa.Table, column: str, keys: list, shape, order: str | None = None):
    found = []
    for part in chunks(keys):
        found += conn.execute(sa.select(table).where(table.c[column].in_(part))).mappings().all()
    found.sort(key=lambda r: (r[order],) if order else tuple(str(v) for v in r.values()))
    return [shape(row) for row in found]


def _profiles(conn: sa.Connection, ids: list[str]) -> list[dict[str, Any]]:
    def shape(row) -> dict[str, Any]:
        return {"id": row["id"], "kind": row["kind"], "created_at": _iso(row["created_at"]),
                "merged_into": row["merged_into"]}  # fmt: skip

    return _rows(conn, profiles, "id", ids, shape)


def _identifiers(
    conn: sa.Connection, workspace_id: str, ids: list[str], person: Person
) -> list[dict[str, Any]]:
    shaped = _rows(conn, identifiers, "profile_id", ids, lambda row: {
        "type": row["type"], "value": row["value"], "profile_id": row["profile_id"],
        "first_seen": _iso(row["first_seen"]), "last_seen": _iso(row["last_seen"]),
        "first_message_id": row["message_id"],
    })  # fmt: skip
    known = {(i["type"], i["value"]) for i in shaped}
    # Identifiers only in messages not processed yet, or unlinked ones: no profile holds them.
    shaped += [
        {"type": t, "value": v, "profile_id": None, "first_seen": None, "last_seen": None,
         "first_message_id": None}
        for t, v in sorted(person.identifiers)
        if (t, v) not in known
    ]  # fmt: skip
    return shaped


def _edge(row) -> dict[str, Any]:
    return {
        "from": {"type": row["a_type"], "value": row["a_value"]},
        "to": {"type": row["b_type"], "value": row["b_value"]},
        "profile_id": row["profile_id"],
        "message_id": row["message_id"],
        "timestamp": _iso(row["timestamp"]),
    }


def _trait(row) -> dict[str, Any]:
    return {
        "profile_id": row["profile_id"],
        "key": row["key"],
        "value": orjson.loads(row["value"]),
        "timestamp": _iso(row["timestamp"]),
        "source_id": row["source_id"],
        "message_id": row["message_id"],
    }


def _consent(row) -> dict[str, Any]:
    shaped = {"profile_id": row["profile_id"], "timestamp": _iso(row["timestamp"])}
    if "category" in row:
        return {**shaped, "category": row["category"], "allowed": bool(row["allowed"])}
    return {**shaped, "preferences": orjson.loads(row["preferences"]),
            "source_id": row["source_id"], "message_id": row["message_id"]}  # fmt: skip


def _violation(row) -> dict[str, Any]:
    return {
        "message_id": row["message_id"],
        "source_id": row["source_id"],
        "plan_id": row["plan_id"],
        "plan_version": row["plan_version"],
        "event_type": row["event_type"],
        "event_name": row["event_name"],
        "kind": row["kind"],
        "type": row["type"],
        "field": row["field"],
        "description": row["description"],
        "action": row["action"],
        "timestamp": _iso(row["timestamp"]),
    }


def _accounts(conn: sa.Connection, workspace_id: str, ids: list[str]) -> list[dict[str, Any]]:
    members = _rows(conn, account_members, "profile_id", ids, dict)
    group_ids = dict(
        select_in(
            conn,
            "SELECT profile_id, value FROM identifiers WHERE workspace_id = ? AND type = ? "
            "AND profile_id IN ({keys})",
            sorted({m["account_id"] for m in members}),
            (workspace_id, ACCOUNT_TYPE),
        )
    )
    return [
        {"account_id": m["account_id"], "group_id": group_ids.get(m["account_id"]),
         "profile_id": m["profile_id"], "member_since": _iso(m["timestamp"])}
        for m in members
    ]  # fmt: skip


def _lineage(conn: sa.Connection, workspace_id: str, ids: list[str]) -> list[dict[str, Any]]:
    found: dict[int, Any] = {}
    for column in ("profile_id", "other_id"):
        for row in _rows(conn, lineage, column, ids, dict):
            if row["workspace_id"] == workspace_id:
                found[row["id"]] = row
    return [
        {"kind": r["kind"], "profile_id": r["profile_id"], "other_id": r["other_id"],
         "message_id": r["message_id"], "timestamp": _iso(r["timestamp"]),
         **orjson.loads(r["details"])}
        for _, r in sorted(found.items())
    ]  # fmt: skip


def _events(conn: sa.Connection, person: Person) -> list[dict[str, Any]]:
    offsets = sorted(person.offsets)
    governed = dict(
        select_in(
            conn,
            "SELECT log_offset, payload FROM message_profiles WHERE log_offset IN ({keys}) "
            "AND payload IS NOT NULL",
            offsets,
        )
    )
    quarantined = dict(
        select_in(
            conn, "SELECT log_offset, reason FROM quarantine WHERE log_offset IN ({keys})", offsets
        )  # fmt: skip
    )
    rows = select_in(
        conn,
        "SELECT log_offset, source_id, message_id, type, received_at, payload FROM log_messages "
        "WHERE workspace_id = ? AND log_offset IN ({keys})",
        offsets,
        (person.workspace_id,),
    )
    events = []
    for offset, source_id, message_id, msg_type, received_at, payload in sorted(rows):
        state = (
            "processed" if offset in person.processed
            else "unlinked" if offset in person.unlinked else "not processed yet"
        )  # fmt: skip
        event = {
            "message_id": message_id,
            "type": msg_type,
            "source_id": source_id,
            "received_at": _iso(received_at // 1000),
            "state": state,
            "message": orjson.loads(payload),
        }
        if offset in governed:
            event["governed_message"] = orjson.loads(governed[offset])
        if offset in quarantined:
            event["quarantined"] = quarantined[offset]
        events.append(event)
    return events


def access_request(store: Store, workspace_id: str, identifier: str, actor: str) -> dict[str, Any]:
    """``export_person``, audited: the record says who asked, the identifier's type and
    hash, and counts. The export reads without the write lock (it may be large); the record
    is written after it, and an export whose record cannot be written is not returned."""
    with store.engine.connect() as conn:
        document = export_person(conn, workspace_id, identifier)
        rules = graph_store.load_rules(conn, workspace_id)
        type_name, value = parse_identifier(conn, workspace_id, identifier, rules)[0]
    with store.write() as conn:
        audit.record(conn, workspace_id, actor, "privacy.access",
                     f"identity:{identity_hash(workspace_id, type_name, value)}",
                     {"identifier_type": type_name, "found": document["found"],
                      **summary(document)})  # fmt: skip
    return document
