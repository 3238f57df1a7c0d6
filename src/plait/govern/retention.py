"""Event retention: a workspace's log messages older than its ``retention`` setting go, with
what the pipeline and governance recorded about each (message_profiles, violations,
quarantine, unlinked_messages).

```yaml
retention:
  days: 400     # messages received more than 400 days ago are deleted
```

Profiles, identifiers and traits stay: they are the people, not their events (a privacy
request deletes a person). A rebuild replays the log that remains, so what only deleted
messages said is not rebuilt. Deletion runs in chunks, each in its own transaction holding
the workspace's pipeline lock, so ingestion and the pipeline keep going between chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from plait.govern import audit, config
from plait.govern.erase import Erasure, Person, workspace_write
from plait.identity.rules import default_rules
from plait.store import Store
from plait.store.db import now_ms as current_ms
from plait.store.schema import (
    log_messages,
    message_profiles,
    quarantine,
    unlinked_messages,
    violations,
    workspaces,
)
from plait.store.workspaces import Invalid, read_setting

logger = logging.getLogger("plait.retention")

CHUNK = 5000
DAY_MS = 86_400_000
# Run in each chunk's transaction with (conn, workspace_id, deleted log offsets).
RETENTION_STEPS: list[Callable[[sa.Connection, str, list[int]], None]] = []
TABLES = ("log_messages", "message_profiles", "violations", "quarantine", "unlinked_messages")


def retention_days(conn: sa.Connection, workspace_id: str) -> float | None:
    """The workspace's ``retention.days``, None when it keeps everything."""
    return config.retention_days(read_setting(conn, workspace_id, "retention"))


def apply_retention(
    store: Store,
    workspace_id: str,
    now_ms: int | None = None,
    *,
    actor: str = "system:retention",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Delete the workspace's messages received before ``now - days``; returns the rows
    deleted per table (all 0 without a retention setting). ``progress`` hears the log
    messages deleted by each chunk. A run that deleted something is audited."""
    with store.engine.connect() as conn:
        days = retention_days(conn, workspace_id)
    counts: dict[str, Any] = dict.fromkeys(TABLES, 0)
    if days is None:
        return {"days": None, **counts}
    cutoff_us = ((now_ms if now_ms is not None else current_ms()) - int(days * DAY_MS)) * 1000
    while True:
        with workspace_write(store, workspace_id) as conn:
            offsets = list(
                conn.scalars(
                    sa.select(log_messages.c.log_offset)
                    .where(
                        log_messages.c.workspace_id == workspace_id,
                        log_messages.c.received_at < cutoff_us,
                    )
                    .order_by(log_messages.c.log_offset)
                    .limit(CHUNK)
                )
            )
            if not offsets:
                break
            e = Erasure(conn, workspace_id, Person(workspace_id), default_rules())
            e.delete_in(log_messages, "log_offset", offsets, "workspace_id = ?", (workspace_id,))
            for table in (message_profiles, violations, quarantine):
                e.delete_in(table, "log_offset", offsets)
            e.delete_in(unlinked_messages, "log_offset", offsets, "workspace_id = ?",
                        (workspace_id,))  # fmt: skip
            for step in RETENTION_STEPS:  # later parts of Plait that keep derived state
                step(conn, workspace_id, offsets)
            for table, count in e.removed.items():
                counts[table] += count
        if progress is not None:
            progress(len(offsets))
        if len(offsets) < CHUNK:
            break
    result = {"days": days, **counts}
    if counts["log_messages"]:
        with store.engine.begin() as conn:
            audit.record(conn, workspace_id, actor, "retention.run", workspace_id, result)
    return result


def run_due(store: Store, now_ms: int | None = None) -> dict[str, dict[str, Any]]:
    """Apply retention to every workspace that has a retention setting; returns the counts
    per workspace id (the pipeline loop calls this, e.g. hourly). A workspace whose setting
    is invalid is logged and reported (``{"error": ...}``); the others still run."""
    with store.engine.connect() as conn:
        ids = list(conn.scalars(sa.select(workspaces.c.id).order_by(workspaces.c.id)))
        ids = [ws for ws in ids if read_setting(conn, ws, "retention") is not None]
    results: dict[str, dict[str, Any]] = {}
    for ws in ids:
        try:
            results[ws] = apply_retention(store, ws, now_ms)
        except Invalid as exc:
            logger.error("retention of %s not applied: %s", ws, exc)
            results[ws] = {"error": str(exc)}
    return results
