"""Replaying the quarantine: blocked messages go through the pipeline again under the
workspace's current configuration (typically after the tracking plan was fixed). Those that
pass get their profiles as if they had passed the first time; those still blocked go back
to the quarantine with their new violations.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from plait.govern.config import GovernanceCache
from plait.govern.erase import workspace_write
from plait.identity import graph_store
from plait.log import backend_for
from plait.log.processing import Batch, Item
from plait.pipeline.runner import STAGES_WITH_AUDIENCES
from plait.store import Store
from plait.store.bulk import chunks
from plait.store.schema import quarantine, unlinked_messages, violations


@dataclass
class ReplayResult:
    replayed: int
    passed: int
    blocked: int


def replay_quarantine(
    store: Store, workspace_id: str, offsets: list[int] | None = None
) -> ReplayResult:
    """Replay the workspace's quarantined messages (or those at ``offsets``), in one
    transaction holding the workspace's pipeline lock."""
    with workspace_write(store, workspace_id) as conn:
        query = sa.select(quarantine.c.log_offset).where(quarantine.c.workspace_id == workspace_id)
        held = set(conn.scalars(query))
        chosen = sorted(held if offsets is None else held & set(offsets))
        if not chosen:
            return ReplayResult(0, 0, 0)
        for part in chunks(chosen):
            for table in (quarantine, violations, unlinked_messages):
                conn.execute(table.delete().where(table.c.log_offset.in_(part)))
        items = [Item(record) for record in backend_for(store).read_offsets(chosen, conn)]
        context = {
            "rules": graph_store.load_rules(conn, workspace_id),
            "governance": GovernanceCache().get(conn, workspace_id),
            "forward_violations": False,  # forwarded when they were first blocked
        }
        batch = Batch(workspace_id, items, conn, context)
        for stage in STAGES_WITH_AUDIENCES:
            stage(batch)
        passed = len(batch.items)
    return ReplayResult(len(items), passed, len(items) - passed)
