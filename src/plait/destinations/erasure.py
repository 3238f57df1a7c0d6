"""Destinations' part in privacy deletions (registered when ``plait.destinations`` is
imported, as the lake's is):

- in the deletion's transaction, the person's queued messages and dead letters go
  (``erase_deliveries``): nothing of theirs is sent after the deletion;
- after it commits, for requests that forward (DELETE_ONLY, SUPPRESS_WITH_DELETE), each
  enabled destination whose connector supports deletions gets one deletion per user id of
  the person, queued like a message (retried, dead-lettered, visible in its queue) until
  delivered (``forward_deletions``). The queued deletion holds the user id until then.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from plait.destinations import queue
from plait.destinations.config import SECTION, compile_destinations
from plait.govern import erase, privacy
from plait.govern.erase import Erasure
from plait.store import Store
from plait.store.schema import deliveries, workspace_settings


def erase_deliveries(erasure: Erasure) -> None:
    # Their messages, and what was queued for them without a message (an audience's sync).
    erasure.delete_in(deliveries, "log_offset", erasure.person.offsets, "workspace_id = ?",
                      (erasure.workspace_id,))  # fmt: skip
    erasure.delete_in(deliveries, "person", erasure.person.profile_ids, "workspace_id = ?",
                      (erasure.workspace_id,))  # fmt: skip


def forward_deletions(store: Store, erasure: Erasure) -> list[str]:
    """Queue the deletion at each destination that takes deletions; their keys."""
    ws = erasure.workspace_id
    user_ids = sorted({v for (t, v) in erasure.person.identifiers if t == "user_id"})
    if not user_ids:
        return []
    with store.engine.connect() as conn:
        doc = conn.scalar(sa.select(workspace_settings.c.value).where(
            workspace_settings.c.workspace_id == ws,
            workspace_settings.c.key == SECTION))  # fmt: skip
    targets = [d for d in compile_destinations(orjson.loads(doc) if doc else []).values()
               if d.enabled and d.connector.deletes]  # fmt: skip
    if not targets:
        return []
    now = int(time.time() * 1000)
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    offsets = queue.own_offsets(len(user_ids))
    with store.write() as conn:
        for dest in targets:
            rows = [{
                "log_offset": offsets[i], "person": f"{queue.DELETION}{user_id}",
                "status": "queued", "attempts": 0, "next_attempt_at": 0,
                "payload": orjson.dumps(dest.connector.deletion(user_id, stamp,
                                                                dest.settings)).decode(),
            } for i, user_id in enumerate(user_ids)]  # fmt: skip
            queue.enqueue(conn, ws, dest.key, rows, now)
    return [d.key for d in targets]


def register() -> None:
    if erase_deliveries not in erase.ERASURE_STEPS:
        erase.ERASURE_STEPS.append(erase_deliveries)
    privacy.AFTER_COMMIT_STEPS[:] = [
        (name, forward_deletions if name == "forwarded_to" else step)
        for name, step in privacy.AFTER_COMMIT_STEPS
    ]
    privacy.NOT_PRESENT.pop("pending_deliveries", None)
