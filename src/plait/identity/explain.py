"""Why a profile is one person: its identifiers, the edges that joined them (with the
message that made each), and the merges and unmerges (with what was removed) in its
lineage."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from plait.identity import graph_store
from plait.identity.identifiers import normalize
from plait.identity.rules import Rules
from plait.store.schema import identifiers, identity_edges, lineage, profiles


class ProfileNotFound(LookupError):
    pass


def find_profile(conn: sa.Connection, workspace_id: str, ref: str, rules: Rules) -> str:
    """A profile id from ``prf_...``/``acc_...`` (a merged-away id resolves to the survivor)
    or ``type:value`` for any identifier (the value normalized as the pipeline does)."""
    type_name, sep, value = ref.partition(":")
    if sep and type_name in ("segment_id", "profile_id"):
        ref, sep = value, ""
    if not sep:
        return _live_id(conn, workspace_id, ref)
    normalized = normalize(type_name, value, rules) if type_name != "group_id" else value
    found = conn.execute(
        sa.select(identifiers.c.profile_id).where(
            identifiers.c.workspace_id == workspace_id,
            identifiers.c.type == type_name,
            identifiers.c.value == (normalized or value),
        )
    ).scalar()
    if found is None:
        raise ProfileNotFound(f"no profile with {type_name} {value!r}")
    return found


def _live_id(conn: sa.Connection, workspace_id: str, profile_id: str) -> str:
    for _ in range(100):  # merged_into is kept one hop deep; the bound guards a cycle
        row = conn.execute(
            sa.select(profiles.c.merged_into).where(
                profiles.c.id == profile_id, profiles.c.workspace_id == workspace_id
            )
        ).first()
        if row is None:
            raise ProfileNotFound(f"no profile {profile_id!r}")
        if row.merged_into is None:
            return profile_id
        profile_id = row.merged_into
    raise ProfileNotFound(f"profile {profile_id!r} does not resolve")


def explain_ref(conn: sa.Connection, workspace_id: str, ref: str) -> dict[str, Any]:
    """``explain`` for a profile reference as ``find_profile`` takes it, under the
    workspace's identity rules."""
    rules = graph_store.load_rules(conn, workspace_id)
    return explain(conn, workspace_id, find_profile(conn, workspace_id, ref, rules))


def explain(conn: sa.Connection, workspace_id: str, profile_id: str) -> dict[str, Any]:
    merged = list(
        conn.scalars(
            sa.select(profiles.c.id)
            .where(profiles.c.merged_into == profile_id)
            .order_by(profiles.c.first_offset)
        )
    )
    idents = conn.execute(
        sa.select(identifiers)
        .where(identifiers.c.profile_id == profile_id)
        .order_by(identifiers.c.log_offset, identifiers.c.type)
    ).mappings()
    edges = conn.execute(
        sa.select(identity_edges)
        .where(identity_edges.c.profile_id == profile_id)
        .order_by(identity_edges.c.log_offset)
    ).mappings()
    history = conn.execute(
        sa.select(lineage)
        .where(
            lineage.c.workspace_id == workspace_id,
            sa.or_(lineage.c.profile_id == profile_id, lineage.c.other_id == profile_id),
        )
        .order_by(lineage.c.id)
    ).mappings()
    return {
        "profile_id": profile_id,
        "merged_ids": merged,
        "identifiers": [
            {
                "type": i["type"],
                "value": i["value"],
                "first_seen": i["first_seen"],
                "last_seen": i["last_seen"],
                "message_id": i["message_id"],
                "log_offset": i["log_offset"],
            }
            for i in idents
        ],  # fmt: skip
        "edges": [
            {
                "from": {"type": e["a_type"], "value": e["a_value"]},
                "to": {"type": e["b_type"], "value": e["b_value"]},
                "message_id": e["message_id"],
                "log_offset": e["log_offset"],
                "timestamp": e["timestamp"],
            }
            for e in edges
        ],  # fmt: skip
        "lineage": [
            {
                "kind": h["kind"],
                "profile_id": h["profile_id"],
                "other_id": h["other_id"],
                "message_id": h["message_id"],
                "log_offset": h["log_offset"],
                "timestamp": h["timestamp"],
                **orjson.loads(h["details"]),
            }
            for h in history
        ],  # fmt: skip
    }
