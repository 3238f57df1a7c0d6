"""The pipeline's audience stage: the profiles a batch touched are evaluated again, in
memory, and what changed is applied (plait.audiences.engine), in the batch's transaction.

Merged-away profiles leave their audiences (their survivor is evaluated instead). A group
call touches the account's members when an audience reads account traits. A workspace with
no computed traits or audiences costs one settings query per batch.
"""

from __future__ import annotations

from plait.audiences import engine
from plait.audiences.evaluate import walk
from plait.audiences.language import AccountTrait
from plait.log.processing import Batch
from plait.store.bulk import select_in
from plait.store.db import now_ms

DEFINITIONS = engine.DefinitionsCache()


def update_audiences(batch: Batch) -> None:
    conn = batch.conn
    defs = DEFINITIONS.get(conn, batch.workspace_id)
    if defs.empty:
        return
    now = batch.context.get("now_ms") or now_ms()
    graph = batch.context.get("graph")
    resolve = graph.resolve_id if graph is not None else (lambda pid: pid)
    merged = [m.merged for m in batch.context.get("merges", ())]
    touched = {resolve(item.profile_id) for item in batch.items if item.profile_id}
    accounts = {item.account_id for item in batch.items if item.account_id}
    if accounts and any(
        isinstance(n, AccountTrait) for a in defs.audiences.values() for n in walk(a.tree)
    ):
        touched |= {
            pid
            for (pid,) in select_in(
                conn, "SELECT profile_id FROM account_members WHERE account_id IN ({keys})",
                sorted(accounts),
            )
        }  # fmt: skip
    engine.forget(conn, batch.workspace_id, merged, now, "merged")
    touched -= set(merged)
    results = engine.evaluate(conn, batch.workspace_id, defs, touched, now)
    changes = engine.apply(conn, batch.workspace_id, defs, results, now, "event")
    batch.context["audience_changes"] = changes
