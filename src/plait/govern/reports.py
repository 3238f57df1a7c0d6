"""What the API and the CLI show about governance: violation counts and lists, the
quarantine, and the events a plan is inferred from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from plait.store.schema import log_messages, quarantine, violations

VIOLATION_EVENT = "Violation Generated"
GROUPS = {
    "event": ("event_type", "event_name"),
    "property": ("event_type", "event_name", "field"),
    "source": ("source_id",),
    "type": ("kind", "type"),
}


@dataclass
class ViolationFilter:
    source_id: str | None = None
    event: str | None = None
    kind: str | None = None
    since_ms: int | None = None  # event time
    until_ms: int | None = None

    def where(self, workspace_id: str) -> list[sa.ColumnElement[bool]]:
        c = violations.c
        clauses = [c.workspace_id == workspace_id]
        if self.source_id:
            clauses.append(c.source_id == self.source_id)
        if self.event:
            clauses.append(c.event_name == self.event)
        if self.kind:
            clauses.append(c.kind == self.kind)
        if self.since_ms is not None:
            clauses.append(c.timestamp >= self.since_ms)
        if self.until_ms is not None:
            clauses.append(c.timestamp < self.until_ms)
        return clauses


def violation_counts(
    conn: sa.Connection, workspace_id: str, group_by: str, filters: ViolationFilter
) -> list[dict[str, Any]]:
    """Violations counted per event, property (event and field), source or type; the
    most frequent first, with the messages they touched and the last time seen."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    columns = [violations.c[name] for name in GROUPS[group_by]]
    query = (
        sa.select(
            *columns,
            sa.func.count().label("violations"),
            sa.func.count(sa.distinct(violations.c.log_offset)).label("messages"),
            sa.func.max(violations.c.timestamp).label("last_seen"),
        )
        .where(*filters.where(workspace_id))
        .group_by(*columns)
        .order_by(sa.desc("violations"), *columns)
    )
    return [{str(k): v for k, v in row._mapping.items()} for row in conn.execute(query)]


def recent_violations(
    conn: sa.Connection, workspace_id: str, filters: ViolationFilter, limit: int = 100
) -> list[dict[str, Any]]:
    query = (
        sa.select(violations)
        .where(*filters.where(workspace_id))
        .order_by(violations.c.id.desc())
        .limit(limit)
    )
    return [{str(k): v for k, v in row._mapping.items()} for row in conn.execute(query)]


def quarantined(conn: sa.Connection, workspace_id: str, limit: int = 100) -> list[dict]:
    """The quarantine, oldest first, with each message as it is in the log."""
    query = (
        sa.select(quarantine, log_messages.c.payload)
        .join(log_messages, log_messages.c.log_offset == quarantine.c.log_offset)
        .where(quarantine.c.workspace_id == workspace_id)
        .order_by(quarantine.c.log_offset)
        .limit(limit)
    )
    out = []
    for row in conn.execute(query).mappings():
        entry = {str(k): v for k, v in row.items() if k != "payload"}
        entry["message"] = orjson.loads(row["payload"])
        out.append(entry)
    return out


def quarantine_size(conn: sa.Connection, workspace_id: str) -> int:
    query = sa.select(sa.func.count()).where(quarantine.c.workspace_id == workspace_id)
    return conn.execute(query).scalar_one()


def logged_messages(
    conn: sa.Connection,
    workspace_id: str,
    source_ids: list[str] | None = None,
    limit: int | None = None,
    chunk: int = 5000,
) -> Iterator[dict[str, Any]]:
    """The workspace's messages as the log holds them, oldest first (at most ``limit``)."""
    after, seen = 0, 0
    while limit is None or seen < limit:
        query = (
            sa.select(log_messages.c.log_offset, log_messages.c.payload)
            .where(log_messages.c.workspace_id == workspace_id, log_messages.c.log_offset > after)
            .order_by(log_messages.c.log_offset)
            .limit(chunk)
        )
        if source_ids:
            query = query.where(log_messages.c.source_id.in_(source_ids))
        rows = conn.execute(query).all()
        if not rows:
            return
        for _, payload in rows:
            if limit is not None and seen >= limit:
                return
            msg = orjson.loads(payload)
            if msg.get("event") == VIOLATION_EVENT:  # made by Plait, not the team's events
                continue
            seen += 1
            yield msg
        after = rows[-1][0]
