"""Console users: a role each (admin, editor, viewer), a password, and sessions.

Signing in makes a session: a token in ``tokens`` with the role's scopes, the user's id
and an end. Every page of the console calls the same API as any client, so the scopes
checked there are what enforces the role (a viewer's session lacks every write scope).
Changing a user's role or password, or disabling them, ends their sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import sqlalchemy as sa

from plait.ids import hash_secret, new_id, random_token
from plait.store.db import Store, now_ms
from plait.store.schema import tokens, users, workspaces
from plait.store.workspaces import SCOPES, TOKEN_PREFIX, Invalid, NotFound

READS = frozenset(s for s in SCOPES if s.endswith(":read") and s != "pii:read")
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin"}),
    # Everything but users, tokens and revealing encrypted PII.
    "editor": READS | frozenset(s for s in SCOPES if s.endswith(":write")) - {"tokens:write"},
    "viewer": READS,
}
SESSION_MS = 12 * 3600 * 1000
MIN_PASSWORD = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# scrypt's cost: ~50 ms a check on this machine, 16 MiB of memory.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    kind, n, r, p, salt, digest = stored.split("$")
    if kind != "scrypt":
        return False
    found = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                           p=int(p))  # fmt: skip
    return hmac.compare_digest(found.hex(), digest)


# A fixed hash to check against when the email is unknown, so that answering takes as long
# for an unknown email as for a wrong password.
_NOBODY = hash_password(random_token(20))


def _public(row) -> dict:
    return {"id": row.id, "email": row.email, "name": row.name, "role": row.role,
            "created_at": row.created_at, "disabled": row.disabled_at is not None}  # fmt: skip


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid("role", f"choose from {', '.join(ROLES)}")
    return role


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise Invalid("password", f"use at least {MIN_PASSWORD} characters")
    return password


class Users:
    def __init__(self, store: Store):
        self.engine = store.engine

    def create(self, workspace_id: str, email: str, role: str, password: str,
               name: str = "") -> dict:  # fmt: skip
        email = (email or "").strip().lower()
        if not _EMAIL.match(email):
            raise Invalid("email", "must be an email address")
        record = {"id": new_id("usr"), "workspace_id": workspace_id, "email": email,
                  "name": (name or "").strip()[:200] or email.split("@")[0],
                  "role": _check_role(role), "password_hash": hash_password(
                      _check_password(password)), "created_at": now_ms()}  # fmt: skip
        with self.engine.begin() as conn:
            taken = conn.execute(sa.select(users.c.id).where(
                users.c.workspace_id == workspace_id, users.c.email == email)).first()  # fmt: skip
            if taken:
                raise Invalid("email", f"{email} has an account already")
            conn.execute(users.insert().values(record))
        return self.get(workspace_id, record["id"])

    def list(self, workspace_id: str) -> list[dict]:
        query = sa.select(users).where(users.c.workspace_id == workspace_id)
        with self.engine.connect() as conn:
            return [_public(r) for r in conn.execute(query.order_by(users.c.created_at))]

    def get(self, workspace_id: str, ref: str) -> dict:
        """A user by id or email."""
        with self.engine.connect() as conn:
            return _public(self._row(conn, workspace_id, ref))

    def _row(self, conn: sa.Connection, workspace_id: str, ref: str):
        if "@" in ref:
            which = users.c.email == ref.strip().lower()
        else:
            which = users.c.id == ref
        query = sa.select(users).where(users.c.workspace_id == workspace_id, which)
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"user {ref!r} not found")
        return row

    def update(self, workspace_id: str, ref: str, role: str | None = None,
               password: str | None = None, disabled: bool | None = None,
               name: str | None = None) -> dict:  # fmt: skip
        """Change a user; a new role, password or disabling ends their sessions."""
        values: dict = {}
        if role is not None:
            values["role"] = _check_role(role)
        if password is not None:
            values["password_hash"] = hash_password(_check_password(password))
        if disabled is not None:
            values["disabled_at"] = now_ms() if disabled else None
        if name is not None:
            values["name"] = name.strip()[:200]
        with self.engine.begin() as conn:
            row = self._row(conn, workspace_id, ref)
            if values:
                conn.execute(users.update().where(users.c.id == row.id).values(values))
            if values.keys() & {"role", "password_hash", "disabled_at"}:
                end_sessions(conn, row.id)
            return _public(self._row(conn, workspace_id, row.id))

    def delete(self, workspace_id: str, ref: str) -> None:
        with self.engine.begin() as conn:
            row = self._row(conn, workspace_id, ref)
            end_sessions(conn, row.id)
            conn.execute(users.delete().where(users.c.id == row.id))

    def sign_in(self, email: str, password: str,
                workspace: str | None = None) -> tuple[dict, str, int]:  # fmt: skip
        """A new session for the user with this email (in ``workspace``, by slug, when
        the email has accounts in several): the user, the token's secret and its end."""
        email = (email or "").strip().lower()
        query = (
            sa.select(users, workspaces.c.slug)
            .join(workspaces, workspaces.c.id == users.c.workspace_id)
            .where(users.c.email == email)
        )
        if workspace:
            query = query.where(workspaces.c.slug == workspace)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if len(rows) > 1:
                raise Invalid("workspace", "this email has accounts in several workspaces: "
                              "name one")  # fmt: skip
            row = rows[0] if rows else None
            if not password_matches(password or "", row.password_hash if row else _NOBODY) \
                    or row is None or row.disabled_at is not None:  # fmt: skip
                raise PermissionError("wrong email or password, or the account is disabled")
            secret = TOKEN_PREFIX + random_token(40)
            now = now_ms()
            conn.execute(tokens.insert().values(
                id=new_id("tok"), workspace_id=row.workspace_id, name=f"console: {email}",
                token_hash=hash_secret(secret), scopes=" ".join(sorted(ROLES[row.role])),
                created_at=now, user_id=row.id, expires_at=now + SESSION_MS))  # fmt: skip
        return {**_public(row), "workspace": row.slug}, secret, now + SESSION_MS


def end_sessions(conn: sa.Connection, user_id: str) -> None:
    live = sa.and_(tokens.c.user_id == user_id, tokens.c.revoked_at.is_(None))
    conn.execute(tokens.update().where(live).values(revoked_at=now_ms()))


def role_of(scopes: frozenset[str]) -> str | None:
    """The role whose scopes these are (a session's), else None (an API token's own)."""
    return next((role for role, granted in ROLES.items() if granted == scopes), None)
