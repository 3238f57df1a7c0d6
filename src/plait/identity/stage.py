"""The pipeline's identity stages: parse (message, event time), normalize (identifiers) and
resolve."""

from __future__ import annotations

import orjson

from plait.identity import graph_store
from plait.identity.identifiers import extract
from plait.identity.identifiers import normalize as normalize_value
from plait.identity.resolver import Resolver, derived_id, with_previous_id
from plait.identity.rules import Rules
from plait.log.processing import Batch, Item
from plait.spec.timestamps import parse_timestamp
from plait.store.bulk import insert_rows, select_in
from plait.store.schema import identifiers

ACCOUNT_TYPE = "group_id"  # accounts' identifier type; a person type may not take the name


def parse(batch: Batch) -> None:
    """Each item's message and corrected event time, from the log's payload."""
    for item in batch.items:
        parse_item(item)


def parse_item(item: Item) -> None:
    msg = item.message = orjson.loads(item.record.payload)
    try:
        item.timestamp_ms = int(parse_timestamp(msg["timestamp"]).timestamp() * 1000)
    except (KeyError, ValueError):  # the log holds enriched messages: not expected
        item.timestamp_ms = item.record.received_at // 1000


def normalize(batch: Batch) -> None:
    """Each item's identifiers (parsing it first unless an earlier stage did: governance
    changes the message before identity sees it)."""
    rules: Rules = batch.context["rules"]
    for item in batch.items:
        if not item.message:
            parse_item(item)
        item.identifiers = extract(item.message, rules)


def alias_previous_id(msg: dict, rules: Rules) -> str | None:
    """An alias's previousId as an identifier value (its type is read in resolution)."""
    if msg.get("type") != "alias":
        return None
    value = normalize_value("user_id", msg.get("previousId"), rules)
    return None if value is None or rules.is_blocked(value) else value


def resolve(batch: Batch) -> None:
    """Give every item its profile; merges go to ``batch.context["merges"]``."""
    rules: Rules = batch.context["rules"]
    wanted = [ident for item in batch.items for ident in item.identifiers]
    previous_ids = {}
    for item in batch.items:
        value = alias_previous_id(item.message, rules)
        if value is not None:
            previous_ids[item.record.offset] = value
            wanted += [("user_id", value), ("anonymous_id", value)]
    graph = graph_store.load(batch.conn, batch.workspace_id, wanted)
    resolver = Resolver(graph, rules)
    # An unmerge resolves a profile's messages again with only the identifiers it had.
    only = batch.context.get("only_identifiers")
    for item in batch.items:
        ids = item.identifiers
        previous = previous_ids.get(item.record.offset)
        if previous is not None:
            ids = with_previous_id(ids, resolver.classify_previous_id(previous), rules)
        if only is not None:
            ids = [ident for ident in ids if ident in only]
        record = item.record
        item.profile_id = resolver.resolve(ids, record.offset, record.message_id, item.timestamp_ms)
    graph_store.save(batch.conn, graph, resolver.changes)
    for item in batch.items:
        if item.profile_id is not None:
            item.profile_id = graph.resolve_id(item.profile_id)
    batch.context["merges"] = resolver.changes.merges
    batch.context["graph"] = graph
    resolve_accounts(batch)


def account_id_for(workspace_id: str, group_id: str) -> str:
    return derived_id("acc", workspace_id, group_id)


def resolve_accounts(batch: Batch) -> None:
    """Group calls name an account by groupId: created on first sight, never merged."""
    groups = {}
    for item in batch.items:
        if item.message.get("type") == "group":
            group_id = str(item.message.get("groupId", "")).strip()
            if group_id:
                item.account_id = account_id_for(batch.workspace_id, group_id)
                groups.setdefault(group_id, item)
    if not groups:
        return
    known = {
        value
        for (value,) in select_in(
            batch.conn,
            "SELECT value FROM identifiers WHERE workspace_id = ? AND type = ? "
            "AND value IN ({keys})",
            list(groups),
            (batch.workspace_id, ACCOUNT_TYPE),
        )
    }
    new = [(group_id, item) for group_id, item in groups.items() if group_id not in known]
    graph_store.insert_profiles(
        batch.conn, batch.workspace_id, "account",
        [(item.account_id, item.record.offset, item.timestamp_ms) for _, item in new],
    )  # fmt: skip
    insert_rows(
        batch.conn, identifiers, graph_store.IDENTIFIER_COLUMNS,
        [(batch.workspace_id, ACCOUNT_TYPE, group_id, item.account_id, item.timestamp_ms,
          item.timestamp_ms, item.record.offset, item.record.message_id)
         for group_id, item in new],
    )  # fmt: skip
