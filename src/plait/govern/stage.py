"""The pipeline's governance stage: transformations, then the tracking plan, before
identity resolution.

A message a transformation drops, or a plan blocks, leaves the batch: it stays in the log
(the source of truth), blocked ones are listed in the quarantine for inspection and replay,
and the identities of both are kept hashed (unlinked_messages) so a deletion finds them.
Violations are stored per message and field; with ``forward_violations`` the plan's
"Violation Generated" events are appended to the log, from the plan's forwarding source,
in the batch's transaction (so exactly once for a live batch; a rebuild or a replay does
not forward again).
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from plait.govern.config import Governance
from plait.govern.identity_hash import identity_hash
from plait.govern.tracking_plan import violation_event
from plait.identity.identifiers import extract
from plait.log.backends import append_in
from plait.log.processing import Batch, Item
from plait.observability import GOVERNED_MESSAGES
from plait.spec import Enrichment, enrich, validate
from plait.store.bulk import insert_rows
from plait.store.db import now_ms
from plait.store.schema import quarantine, unlinked_messages, violations
from plait.store.upsert import upsert

VIOLATION_COLUMNS = (
    "workspace_id", "source_id", "plan_id", "plan_version", "log_offset", "message_id",
    "event_type", "event_name", "kind", "type", "field", "description", "action", "timestamp",
)  # fmt: skip


def govern(batch: Batch) -> None:
    governance: Governance | None = batch.context.get("governance")
    if governance is None or not governance.active_in_pipeline:
        return
    transformations, plans = governance.transformations, governance.plans
    forward = batch.context.get("forward_violations", False)
    kept: list[Item] = []
    left_out: list[Item] = []
    found: list[tuple] = []
    blocked: list[dict] = []
    forwarded: dict[str, list[dict]] = {}
    now = now_ms()
    for item in batch.items:
        record, msg = item.record, item.message
        changed = False
        if transformations.for_source(record.source_id):
            msg, changed = transformations.transform(msg, record.source_id)
            if msg is None:
                GOVERNED_MESSAGES.labels("dropped").inc()
                left_out.append(item)
                continue
        verdict = plans.check(msg, record.source_id)
        if verdict is not None and verdict.violations:
            for v in verdict.violations:
                found.append((
                    batch.workspace_id, record.source_id, v.plan_id, v.plan_version,
                    record.offset, record.message_id, v.event_type, v.event_name, v.kind,
                    v.type, v.field[:500], v.description[:1000], v.action, item.timestamp_ms,
                ))  # fmt: skip
            if forward and (target := plans.forwarding_source(record.source_id)):
                events = forwarded.setdefault(target, [])
                events += [violation_event(v, msg, record.source_id) for v in verdict.violations]
            if verdict.blocked:
                first = verdict.violations[0]
                reason = "; ".join(f"{v.field}: {v.description}" for v in verdict.violations)
                blocked.append({
                    "log_offset": record.offset, "workspace_id": batch.workspace_id,
                    "source_id": record.source_id, "plan_id": first.plan_id,
                    "plan_version": first.plan_version, "reason": reason[:1000],
                    "created_at": now,
                })  # fmt: skip
                GOVERNED_MESSAGES.labels("blocked").inc()
                left_out.append(item)
                continue
            changed = True  # context.protocols records the violations
        if changed:
            item.message = msg
            item.governed_payload = orjson.dumps(msg).decode()
        kept.append(item)
    batch.items = kept
    if batch.context.get("dry_run"):  # a rebuild's identity pass: what stays, nothing more
        return
    conn = batch.conn
    insert_rows(conn, violations, VIOLATION_COLUMNS, found)
    upsert(conn, quarantine, blocked, ["log_offset"])
    _keep_identities(batch, left_out)
    for source_id, events in forwarded.items():
        append_to_log(conn, batch.workspace_id, source_id, events)


def _keep_identities(batch: Batch, items: list[Item]) -> None:
    """The hashed identities of messages given no profile, as they are in the log."""
    rules, ws = batch.context["rules"], batch.workspace_id
    keys = ["workspace_id", "value_hash", "log_offset"]
    rows = {
        (ws, identity_hash(ws, type_name, value), item.record.offset)
        for item in items
        for type_name, value in extract(orjson.loads(item.record.payload), rules)
    }
    upsert(batch.conn, unlinked_messages, [dict(zip(keys, r, strict=True)) for r in rows], keys)


def append_to_log(conn: sa.Connection, workspace_id: str, source_id: str, messages: list) -> int:
    """Append server-made messages to the log inside the caller's transaction, enriched as
    ingestion would. Their messageIds are deterministic: PostgreSQL drops a repeat; on
    SQLite the caller makes sure it forwards once."""
    env = Enrichment(datetime.now(UTC), workspace_id, source_id)
    received = int(env.received_at.timestamp() * 1_000_000)
    rows = []
    for msg in messages:  # made by Plait: a MessageError here is a bug and propagates
        enrich(validate(msg), env)
        rows.append((workspace_id, source_id, msg["messageId"], msg["type"], received,
                     orjson.dumps(msg).decode()))  # fmt: skip
    append_in(conn, rows)
    return len(rows)
