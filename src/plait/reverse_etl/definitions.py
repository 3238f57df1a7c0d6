"""A workspace's reverse ETL syncs: their definitions (the ``reverse_etl`` setting),
checked whole, stored, masked for display."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from plait.collect.files import (
    FileImportError,
    parse_map,
)
from plait.destinations.config import (
    KEY,
    compile_destinations,
    compile_keyed,
    duration_seconds,
)
from plait.destinations.config import SECTION as DESTINATIONS
from plait.store.schema import sync_runs
from plait.store.workspaces import Invalid, NotFound, Workspaces

SECTION = "reverse_etl"
ENV = "env:"  # a database URL read from this environment variable
FIELDS = {"key", "source", "query", "database", "cursor", "type", "map", "event", "every",
          "destination", "enabled", "chunk_size"}  # fmt: skip
COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_CHUNK = 1000


class SyncError(Exception):
    """A run that could not read its rows (the query, the database): the message says why."""


@dataclass(frozen=True)
class Sync:
    key: str
    source: str  # a source's name or id
    query: str
    msg_type: str
    fields: dict[str, str]
    database: str | None = None
    cursor: str | None = None
    event: str | None = None
    every_seconds: float | None = None
    destination: str | None = None
    enabled: bool = True
    chunk_size: int = DEFAULT_CHUNK


def compile_sync(doc: Any, where: str) -> Sync:
    if not isinstance(doc, dict):
        raise Invalid(where, "must be a mapping")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise Invalid(f"{where}.{unknown[0]}",
                      f"unknown field; expected {', '.join(sorted(FIELDS))}")  # fmt: skip
    key = doc.get("key")
    if not isinstance(key, str) or not KEY.match(key):
        raise Invalid(f"{where}.key", "required: 1 to 100 of a-z, 0-9 and _")
    for name in ("source", "query"):
        if not isinstance(doc.get(name), str) or not doc[name].strip():
            raise Invalid(f"{where}.{name}", "required: a non-empty string")
    msg_type = doc.get("type", "identify")
    if msg_type not in ("identify", "track"):
        raise Invalid(f"{where}.type", "must be identify or track")
    mapping = doc.get("map") or {}
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise Invalid(f"{where}.map", "must map fields (userId, traits.email …) to columns")
    try:
        fields = parse_map([f"{k}={v}" for k, v in mapping.items()])
    except FileImportError as exc:
        raise Invalid(f"{where}.map", str(exc).replace("--map", "map")) from None
    cursor = doc.get("cursor")
    if cursor is not None and (not isinstance(cursor, str) or not COLUMN.fullmatch(cursor)):
        raise Invalid(f"{where}.cursor", "a column name (letters, digits and _)")
    event = doc.get("event")
    if event is not None and (msg_type != "track" or not isinstance(event, str) or not event):
        raise Invalid(f"{where}.event", "the event name of a track sync (a non-empty string)")
    database = doc.get("database")
    if database is not None:
        if not isinstance(database, str):
            raise Invalid(f"{where}.database", "a database URL such as postgresql://…")
        if not database.startswith(ENV):  # env:NAME is read when the sync runs
            _url(database, f"{where}.database")
    every = doc.get("every")
    every_seconds = None if every is None else duration_seconds(every, f"{where}.every")
    if every_seconds is not None and every_seconds < 60:
        raise Invalid(f"{where}.every", "at least a minute")
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise Invalid(f"{where}.enabled", "must be true or false")
    chunk = doc.get("chunk_size", DEFAULT_CHUNK)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= 100_000:
        raise Invalid(f"{where}.chunk_size", "1 to 100,000 rows")
    destination = doc.get("destination")
    if destination is not None and not isinstance(destination, str):
        raise Invalid(f"{where}.destination", "a destination's key")
    return Sync(key=key, source=doc["source"], query=doc["query"].strip().rstrip(";"),
                msg_type=msg_type, fields=fields, database=database, cursor=cursor,
                event=event, every_seconds=every_seconds, destination=destination,
                enabled=enabled, chunk_size=chunk)  # fmt: skip


def _url(text: str, where: str) -> sa.engine.URL:
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError:
        raise Invalid(where, "not a database URL") from None
    if url.get_backend_name() not in ("postgresql", "sqlite", "mysql", "mariadb"):
        raise Invalid(where, "postgresql://, mysql://, mariadb:// or sqlite:// (or env:NAME)")
    return url


def database_url(sync: Sync) -> str:
    """The sync's database URL, from the environment variable an ``env:NAME`` names."""
    text = sync.database or ""
    if text.startswith(ENV):
        name = text.removeprefix(ENV)
        if not os.environ.get(name):
            raise SyncError(f"the environment variable {name} (the database URL) is not set")
        text = os.environ[name]
        _url(text, "database")
    return text


def masked(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with the database URL's password masked (for the API and the export;
    saved back masked, it keeps the stored password)."""
    database = doc.get("database")
    if not isinstance(database, str) or database.startswith(ENV):
        return doc
    try:
        url = sa.engine.make_url(database)
    except sa.exc.ArgumentError:
        return doc
    if url.password is None:
        return doc
    return {**doc, "database": url.render_as_string(hide_password=True)}  # password: ***


def _unmasked(doc: Any, old: list[dict[str, Any]]) -> Any:
    if not isinstance(doc, dict) or ":***@" not in str(doc.get("database", "")):
        return doc
    before = next((d for d in old if d.get("key") == doc.get("key")), None)
    if before is not None and masked(before).get("database") == doc["database"]:
        return {**doc, "database": before["database"]}
    return doc


def compile_syncs(docs: Any) -> dict[str, Sync]:
    return compile_keyed(docs, SECTION, "syncs", compile_sync)


def documents(repo: Workspaces, workspace_id: str) -> list[dict[str, Any]]:
    return repo.get_setting(workspace_id, SECTION) or []


def check(repo: Workspaces, workspace_id: str, docs: Any,
          source_names: set[str] = frozenset()) -> dict[str, Sync]:  # fmt: skip
    """The section compiled, its sources and destinations checked (``source_names``: sources
    a workspace file creates with it)."""
    syncs = compile_syncs(docs)
    known = repo.list_sources(workspace_id)
    sources = {s["name"] for s in known} | {s["id"] for s in known} | set(source_names)
    targets = compile_destinations(repo.get_setting(workspace_id, DESTINATIONS) or [])
    for i, sync in enumerate(syncs.values()):
        if sync.source not in sources:
            raise Invalid(f"{SECTION}[{i}].source", f"no source {sync.source!r}")
        if sync.destination is not None:
            dest = targets.get(sync.destination)
            if dest is None:
                raise Invalid(f"{SECTION}[{i}].destination",
                              f"no destination {sync.destination!r}")  # fmt: skip
            if sync.msg_type not in dest.types and dest.types:
                raise Invalid(
                    f"{SECTION}[{i}].type",
                    f"destination {dest.key!r} does not take {sync.msg_type}",
                )
    return syncs


def save(repo: Workspaces, workspace_id: str, docs: list[dict[str, Any]]) -> bool:
    """Check the whole section, then store it; True when it changed. A removed sync's
    cursor goes with it (added again, it starts over)."""
    old = documents(repo, workspace_id)
    docs = [_unmasked(d, old) for d in docs]
    syncs = check(repo, workspace_id, docs)
    if docs == old:
        return False
    repo.put_setting(workspace_id, SECTION, docs)
    with repo.store.write() as conn:
        conn.execute(
            sync_runs.delete().where(
                sync_runs.c.workspace_id == workspace_id,
                sync_runs.c.sync.not_in(list(syncs) or [""]),
            )
        )
    return True


def put(repo: Workspaces, workspace_id: str, doc: dict[str, Any]) -> bool:
    docs = [d for d in documents(repo, workspace_id) if d.get("key") != doc.get("key")]
    return save(repo, workspace_id, [*docs, doc])


def delete(repo: Workspaces, workspace_id: str, key: str) -> None:
    docs = documents(repo, workspace_id)
    if not any(d.get("key") == key for d in docs):
        raise NotFound(f"no sync {key!r}")
    save(repo, workspace_id, [d for d in docs if d.get("key") != key])
