"""First start: a demo workspace with a source and an admin token, so Plait is usable at once."""

from __future__ import annotations

from dataclasses import dataclass

from plait.store.workspaces import NotFound, Workspaces

DEMO_SLUG = "demo"


@dataclass
class Bootstrap:
    workspace_id: str
    source_id: str
    write_key: str | None  # None when the workspace already existed: keys are shown once
    admin_token: str | None


def ensure_demo(repo: Workspaces) -> Bootstrap:
    try:
        workspace = repo.get_workspace(DEMO_SLUG)
    except NotFound:
        workspace = repo.create_workspace(DEMO_SLUG, "Demo workspace")
        source, key = repo.create_source(workspace["id"], "Demo website", "javascript")
        _, token = repo.create_token(workspace["id"], "demo admin", ["admin"])
        return Bootstrap(workspace["id"], source["id"], key, token)
    sources = repo.list_sources(workspace["id"])
    return Bootstrap(workspace["id"], sources[0]["id"] if sources else "", None, None)
