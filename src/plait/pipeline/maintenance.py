"""Operations on derived state: rebuild a workspace from its log, and unmerge a profile.

Both reuse the pipeline's stages, so what they compute is what the pipeline would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from plait.audiences import stage as audience_stage
from plait.audiences.scheduler import RECONCILED
from plait.govern.config import GovernanceCache
from plait.govern.consent_stage import update_consent
from plait.govern.stage import govern
from plait.identity import graph_store
from plait.identity.bulk import LogIdentities, resolve_all
from plait.identity.explain import find_profile
from plait.identity.identifiers import Identifier
from plait.identity.identifiers import normalize as normalize_value
from plait.identity.resolver import Graph
from plait.identity.rules import Rules
from plait.identity.stage import (
    alias_previous_id,
    normalize,
    parse,
    resolve,
    resolve_accounts,
)
from plait.lake.writer import consumer_name as lake_consumer
from plait.log import backend_for
from plait.log.processing import Batch, Item
from plait.pipeline.runner import BATCH_SIZE, STAGES_WITH_AUDIENCES, Pipeline, consumer_name
from plait.profiles.stage import update_profiles
from plait.store import Store
from plait.store.bulk import chunks
from plait.store.db import now_ms
from plait.store.schema import (
    account_members,
    audience_cache,
    audience_state,
    checkpoints,
    consent_history,
    identifiers,
    identity_edges,
    identity_removals,
    lineage,
    message_profiles,
    privacy_requests,
    profile_consent,
    profiles,
    quarantine,
    trait_history,
    traits,
    unlinked_messages,
    violations,
)


def reset(conn: sa.Connection, workspace_id: str) -> None:
    """Delete everything the pipeline derived for a workspace and rewind its checkpoint.
    Kept: the configuration, operator removals and the unmerges in the lineage."""
    ids = sa.select(profiles.c.id).where(profiles.c.workspace_id == workspace_id)
    for table in (traits, trait_history, account_members, profile_consent, consent_history):
        conn.execute(table.delete().where(table.c.profile_id.in_(ids)))
    for table in (
        identifiers,
        identity_edges,
        message_profiles,
        violations,
        quarantine,
        unlinked_messages,
    ):
        conn.execute(table.delete().where(table.c.workspace_id == workspace_id))
    conn.execute(
        lineage.delete().where(lineage.c.workspace_id == workspace_id, lineage.c.kind == "merge")
    )
    conn.execute(profiles.delete().where(profiles.c.workspace_id == workspace_id))
    conn.execute(checkpoints.delete().where(checkpoints.c.consumer == consumer_name(workspace_id)))
    # The lake is written again from the new state, and audiences and computed traits are
    # reconciled against it at the scheduler's next tick (only real differences emit).
    conn.execute(checkpoints.delete().where(checkpoints.c.consumer == lake_consumer(workspace_id)))
    conn.execute(audience_state.delete().where(audience_state.c.workspace_id == workspace_id,
                                               audience_state.c.key == RECONCILED))  # fmt: skip
    conn.execute(audience_cache.delete().where(audience_cache.c.workspace_id == workspace_id))
    # The audience step starts again where the rebuild leaves the pipeline.
    conn.execute(checkpoints.delete().where(
        checkpoints.c.consumer == audience_stage.consumer_name(workspace_id)
    ))  # fmt: skip


def rebuild(
    store: Store, workspace_id: str, progress: Callable[[str, int], None] | None = None
) -> int:
    """Recompute the identity graph and profiles from the whole log; returns the number of
    messages rebuilt (the log as its first pass read it, more if messages arrived). On the
    same log the result equals the incremental state.

    In two passes. Identity: every message's identifiers are read and the whole log is
    resolved at once (identity/bulk.py: the Resolver's result, in bulk), with no lock
    held; then the new graph replaces the old in one transaction. Profiles: the pipeline's batches,
    each message's profile known already; messages that arrived meanwhile are resolved as
    usual. A pipeline worker running meanwhile finds the graph complete and gives
    messages the same profiles. ``progress`` hears ("identity" | "profiles", messages)."""
    for _ in range(3):
        started = now_ms()
        graph, changes, profile_of, after, read, governance = _resolve_log(
            store, workspace_id, progress
        )
        with store.write(derived=True) as conn:  # the write lock only to swap the graphs
            # A privacy deletion that committed meanwhile removed identifiers this pass
            # read: swapping them in would bring the person back. Read the log again.
            if _deletions_since(conn, workspace_id, started):
                continue
            reset(conn, workspace_id)
            graph_store.save(conn, graph, changes)
        break
    else:
        raise RuntimeError("privacy deletions kept arriving during the rebuild; run it again")

    def known_profiles(batch: Batch) -> None:
        if batch.items and batch.items[-1].record.offset > after:  # arrived meanwhile
            resolve(batch)
            return
        found = profile_of.profiles([item.record.offset for item in batch.items])
        for item, profile_id in zip(batch.items, found, strict=True):
            item.profile_id = profile_id
        batch.context["merges"] = []
        batch.context["graph"] = Graph(workspace_id)  # the profile ids are final already
        resolve_accounts(batch)

    pipeline = Pipeline(
        store,
        stages=(parse, govern, normalize, known_profiles, update_profiles, update_consent),
        forward_violations=False,
        governance=governance,
        audiences=False,  # reconciled over the lake afterwards
    )
    total = 0
    while (count := pipeline.run_batch(workspace_id)) > 0:
        total += count
        if progress is not None:
            progress("profiles", count)
    # A pipeline worker running meanwhile may have processed some of the batches itself.
    return max(total, read)


def _resolve_log(store: Store, workspace_id: str, progress):
    """The rebuild's first pass: every message's identifiers, resolved at once."""
    log = backend_for(store)
    identities = LogIdentities()
    graph = Graph(workspace_id)
    governance = GovernanceCache()
    with store.engine.connect() as conn:
        rules = graph_store.load_rules(conn, workspace_id)
        graph_store.load_removals(conn, graph)
        # Governance decides what identity sees (transformations first, plans may block);
        # this pass only reads: the second records violations and the quarantine.
        context = {"rules": rules, "governance": governance.get(conn, workspace_id),
                   "dry_run": True}  # fmt: skip
        after = read = 0
        while records := log.read(after, BATCH_SIZE, workspace_id, conn):
            read += len(records)
            batch = Batch(workspace_id, [Item(r) for r in records], conn, dict(context))
            parse(batch)
            govern(batch)
            normalize(batch)
            for item in batch.items:
                record, previous = item.record, alias_previous_id(item.message, rules)
                identities.add(
                    record.offset, record.message_id, item.timestamp_ms, item.identifiers, previous
                )
            after = records[-1].offset
            if progress is not None:
                progress("identity", len(records))
    changes, profile_of = resolve_all(graph, rules, identities)
    return graph, changes, profile_of, after, read, governance


def _deletions_since(conn: sa.Connection, workspace_id: str, started: int) -> bool:
    query = sa.select(sa.func.count()).where(
        privacy_requests.c.workspace_id == workspace_id,
        privacy_requests.c.finished_at >= started,
        privacy_requests.c.regulation_type.not_in(("SUPPRESS_ONLY", "UNSUPPRESS")),
    )
    return conn.execute(query).scalar_one() > 0


@dataclass
class UnmergeResult:
    profile_id: str
    profiles: list[str]  # the profiles the messages now belong to, the original first
    messages: int


def unmerge(
    store: Store,
    workspace_id: str,
    profile_ref: str,
    identifier: str,
    linked_to: str | None = None,
    reason: str = "",
) -> UnmergeResult:
    """Remove an identifier (``type:value``), or with ``linked_to`` only the link between
    two, from a profile; its messages are resolved again without it, so the profile splits
    into the components that remain, with their traits, events and memberships.

    The removal is a rule from then on: a removed identifier never becomes an identifier
    again, and two identifiers whose link was removed are never joined again. Identifiers
    the profile's messages carried but that belong to other profiles (dropped by merge
    protection) stay dropped."""
    with store.write() as conn:
        rules = graph_store.load_rules(conn, workspace_id)
        profile_id = find_profile(conn, workspace_id, profile_ref, rules)
        removed = _identifier(identifier, rules)
        other = _identifier(linked_to, rules) if linked_to else None
        query = sa.select(identifiers.c.type, identifiers.c.value).where(
            identifiers.c.profile_id == profile_id
        )
        own = {(type_name, value) for type_name, value in conn.execute(query)}
        for ident in (removed, other):
            if ident is not None and ident not in own:
                raise ValueError(f"{ident[0]}:{ident[1]} is not an identifier of {profile_id}")
        conn.execute(
            identity_removals.insert().values(
                workspace_id=workspace_id,
                a_type=removed[0],
                a_value=removed[1],
                b_type=other[0] if other else None,
                b_value=other[1] if other else None,
                reason=reason,
                created_at=now_ms(),
            )  # fmt: skip
        )
        offsets = list(
            conn.scalars(
                sa.select(message_profiles.c.log_offset)
                .where(message_profiles.c.profile_id == profile_id)
                .order_by(message_profiles.c.log_offset)
            )
        )
        _forget(conn, profile_id)
        items = _reprocess(store, conn, workspace_id, rules, offsets, own)
        parts = list(dict.fromkeys(i.profile_id for i in items if i.profile_id))
        details = {
            "removed": {"type": removed[0], "value": removed[1]},
            **({"linked_to": {"type": other[0], "value": other[1]}} if other else {}),
            "reason": reason,
        }
        conn.execute(
            lineage.insert(),
            [
                {
                    "workspace_id": workspace_id,
                    "kind": "unmerge",
                    "profile_id": profile_id,
                    "other_id": part,
                    "log_offset": None,
                    "message_id": None,
                    "timestamp": now_ms(),
                    "details": orjson.dumps(details).decode(),
                }
                for part in parts
            ],  # fmt: skip
        )
    return UnmergeResult(profile_id, parts, len(items))


def _identifier(text: str, rules) -> Identifier:
    type_name, sep, value = text.partition(":")
    if not sep or not value:
        raise ValueError(f"{text!r}: write an identifier as type:value, e.g. email:jo@x.com")
    return type_name, normalize_value(type_name, value, rules) or value


def _forget(conn: sa.Connection, profile_id: str) -> None:
    """Delete what the pipeline derived for a profile (and the ids merged into it)."""
    ids = [profile_id] + list(
        conn.scalars(sa.select(profiles.c.id).where(profiles.c.merged_into == profile_id))
    )
    for table in (
        traits, trait_history, account_members, identifiers, identity_edges, profile_consent,
        consent_history,
    ):  # fmt: skip
        conn.execute(table.delete().where(table.c.profile_id.in_(ids)))
    conn.execute(message_profiles.delete().where(message_profiles.c.profile_id == profile_id))
    conn.execute(
        lineage.delete().where(
            lineage.c.kind == "merge",
            sa.or_(lineage.c.profile_id.in_(ids), lineage.c.other_id.in_(ids)),
        )
    )
    conn.execute(profiles.delete().where(profiles.c.id.in_(ids)))
    conn.execute(audience_cache.delete().where(audience_cache.c.profile_id.in_(ids)))


def _reprocess(
    store: Store, conn: sa.Connection, workspace_id: str, rules: Rules, offsets, own
) -> list[Item]:
    items = [Item(record) for record in backend_for(store).read_offsets(offsets, conn)]
    if items:
        for part in chunks(offsets):  # governance records them again
            conn.execute(violations.delete().where(violations.c.log_offset.in_(part)))
        context = {"rules": rules, "only_identifiers": own,
                   "governance": GovernanceCache().get(conn, workspace_id)}  # fmt: skip
        batch = Batch(workspace_id, items, conn, context)
        for stage in STAGES_WITH_AUDIENCES:
            stage(batch)
    return items
