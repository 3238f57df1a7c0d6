"""Reading and writing a workspace's governance documents (the workspace file's
``tracking_plans``, ``transformations``, ``pii``, ``consent`` and ``retention``).

Every change is checked by compiling the whole configuration first, so nothing invalid is
ever stored. A tracking plan gets a new version whenever its content changes, and every
version is kept (tracking_plan_versions).
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from plait.govern.config import (
    PROTOCOLS_SOURCE,
    SECTIONS,
    check_keys,
    compile_governance,
    read_documents,
)
from plait.govern.pii import Keyring
from plait.store.db import now_ms
from plait.store.schema import tracking_plan_versions
from plait.store.workspaces import Workspaces, read_setting


def check(
    repo: Workspaces,
    workspace_id: str,
    sections: dict[str, Any],
    new_sources: list[str] = (),
    keyring: Keyring | None = None,
) -> None:
    """Raise Invalid (naming the field) unless the stored configuration with ``sections``
    in place compiles; ``new_sources`` are source names about to be created."""
    with repo.engine.connect() as conn:
        stored = read_documents(conn, workspace_id)  # JSON text, as the pipeline reads them
    docs = {key: orjson.loads(value) for key, value in stored.items()} | sections
    names = docs["sources"]
    for name in [*new_sources, *forwarding_sources(sections)]:
        names.setdefault(name, f"src_new_{len(names)}")
    compile_governance(workspace_id, docs)
    check_keys(docs.get("pii"), keyring)


def forwarding_sources(sections: dict[str, Any]) -> list[str]:
    """The sources the plans forward their violations to (a plan's ``forward_violations``:
    true for the default one, or a source name)."""
    names = []
    for plan in sections.get("tracking_plans") or []:
        target = plan.get("forward_violations") if isinstance(plan, dict) else None
        if target is True:
            names.append(PROTOCOLS_SOURCE)
        elif isinstance(target, str) and target:
            names.append(target)
    return names


def ensure_forwarding_sources(
    repo: Workspaces, workspace_id: str, sections: dict[str, Any]
) -> list[str]:
    """Create the forwarding sources that do not exist yet; returns their names."""
    existing = {s["name"] for s in repo.list_sources(workspace_id)}
    created = []
    for name in dict.fromkeys(forwarding_sources(sections)):
        if name not in existing:
            repo.create_source(workspace_id, name, "server")
            created.append(name)
    return created


def save(repo: Workspaces, workspace_id: str, sections: dict[str, Any]) -> list[str]:
    """Store the sections that changed; returns their keys. Call ``check`` first."""
    changed = []
    for key, value in sections.items():
        current = repo.get_setting(workspace_id, key)
        if key == "tracking_plans":
            value = _versioned(repo, workspace_id, value or [], current or [])
            if value is None:
                continue
        elif value == current:
            continue
        repo.put_setting(workspace_id, key, value)
        changed.append(key)
    return changed


def _unversioned(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k != "version"}


def _versioned(
    repo: Workspaces, workspace_id: str, plans: list[dict], current: list[dict]
) -> list[dict] | None:
    """The plans with their versions (a changed plan's goes up by one, and the new version
    is recorded), or None when nothing changed."""
    before = {plan["id"]: plan for plan in current}
    out, new_versions = [], []
    for plan in plans:
        old = before.get(plan["id"])
        if old is not None and _unversioned(old) == _unversioned(plan):
            out.append(old)
            continue
        version = (old or {}).get("version", 0) + 1
        versioned = {**_unversioned(plan), "version": version}
        out.append(versioned)
        new_versions.append(versioned)
    if out == current:
        return None
    rows = [
        {"workspace_id": workspace_id, "plan_id": p["id"], "version": p["version"],
         "doc": orjson.dumps(p).decode(), "created_at": now_ms()}
        for p in new_versions
    ]  # fmt: skip
    if rows:
        with repo.engine.begin() as conn:
            conn.execute(tracking_plan_versions.insert(), rows)
    return out


def plan_versions(conn: sa.Connection, workspace_id: str, plan_id: str) -> list[dict]:
    query = (
        sa.select(tracking_plan_versions)
        .where(
            tracking_plan_versions.c.workspace_id == workspace_id,
            tracking_plan_versions.c.plan_id == plan_id,
        )
        .order_by(tracking_plan_versions.c.version)
    )
    return [
        {"version": row.version, "created_at": row.created_at, "plan": orjson.loads(row.doc)}
        for row in conn.execute(query)
    ]


def export(repo: Workspaces, workspace_id: str) -> dict[str, Any]:
    """The sections that are set, for the workspace file."""
    with repo.engine.connect() as conn:
        return {
            key: value
            for key in SECTIONS
            if (value := read_setting(conn, workspace_id, key)) is not None
        }
