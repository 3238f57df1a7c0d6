"""The audit log: who did what to a workspace's data, append-only (the database's triggers
refuse UPDATE and DELETE on the table, see migration 0005).

A record names an actor (a console user's id ``usr_...``, an API token's id ``tok_...``,
``cli:<os user>`` for the command line, ``system:<job>`` for Plait's own jobs), an action
(dotted: ``privacy.request.created``, ``privacy.access``, ``retention.run``), a target (a
request id, a workspace id, an identity hash) and details. **Details never hold personal
data**: counts, hashes (``plait.govern.identity_hash``), ids and type names only, never an
identifier's value, a trait or a message. The log outlives every deletion, so what it
holds must be safe to keep.
"""

from __future__ import annotations

import getpass
from typing import Any

import orjson
import sqlalchemy as sa

from plait.store.db import now_ms
from plait.store.schema import audit_log

MAX_LIMIT = 1000


def cli_actor() -> str:
    """The actor of a command run from a shell: ``cli:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        user = "unknown"
    return f"cli:{user}"


def record(
    conn: sa.Connection,
    workspace_id: str,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any],
) -> None:
    """Append one record in the caller's transaction (it commits, or not, with the change
    it describes). ``details`` must not hold personal data (see the module's docstring)."""
    conn.execute(
        audit_log.insert().values(
            workspace_id=workspace_id,
            at=now_ms(),
            actor=actor[:200],
            action=action[:100],
            target=target[:500],
            details=orjson.dumps(details).decode(),
        )
    )


def query(
    conn: sa.Connection,
    workspace_id: str,
    *,
    action: str | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """A workspace's records, newest first. ``action`` matches itself and the actions under
    it (``privacy`` matches ``privacy.access`` and ``privacy.request.created``); ``since``
    and ``until`` are ms since the epoch (``until`` excluded); pass the last record's id as
    ``before_id`` for the next page."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    stmt = sa.select(audit_log).where(audit_log.c.workspace_id == workspace_id)
    if action:
        under = audit_log.c.action.startswith(f"{action}.", autoescape=True)
        stmt = stmt.where(sa.or_(audit_log.c.action == action, under))
    if since is not None:
        stmt = stmt.where(audit_log.c.at >= since)
    if until is not None:
        stmt = stmt.where(audit_log.c.at < until)
    if before_id is not None:
        stmt = stmt.where(audit_log.c.id < before_id)
    rows = conn.execute(stmt.order_by(audit_log.c.id.desc()).limit(limit)).mappings()
    return [
        {
            "id": row["id"],
            "at": row["at"],
            "actor": row["actor"],
            "action": row["action"],
            "target": row["target"],
            "details": orjson.loads(row["details"]),
        }
        for row in rows
    ]
