"""The pipeline's audience stage: the profiles a batch touched are evaluated again, in
memory, and what changed is applied (plait.audiences.engine), in the batch's transaction.

Merged-away profiles leave their audiences (their survivor is evaluated instead). A group
call touches the account's members when an audience reads account traits. A workspace with
no computed traits or audiences costs one settings query per batch.
"""

from __future__ import annotations

from plait.audiences import engine
from plait.audiences.evaluate import Compiled, Event
from plait.audiences.language import AccountTrait, walk
from plait.log.processing import Batch
from plait.profiles.stage import event_name, identify_traits
from plait.store.bulk import select_in
from plait.store.db import now_ms


def reads_accounts(defs) -> bool:
    if "reads_accounts" not in defs.cache:
        defs.cache["reads_accounts"] = any(
            isinstance(n, AccountTrait) for a in defs.audiences.values() for n in walk(a.tree)
        )
    return defs.cache["reads_accounts"]


def update_audiences(batch: Batch) -> None:
    conn = batch.conn
    defs = engine.DEFINITIONS.get(conn, batch.workspace_id)
    if defs.empty:
        return
    now = batch.context.get("now_ms") or now_ms()
    graph = batch.context.get("graph")
    resolve = graph.resolve_id if graph is not None else (lambda pid: pid)
    merges = batch.context.get("merges", ())
    merged = [m.merged for m in merges]
    touched = {resolve(item.profile_id) for item in batch.items if item.profile_id}
    accounts = {item.account_id for item in batch.items if item.account_id}
    if accounts and reads_accounts(defs):
        touched |= {
            pid
            for (pid,) in select_in(
                conn, "SELECT profile_id FROM account_members WHERE account_id IN ({keys})",
                sorted(accounts),
            )
        }  # fmt: skip
    engine.forget(conn, batch.workspace_id, merged, now, "merged")
    touched -= set(merged)
    # A survivor's history gained the merged profiles' events: its cache is made again.
    engine.drop_cache(conn, batch.workspace_id, {resolve(m.survivor) for m in merges})
    arrived: dict[str, list[Event]] = {}
    for item in batch.items:
        if item.profile_id:
            arrived.setdefault(resolve(item.profile_id), []).append(Event(
                item.timestamp_ms, item.record.offset, item.record.type, event_name(item),
                item.message,
            ))  # fmt: skip
    # Profiles whose events match nothing are evaluated only when a trait an audience reads
    # was set, or an account changed (the emitted identifies read back set neither).
    read = Compiled.of(defs).trait_keys
    dirty = {resolve(i.profile_id) for i in batch.items if i.profile_id and i.record.type
             == "identify" and read & set(identify_traits(i.message) or ())}  # fmt: skip
    dirty |= touched - {resolve(i.profile_id) for i in batch.items if i.profile_id}
    dirty |= {resolve(i.profile_id) for i in batch.items if i.account_id and i.profile_id}
    results = engine.evaluate(conn, batch.workspace_id, defs, touched, now, arrived, dirty)
    changes = engine.apply(conn, batch.workspace_id, defs, results, now, "event")
    batch.context["audience_changes"] = changes
