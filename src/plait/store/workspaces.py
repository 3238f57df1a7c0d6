"""Workspaces, sources, write keys and tokens: the repository both the API and CLI use."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from plait.ids import hash_secret, new_id, random_token
from plait.store.db import Store, now_ms
from plait.store.schema import sources, tokens, workspace_settings, workspaces, write_keys
from plait.store.upsert import upsert

SOURCE_TYPES = frozenset(
    {
        "javascript", "python", "node", "go", "java", "ruby", "php", "ios", "android",
        "react-native", "http", "webhook", "pixel", "file", "database", "server",
    }
)  # fmt: skip
# A token with "admin" may do everything in its workspace.
SCOPES = frozenset(
    {
        "admin", "sources:read", "sources:write", "tokens:write", "config:write", "events:read",
        "profiles:read", "profiles:write", "governance:read", "governance:write",
        "privacy:read", "privacy:write", "pii:read", "audit:read", "lake:read",
        "audiences:read", "audiences:write", "destinations:read", "destinations:write",
        "syncs:read", "syncs:write",
    }
)  # fmt: skip
TOKEN_PREFIX = "plt_"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


class NotFound(LookupError):
    pass


class Invalid(ValueError):
    """Input the caller can fix; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class SourceAuth:
    """What a write key opens: the source and its workspace."""

    source_id: str
    workspace_id: str
    enabled: bool
    source_type: str


@dataclass(frozen=True, slots=True)
class TokenAuth:
    token_id: str
    workspace_id: str
    scopes: frozenset[str]
    user_id: str | None = None  # a console user's session

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def actor(self) -> str:
        """Who the audit log names: the console user, else the API token."""
        return self.user_id or self.token_id


def _row(row) -> dict:
    # Plain str keys: SQLAlchemy 2.1 gives quoted_name keys, which orjson refuses.
    return {str(k): v for k, v in row._mapping.items()} if row is not None else None


class Workspaces:
    def __init__(self, store: Store):
        self.store = store
        self.engine = store.engine

    # Workspaces ------------------------------------------------------------------------

    def create_workspace(self, slug: str, name: str | None = None) -> dict:
        if not _SLUG.match(slug):
            raise Invalid("slug", "use lower-case letters, digits and dashes (1-100)")
        record = {"id": new_id("ws"), "slug": slug, "name": name or slug, "created_at": now_ms()}
        with self.engine.begin() as conn:
            if conn.execute(sa.select(workspaces.c.id).where(workspaces.c.slug == slug)).first():
                raise Invalid("slug", f"workspace {slug!r} exists")
            conn.execute(workspaces.insert().values(record))
        return record

    def update_workspace(self, workspace_id: str, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                workspaces.update().where(workspaces.c.id == workspace_id).values(name=name)
            )

    def get_workspace(self, ref: str) -> dict:
        """By id or slug."""
        with self.engine.connect() as conn:
            return read_workspace(conn, ref)

    def get_setting(self, workspace_id: str, key: str) -> dict | None:
        """A workspace's configuration document (e.g. ``identity``), None if never set."""
        with self.engine.connect() as conn:
            return read_setting(conn, workspace_id, key)

    def put_setting(self, workspace_id: str, key: str, value: dict) -> None:
        row = {"workspace_id": workspace_id, "key": key, "value": orjson.dumps(value).decode(),
               "updated_at": now_ms()}  # fmt: skip
        with self.engine.begin() as conn:
            upsert(conn, workspace_settings, [row], ["workspace_id", "key"])

    def list_workspaces(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [
                _row(r) for r in conn.execute(sa.select(workspaces).order_by(workspaces.c.slug))
            ]

    # Sources ---------------------------------------------------------------------------

    def create_source(
        self, workspace_id: str, name: str, type: str, enabled: bool = True
    ) -> tuple[dict, str]:
        """Create a source with one write key; returns the source and the key (shown once)."""
        _check_source(name, type)
        now = now_ms()
        record = {
            "id": new_id("src"),
            "workspace_id": workspace_id,
            "name": name,
            "type": type,
            "enabled": enabled,
            "created_at": now,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(sources.c.id).where(
                    sources.c.workspace_id == workspace_id, sources.c.name == name
                )
            ).first()
            if exists:
                raise Invalid("name", f"a source named {name!r} exists")
            conn.execute(sources.insert().values(record))
            key = self._insert_key(conn, record["id"])
        return record, key

    def list_sources(self, workspace_id: str) -> list[dict]:
        query = sa.select(sources).where(sources.c.workspace_id == workspace_id)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query.order_by(sources.c.name))]

    def get_source(self, workspace_id: str, ref: str) -> dict:
        """By id or name, within the workspace."""
        query = sa.select(sources).where(
            sources.c.workspace_id == workspace_id,
            sa.or_(sources.c.id == ref, sources.c.name == ref),
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"source {ref!r} not found")
        return _row(row)

    def update_source(self, workspace_id: str, ref: str, **changes) -> dict:
        source = self.get_source(workspace_id, ref)
        changes = {k: v for k, v in changes.items() if v is not None}
        _check_source(changes.get("name", source["name"]), changes.get("type", source["type"]))
        if "enabled" in changes and not isinstance(changes["enabled"], bool):
            raise Invalid("enabled", "must be true or false")
        if changes:
            with self.engine.begin() as conn:
                name = changes.get("name", source["name"])
                taken = sa.select(sources.c.id).where(
                    sources.c.workspace_id == workspace_id, sources.c.name == name
                )
                if name != source["name"] and conn.execute(taken).first():
                    raise Invalid("name", f"a source named {name!r} exists")
                conn.execute(
                    sources.update()
                    .where(sources.c.id == source["id"])
                    .values(**changes, updated_at=now_ms())
                )
        return self.get_source(workspace_id, source["id"])

    # Write keys ------------------------------------------------------------------------

    def _insert_key(self, conn, source_id: str) -> str:
        secret = random_token(32)
        conn.execute(
            write_keys.insert().values(
                id=new_id("key"),
                source_id=source_id,
                key_hash=hash_secret(secret),
                hint=secret[-4:],
                created_at=now_ms(),
            )
        )
        return secret

    def create_write_key(self, workspace_id: str, source_ref: str) -> str:
        source = self.get_source(workspace_id, source_ref)
        with self.engine.begin() as conn:
            return self._insert_key(conn, source["id"])

    def list_write_keys(self, workspace_id: str, source_ref: str) -> list[dict]:
        source = self.get_source(workspace_id, source_ref)
        query = (
            sa.select(write_keys.c.id, write_keys.c.hint, write_keys.c.created_at,
                      write_keys.c.revoked_at)
            .where(write_keys.c.source_id == source["id"])
            .order_by(write_keys.c.created_at)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def revoke_write_key(self, workspace_id: str, source_ref: str, key_id: str) -> None:
        source = self.get_source(workspace_id, source_ref)
        with self.engine.begin() as conn:
            result = conn.execute(
                write_keys.update()
                .where(write_keys.c.id == key_id, write_keys.c.source_id == source["id"])
                .where(write_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
        if result.rowcount == 0:
            raise NotFound(f"active write key {key_id!r} not found on source {source_ref!r}")

    def rotate_write_key(self, workspace_id: str, source_ref: str) -> tuple[str, list[str]]:
        """A new key, and every older active key revoked; returns the key and the revoked ids."""
        source = self.get_source(workspace_id, source_ref)
        with self.engine.begin() as conn:
            old = [
                r.id
                for r in conn.execute(
                    sa.select(write_keys.c.id).where(
                        write_keys.c.source_id == source["id"], write_keys.c.revoked_at.is_(None)
                    )
                )
            ]
            conn.execute(
                write_keys.update().where(write_keys.c.id.in_(old)).values(revoked_at=now_ms())
            )
            secret = self._insert_key(conn, source["id"])
        return secret, old

    def authenticate_write_key(self, secret: str) -> SourceAuth | None:
        """The source an active write key belongs to, or None (unknown or revoked)."""
        query = (
            sa.select(sources.c.id, sources.c.workspace_id, sources.c.enabled, sources.c.type)
            .join(write_keys, write_keys.c.source_id == sources.c.id)
            .where(write_keys.c.key_hash == hash_secret(secret), write_keys.c.revoked_at.is_(None))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return SourceAuth(row.id, row.workspace_id, bool(row.enabled), row.type) if row else None

    # Tokens ----------------------------------------------------------------------------

    def create_token(self, workspace_id: str, name: str, scopes: list[str]) -> tuple[dict, str]:
        unknown = set(scopes) - SCOPES
        if not scopes or unknown:
            raise Invalid("scopes", f"choose from {', '.join(sorted(SCOPES))}")
        secret = TOKEN_PREFIX + random_token(40)
        record = {
            "id": new_id("tok"),
            "workspace_id": workspace_id,
            "name": name,
            "token_hash": hash_secret(secret),
            "scopes": " ".join(sorted(set(scopes))),
            "created_at": now_ms(),
        }
        with self.engine.begin() as conn:
            conn.execute(tokens.insert().values(record))
        return _public_token(record), secret

    def list_tokens(self, workspace_id: str) -> list[dict]:
        query = sa.select(tokens).where(tokens.c.workspace_id == workspace_id)
        with self.engine.connect() as conn:
            return [
                _public_token(_row(r)) for r in conn.execute(query.order_by(tokens.c.created_at))
            ]

    def revoke_token(self, workspace_id: str, token_id: str) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                tokens.update()
                .where(tokens.c.id == token_id, tokens.c.workspace_id == workspace_id)
                .where(tokens.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
        if result.rowcount == 0:
            raise NotFound(f"active token {token_id!r} not found")

    def authenticate_token(self, secret: str) -> TokenAuth | None:
        with self.engine.connect() as conn:
            return read_token(conn, secret)


def read_workspace(conn: sa.Connection, ref: str) -> dict:
    """``Workspaces.get_workspace`` inside a caller's transaction."""
    query = sa.select(workspaces).where(sa.or_(workspaces.c.id == ref, workspaces.c.slug == ref))
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(f"workspace {ref!r} not found")
    return _row(row)


def read_token(conn: sa.Connection, secret: str) -> TokenAuth | None:
    """``Workspaces.authenticate_token`` inside a caller's transaction."""
    query = sa.select(
        tokens.c.id, tokens.c.workspace_id, tokens.c.scopes, tokens.c.user_id, tokens.c.expires_at
    ).where(tokens.c.token_hash == hash_secret(secret), tokens.c.revoked_at.is_(None))
    row = conn.execute(query).first()
    if row is None or (row.expires_at is not None and row.expires_at <= now_ms()):
        return None
    return TokenAuth(row.id, row.workspace_id, frozenset(row.scopes.split()), row.user_id)


def read_setting(conn: sa.Connection, workspace_id: str, key: str) -> dict | None:
    """``Workspaces.get_setting`` inside a caller's transaction."""
    query = sa.select(workspace_settings.c.value).where(
        workspace_settings.c.workspace_id == workspace_id, workspace_settings.c.key == key
    )
    value = conn.execute(query).scalar()
    return None if value is None else orjson.loads(value)


def _public_token(record: dict) -> dict:
    public = {k: v for k, v in record.items() if k != "token_hash"}
    public["scopes"] = record["scopes"].split()
    public.setdefault("revoked_at", None)
    return public


def _check_source(name: str, type: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise Invalid("name", "must be a non-empty string of at most 200 characters")
    if type not in SOURCE_TYPES:
        raise Invalid("type", f"must be one of {', '.join(sorted(SOURCE_TYPES))}")
