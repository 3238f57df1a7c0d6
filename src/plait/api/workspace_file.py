"""A workspace as YAML: applied idempotently (``plait apply``) and exported (``plait export``).

    workspace: {slug: acme, name: Acme Inc.}
    sources:
      - {name: Website, type: javascript, enabled: true}
    identity:                     # identity resolution rules (plait.identity.rules)
      identifiers: {anonymous_id: {limit: 5, window: weekly}}
    tracking_plans: [...]         # governance (plait.govern): see the README
    transformations: [...]
    pii: {...}
    consent: {...}
    retention: {days: 365}
    computed_traits: [...]        # computed traits and audiences (plait.audiences)
    audiences: [...]
    destinations: [...]           # delivery (plait.destinations; secrets exported masked)
    reverse_etl: [...]            # scheduled SQL into the pipeline (plait.reverse_etl)

Sources are matched by name. A new source gets a write key, returned once by ``apply``;
keys are secrets and never appear in the file. Sources missing from the file are left as
they are, unless ``prune`` is asked for: then they are disabled (never deleted: the log
keeps referring to them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from plait import reverse_etl
from plait.audiences import manage as audience_docs
from plait.audiences.definitions import SECTIONS as AUDIENCE_SECTIONS
from plait.destinations import manage as destination_docs
from plait.destinations.config import SECTION as DESTINATIONS
from plait.destinations.config import compile_destinations, masked
from plait.govern import documents
from plait.govern.config import SECTIONS
from plait.identity.rules import RulesError, default_rules, from_dict
from plait.store.workspaces import Invalid, NotFound, Workspaces


@dataclass
class ApplyResult:
    workspace_id: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    new_write_keys: dict[str, str] = field(default_factory=dict)  # source name -> key

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.disabled)


def identity_rules(repo: Workspaces, workspace_id: str) -> dict[str, Any]:
    """The workspace's identity rules document: as stored, or the defaults if never set."""
    return repo.get_setting(workspace_id, "identity") or default_rules().to_dict()


def parse(text: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid("yaml", str(exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("workspace"), dict):
        raise Invalid("workspace", "the file needs a workspace: {slug, name} mapping")
    if not isinstance(doc.get("sources", []), list):
        raise Invalid("sources", "must be a list")
    if "identity" in doc:
        try:
            from_dict(doc["identity"])
        except RulesError as exc:
            raise Invalid(exc.field, exc.reason) from None
    return doc


def apply(repo: Workspaces, doc: dict[str, Any], prune: bool = False, keyring=None) -> ApplyResult:
    spec = doc["workspace"]
    slug = spec.get("slug")
    if not isinstance(slug, str):
        raise Invalid("workspace.slug", "is required")
    try:
        workspace = repo.get_workspace(slug)
        if spec.get("name") and spec["name"] != workspace["name"]:
            repo.update_workspace(workspace["id"], spec["name"])
    except NotFound:
        workspace = repo.create_workspace(slug, spec.get("name"))
    result = ApplyResult(workspace["id"])
    governance = {key: doc[key] for key in SECTIONS if key in doc}
    if governance:  # checked whole before anything changes
        names = [s.get("name") for s in doc.get("sources") or [] if isinstance(s, dict)]
        documents.check(repo, workspace["id"], governance, names, keyring)
    audiences = {key: doc[key] for key in AUDIENCE_SECTIONS if key in doc}
    if audiences:
        audience_docs.check(repo, workspace["id"], audiences)
    if DESTINATIONS in doc:
        compile_destinations(doc[DESTINATIONS])
    if reverse_etl.SECTION in doc:
        reverse_etl.compile_syncs(doc[reverse_etl.SECTION])
    existing = {s["name"]: s for s in repo.list_sources(workspace["id"])}
    listed = set()
    for index, item in enumerate(doc.get("sources") or []):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise Invalid(f"sources[{index}].name", "each source needs a name")
        name = item["name"]
        listed.add(name)
        wanted = {"type": item.get("type", "http"), "enabled": item.get("enabled", True)}
        if not isinstance(wanted["enabled"], bool):
            raise Invalid(f"sources[{index}].enabled", "must be true or false")
        if name not in existing:
            _, key = repo.create_source(workspace["id"], name, wanted["type"], wanted["enabled"])
            result.created.append(name)
            result.new_write_keys[name] = key
        elif any(existing[name][k] != v for k, v in wanted.items()):
            repo.update_source(workspace["id"], name, **wanted)
            result.updated.append(name)
    if "identity" in doc:
        # Stored in the normalized form, so an unchanged section is no change.
        rules = from_dict(doc["identity"]).to_dict()
        if rules != identity_rules(repo, workspace["id"]):
            repo.put_setting(workspace["id"], "identity", rules)
            result.updated.append("identity")
    if governance:
        result.created += documents.ensure_forwarding_sources(repo, workspace["id"], governance)
        result.updated += documents.save(repo, workspace["id"], governance)
    if audiences:
        result.updated += audience_docs.save(repo, workspace["id"], audiences)
    if DESTINATIONS in doc:
        if destination_docs.save(repo, workspace["id"], doc[DESTINATIONS] or []):
            result.updated.append(DESTINATIONS)
    if reverse_etl.SECTION in doc:  # after the sources and destinations it names
        if reverse_etl.save(repo, workspace["id"], doc[reverse_etl.SECTION] or []):
            result.updated.append(reverse_etl.SECTION)
    if prune:
        for name, source in existing.items():
            if name not in listed and source["enabled"]:
                repo.update_source(workspace["id"], name, enabled=False)
                result.disabled.append(name)
    return result


def export(repo: Workspaces, workspace_ref: str) -> str:
    workspace = repo.get_workspace(workspace_ref)
    doc = {
        "workspace": {"slug": workspace["slug"], "name": workspace["name"]},
        "sources": [
            {"name": s["name"], "type": s["type"], "enabled": bool(s["enabled"])}
            for s in repo.list_sources(workspace["id"])
        ],
        "identity": identity_rules(repo, workspace["id"]),
        **documents.export(repo, workspace["id"]),
        **{k: v for k, v in audience_docs.documents(repo, workspace["id"]).items() if v},
    }
    if found := destination_docs.documents(repo, workspace["id"]):
        doc[DESTINATIONS] = [masked(d) for d in found]  # applied back, masks keep secrets
    if found := reverse_etl.documents(repo, workspace["id"]):
        doc[reverse_etl.SECTION] = [reverse_etl.masked(d) for d in found]
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
