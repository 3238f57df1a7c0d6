"""A destination's mapping shown on a real message: what a recent processed message is,
and what the destination would receive of it (or why it would not), with nothing sent."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from plait.destinations.config import compile_destination
from plait.destinations.dispatcher import (
    attach_traits,
    item_for,
    loads,
    profile_preferences,
    refusal,
    source_ids,
    source_names,
)
from plait.govern.config import GovernanceCache
from plait.govern.transformations import compile_transformations, with_destination_mapping
from plait.store import Store
from plait.store.schema import log_messages, message_profiles
from plait.store.workspaces import read_setting


def preview(store: Store, workspace_id: str, doc: dict[str, Any], log_offset: int | None = None,
            mapping: list[Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """``doc`` (a destination's definition, saved or not) applied to the processed message
    at ``log_offset``, else the latest one (the answer's ``older`` is the one before, to step
    back through real events); with ``mapping``, that list stands for the destination's own
    transformations (unsaved ones tried out). Raises ``Invalid`` for a bad definition or
    mapping and ``LookupError`` when there is no such message."""
    dest = compile_destination(doc)
    mp, lm = message_profiles, log_messages
    query = (
        sa.select(mp.c.log_offset, mp.c.type, mp.c.profile_id, lm.c.source_id, lm.c.message_id,
                  sa.func.coalesce(mp.c.payload, lm.c.payload).label("payload"))
        .join(lm, lm.c.log_offset == mp.c.log_offset)
        .where(mp.c.workspace_id == workspace_id)
    )  # fmt: skip
    if log_offset is not None:
        query = query.where(mp.c.log_offset == log_offset)
    with store.engine.connect() as conn:
        row = conn.execute(query.order_by(mp.c.log_offset.desc()).limit(1)).first()
        if row is None:
            raise LookupError("no processed message yet" if log_offset is None
                              else f"no processed message at offset {log_offset}")  # fmt: skip
        older = conn.execute(
            sa.select(sa.func.max(mp.c.log_offset))
            .where(mp.c.workspace_id == workspace_id, mp.c.log_offset < row.log_offset)
        ).scalar()  # fmt: skip
        governance = GovernanceCache().get(conn, workspace_id)
        names = source_names(conn, workspace_id)
        ids = source_ids(names, dest)
        shapes = governance.transformations
        if mapping is not None:
            docs = read_setting(conn, workspace_id, "transformations")
            shapes = compile_transformations(
                with_destination_mapping(docs, dest.name, mapping, names), names
            )
        prefs = profile_preferences(conn, {row.profile_id}) if row.profile_id else {}
        msg = loads(row.payload)
        refused = refusal(dest, ids, row, msg, governance.consent, prefs)
        item = None
        if refused is None:
            item = item_for(dest, shapes, row.log_offset, row.payload, msg,
                            row.profile_id)  # fmt: skip
            if item is not None and dest.connector.needs_traits:
                attach_traits(conn, [item])
    if refused is not None:
        outcome = f"filtered: {refused}"
    elif item is None:
        outcome = "dropped by a transformation for this destination"
    else:
        outcome = "sent"
    return {"log_offset": row.log_offset, "older": older, "message_id": row.message_id,
            "before": msg, "outcome": outcome,
            "after": item.message if item is not None else None}  # fmt: skip
