"""Operations on a workspace's computed traits and audiences, shared by the admin API and
the CLI: change the definitions (checked whole first), read memberships, history and a
profile's audiences, and preview an audience being written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from plait.audiences import batch
from plait.audiences.definitions import (
    SECTIONS,
    Definitions,
    check_references,
    compile_audience,
    compile_definitions,
)
from plait.audiences.language import to_text
from plait.lake import export_events, export_profiles
from plait.lake.writer import snapshot_age_ms
from plait.store import Store
from plait.store.db import now_ms
from plait.store.schema import (
    audience_history,
    audience_members,
    computed_values,
    log_messages,
    message_profiles,
    profiles,
    traits,
)
from plait.store.workspaces import Invalid, NotFound, Workspaces

PREVIEW_KEY = "preview_audience"


def documents(repo: Workspaces, workspace_id: str) -> dict[str, list]:
    return {key: repo.get_setting(workspace_id, key) or [] for key in SECTIONS}


def check(repo: Workspaces, workspace_id: str, sections: dict[str, Any]) -> Definitions:
    """Compile the stored definitions with ``sections`` in place; raises Invalid."""
    docs = documents(repo, workspace_id) | sections
    return compile_definitions(docs["computed_traits"], docs["audiences"])


def save(repo: Workspaces, workspace_id: str, sections: dict[str, Any]) -> list[str]:
    """Store the sections that changed (call ``check`` first); returns their keys. The
    pipeline's scheduler backfills what changed at its next tick."""
    changed = []
    for key, value in sections.items():
        value = value or []
        if value != (repo.get_setting(workspace_id, key) or []):
            repo.put_setting(workspace_id, key, value)
            changed.append(key)
    return changed


def _section_for(kind: str) -> str:
    return "audiences" if kind == "audience" else "computed_traits"


def put(repo: Workspaces, workspace_id: str, kind: str, doc: dict[str, Any]) -> bool:
    """Create or replace one definition (by its key); True when something changed."""
    section = _section_for(kind)
    items = documents(repo, workspace_id)[section]
    key = doc.get("key")
    if any(d.get("key") == key for d in items):  # replaced in its place in the list
        items = [doc if d.get("key") == key else d for d in items]
    else:
        items = [*items, doc]
    check(repo, workspace_id, {section: items})
    return bool(save(repo, workspace_id, {section: items}))


def delete(repo: Workspaces, workspace_id: str, kind: str, key: str) -> None:
    section = _section_for(kind)
    items = documents(repo, workspace_id)[section]
    kept = [d for d in items if d.get("key") != key]
    if len(kept) == len(items):
        raise NotFound(f"no {kind.replace('_', ' ')} {key!r}")
    check(repo, workspace_id, {section: kept})  # refuses when another definition names it
    save(repo, workspace_id, {section: kept})


def describe_audience(defs: Definitions, key: str) -> dict[str, Any]:
    audience = defs.audiences.get(key)
    if audience is None:
        raise NotFound(f"no audience {key!r}")
    return {
        "key": key,
        "name": audience.name,
        "definition": audience.text or to_text(audience.tree),
        "definition_json": audience.definition_json,
        "emit": audience.emit,
    }


def sizes(conn: sa.Connection, workspace_id: str) -> dict[str, int]:
    query = (
        sa.select(audience_members.c.audience_key, sa.func.count())
        .where(audience_members.c.workspace_id == workspace_id)
        .group_by(audience_members.c.audience_key)
    )
    return dict(conn.execute(query).all())


def members(
    conn: sa.Connection, workspace_id: str, key: str, limit: int = 100, after: str = ""
) -> list[dict[str, Any]]:
    query = (
        sa.select(audience_members.c.profile_id, audience_members.c.entered_at)
        .where(
            audience_members.c.workspace_id == workspace_id,
            audience_members.c.audience_key == key,
            audience_members.c.profile_id > after,
        )
        .order_by(audience_members.c.profile_id)
        .limit(limit)
    )
    return [{"profile_id": r.profile_id, "entered_at": r.entered_at} for r in conn.execute(query)]


def history(
    conn: sa.Connection, workspace_id: str, key: str, limit: int = 100,
    profile_id: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    h = audience_history
    query = sa.select(h.c.profile_id, h.c.change, h.c.at, h.c.reason).where(
        h.c.workspace_id == workspace_id, h.c.audience_key == key
    )
    if profile_id is not None:
        query = query.where(h.c.profile_id == profile_id)
    query = query.order_by(h.c.at.desc(), h.c.id.desc()).limit(limit)
    return [{"profile_id": r.profile_id, "change": r.change, "at": r.at, "reason": r.reason}
            for r in conn.execute(query)]  # fmt: skip


def daily_counts(conn: sa.Connection, workspace_id: str, key: str) -> list[dict[str, Any]]:
    """Entries and exits per UTC day (membership over time)."""
    h = audience_history
    day = (h.c.at / 86_400_000).cast(sa.BigInteger)
    query = (
        sa.select(day.label("day"), h.c.change, sa.func.count())
        .where(h.c.workspace_id == workspace_id, h.c.audience_key == key)
        .group_by(day, h.c.change)
        .order_by(day)
    )
    out: dict[int, dict[str, int]] = {}
    for d, change, n in conn.execute(query):
        out.setdefault(int(d), {"entered": 0, "exited": 0})[change] = n
    return [{"day": time.strftime("%Y-%m-%d", time.gmtime(d * 86400)), **v}
            for d, v in out.items()]  # fmt: skip


def profile_audiences(conn: sa.Connection, workspace_id: str, profile_id: str) -> dict:
    """The profile's audiences (with when it entered) and computed traits."""
    m, c = audience_members, computed_values
    audiences = [
        {"key": r.audience_key, "entered_at": r.entered_at}
        for r in conn.execute(
            sa.select(m.c.audience_key, m.c.entered_at)
            .where(m.c.workspace_id == workspace_id, m.c.profile_id == profile_id)
            .order_by(m.c.audience_key)
        )
    ]
    traits = {
        r.trait_key: orjson.loads(r.value)
        for r in conn.execute(
            sa.select(c.c.trait_key, c.c.value).where(
                c.c.workspace_id == workspace_id, c.c.profile_id == profile_id
            )
        )
    }
    return {"audiences": audiences, "computed_traits": traits}


def vocabulary(conn: sa.Connection, workspace_id: str, recent: int = 5000) -> dict[str, Any]:
    """What the workspace has seen, for writing definitions: track events by count with
    the property paths of their ``recent`` latest occurrences, and profile traits."""
    mp = message_profiles
    counted = conn.execute(
        sa.select(mp.c.event, sa.func.count())
        .where(mp.c.workspace_id == workspace_id, mp.c.type == "track", mp.c.event.is_not(None))
        .group_by(mp.c.event)
        .order_by(sa.func.count().desc())
        .limit(200)
    ).all()
    latest = conn.execute(
        sa.select(mp.c.event, sa.func.coalesce(mp.c.payload, log_messages.c.payload))
        .join(log_messages, log_messages.c.log_offset == mp.c.log_offset)
        .where(mp.c.workspace_id == workspace_id, mp.c.type == "track")
        .order_by(mp.c.log_offset.desc())
        .limit(recent)
    ).all()
    paths: dict[str, set[str]] = {}
    for event, payload in latest:
        found = paths.setdefault(event, set())
        _paths(orjson.loads(payload).get("properties") or {}, "", found)
    trait_counts = conn.execute(
        sa.select(traits.c.key, sa.func.count())
        .join(profiles, profiles.c.id == traits.c.profile_id)
        .where(profiles.c.workspace_id == workspace_id, profiles.c.merged_into.is_(None))
        .group_by(traits.c.key)
        .order_by(sa.func.count().desc())
        .limit(200)
    ).all()
    return {
        "events": [
            {"name": e, "count": n, "properties": sorted(paths.get(e, ()))} for e, n in counted
        ],  # fmt: skip
        "traits": [{"key": k, "count": n} for k, n in trait_counts],
    }


def _paths(value: Any, prefix: str, found: set[str], depth: int = 0) -> None:
    """Dotted paths of an object's leaves, two levels deep (what a definition can name)."""
    if not isinstance(value, dict) or depth > 1:
        return
    for key, inner in value.items():
        path = f"{prefix}{key}"
        if isinstance(inner, dict) and inner and depth < 1:
            _paths(inner, f"{path}.", found, depth + 1)
        else:
            found.add(path)


def fresh_lake(store: Store, workspace_id: str, lake_dir: Path, snapshot_seconds: float) -> None:
    """The lake with the workspace's latest processed events, and a profile snapshot no
    older than ``snapshot_seconds``."""
    export_events(store, workspace_id, lake_dir)
    age = snapshot_age_ms(lake_dir, workspace_id)
    if age is None or age > snapshot_seconds * 1000:
        export_profiles(store, workspace_id, lake_dir)


def preview(
    store: Store, workspace_id: str, lake_dir: Path, definition: Any,
    snapshot_seconds: float = 60.0, sample: int = 10, now: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Size and sample of an audience being written (text or JSON form), over the lake."""
    repo = Workspaces(store)
    defs = check(repo, workspace_id, {})
    try:
        audience = compile_audience({"key": PREVIEW_KEY, "definition": definition},
                                    "audience", set())  # fmt: skip
    except Invalid as exc:
        raise Invalid("definition", exc.message) from None
    check_references(defs, audience.tree, "definition")
    started = time.perf_counter()
    fresh_lake(store, workspace_id, Path(lake_dir), snapshot_seconds)
    result = batch.preview(lake_dir, workspace_id, defs, audience, now or now_ms(), sample)
    result["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result
