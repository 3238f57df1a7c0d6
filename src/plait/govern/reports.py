"""What the API and the CLI show about governance: violation counts and lists, the
quarantine, and the events a plan is inferred from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from plait.govern.config import GovernanceCache
from plait.govern.plan_infer import infer_plan
from plait.store.schema import log_messages, quarantine, sources, violations

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


def draft_plan(
    conn: sa.Connection,
    workspace_id: str,
    source_ids: list[str] | None = None,
    limit: int | None = None,
    plan_id: str = "inferred",
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """A tracking plan drafted from the workspace's logged events, as plans see them (after
    the transformations; dropped events left out), connected to the sources it was drafted
    from (a plan without sources checks nothing). ``tick`` hears every message read."""
    transformations = GovernanceCache().get(conn, workspace_id).transformations
    seen: set[str] = set()

    def governed() -> Iterator[dict[str, Any]]:
        for msg in logged_messages(conn, workspace_id, source_ids, limit):
            if tick is not None:
                tick()
            source_id = msg.get("sourceId")
            if transformations.for_source(source_id):
                msg = transformations.apply(msg, source_id)
                if msg is None:  # dropped: never reaches a plan
                    continue
            seen.add(source_id)
            yield msg

    plan = infer_plan(governed(), plan_id)
    query = sa.select(sources.c.id, sources.c.name).where(sources.c.workspace_id == workspace_id)
    names = dict(conn.execute(query).all())
    plan["sources"] = [names[i] for i in (source_ids or sorted(seen, key=str)) if i in names]
    return plan
