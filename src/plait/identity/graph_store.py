"""The identity graph in the state store: load the part a batch needs (and the workspace's
rules and removals), write what changed."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import sqlalchemy as sa

from plait.identity.identifiers import Identifier
from plait.identity.resolver import Changes, Graph, Profile, edge
from plait.identity.rules import Rules, from_dict
from plait.store.bulk import insert_rows, select_in, update_many
from plait.store.schema import identifiers, identity_edges, identity_removals, lineage, profiles
from plait.store.workspaces import read_setting

IDENTIFIER_COLUMNS = (
    "workspace_id", "type", "value", "profile_id", "first_seen", "last_seen", "log_offset",
    "message_id",
)  # fmt: skip
EDGE_COLUMNS = (
    "workspace_id", "a_type", "a_value", "b_type", "b_value", "profile_id", "log_offset",
    "message_id", "timestamp",
)  # fmt: skip


def load_rules(conn: sa.Connection, workspace_id: str) -> Rules:
    """The workspace's identity rules (the defaults if never set)."""
    return from_dict(read_setting(conn, workspace_id, "identity"))


def load_removals(conn: sa.Connection, graph: Graph) -> None:
    query = sa.select(
        identity_removals.c.a_type,
        identity_removals.c.a_value,
        identity_removals.c.b_type,
        identity_removals.c.b_value,
    ).where(identity_removals.c.workspace_id == graph.workspace_id)
    for a_type, a_value, b_type, b_value in conn.execute(query):
        if b_type is None:
            graph.removed_identifiers.add((a_type, a_value))
        else:
            graph.removed_links.add(edge((a_type, a_value), (b_type, b_value)))


def load(conn: sa.Connection, workspace_id: str, wanted: Iterable[Identifier]) -> Graph:
    """The profiles owning any of ``wanted``, with all their identifiers and edges."""
    graph = Graph(workspace_id)
    load_removals(conn, graph)
    by_type: dict[str, list[str]] = {}
    for type_name, value in set(wanted):
        by_type.setdefault(type_name, []).append(value)
    owners = []
    for type_name, values in by_type.items():  # one index range per type: (ws, type) + value
        owners += select_in(
            conn,
            "SELECT profile_id FROM identifiers WHERE workspace_id = ? AND type = ? "
            "AND value IN ({keys})",
            values,
            (workspace_id, type_name),
        )
    load_profiles(conn, graph, [pid for (pid,) in owners])
    return graph


def load_profiles(conn: sa.Connection, graph: Graph, profile_ids: Iterable[str]) -> None:
    ids = [pid for pid in set(profile_ids) if pid not in graph.profiles]
    if not ids:
        return
    found = {
        pid: Profile(pid, first_offset, created_at)
        for pid, first_offset, created_at in select_in(
            conn, "SELECT id, first_offset, created_at FROM profiles WHERE id IN ({keys})", ids
        )
    }
    for type_name, value, pid, last_seen in select_in(
        conn,
        "SELECT type, value, profile_id, last_seen FROM identifiers WHERE profile_id IN ({keys})",
        ids,
    ):
        found[pid].identifiers[(type_name, value)] = last_seen
    for a_type, a_value, b_type, b_value in select_in(
        conn,
        "SELECT a_type, a_value, b_type, b_value FROM identity_edges WHERE profile_id IN ({keys})",
        ids,
    ):
        graph.edges.add(((a_type, a_value), (b_type, b_value)))
    for profile in found.values():
        graph.add_profile(profile)


def insert_profiles(
    conn: sa.Connection, workspace_id: str, kind: str, rows: list[tuple[str, int, int]]
) -> None:
    """New profiles of one kind ("user" or "account"): (id, first offset, created at)."""
    insert_rows(
        conn, profiles, ("id", "workspace_id", "kind", "first_offset", "created_at"),
        [(pid, workspace_id, kind, first_offset, created_at)
         for pid, first_offset, created_at in rows],
    )  # fmt: skip


def save(conn: sa.Connection, graph: Graph, changes: Changes) -> None:
    """Write a batch's changes; every row names the profile its identifiers ended in."""
    ws, final = graph.workspace_id, graph.resolve_id
    insert_profiles(
        conn, ws, "user", [(p.id, p.first_offset, p.created_at) for p in changes.new_profiles]
    )
    moves = [(final(m.survivor), m.merged) for m in changes.merges]
    for table in (identifiers, identity_edges):
        update_many(conn, table, "profile_id", "profile_id", moves)
    update_many(conn, profiles, "merged_into", "id", moves)
    update_many(conn, profiles, "merged_into", "merged_into", moves)  # one hop, always
    if changes.merges:
        conn.execute(
            lineage.insert(),
            [
                {
                    "workspace_id": ws,
                    "kind": "merge",
                    "profile_id": m.survivor,
                    "other_id": m.merged,
                    "log_offset": m.offset,
                    "message_id": m.message_id,
                    "timestamp": m.timestamp_ms,
                    "details": orjson.dumps(
                        {"identifiers": [list(i) for i in m.identifiers]}
                    ).decode(),
                }
                for m in changes.merges
            ],  # fmt: skip
        )
    new_rows = []
    for ident, _pid, ts, offset, message_id in changes.new_identifiers:
        owner = graph.owner[ident]
        last_seen = owner.identifiers[ident]
        new_rows.append((ws, ident[0], ident[1], owner.id, ts, last_seen, offset, message_id))
    insert_rows(conn, identifiers, IDENTIFIER_COLUMNS, new_rows)
    new_idents = {row[0] for row in changes.new_identifiers}
    update_many(
        conn, identifiers, "last_seen", ("workspace_id", "type", "value"),
        [(ts, ws, ident[0], ident[1]) for ident, ts in changes.last_seen.items()
         if ident not in new_idents],
    )  # fmt: skip
    insert_rows(
        conn, identity_edges, EDGE_COLUMNS,
        [(ws, a[0], a[1], b[0], b[1], final(pid), offset, message_id, ts)
         for a, b, pid, offset, message_id, ts in changes.new_edges],
    )  # fmt: skip
