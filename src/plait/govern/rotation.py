"""Key rotation: encrypted values re-encrypted under the current key.

The log is append-only but for this and for privacy deletions. Operator unmerges
(identity_removals, and the unmerge entries of the lineage) name identifiers as stored, so
they are re-encrypted too: a rebuild keeps them and they must go on matching. The rest of the
derived state (identifiers, traits, governed payloads ...) holds the old ciphertexts as well:
``plait pii rotate-key`` rebuilds the workspace from the log afterwards, and also when
``stale_derived_state`` finds an old key's token there (a rotation stopped between the two).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa

from plait.govern.crypto import PREFIX, Keyring, PiiKeyError
from plait.store import Store
from plait.store.bulk import update_many
from plait.store.schema import (
    identifiers,
    identity_edges,
    identity_removals,
    lineage,
    log_messages,
    message_profiles,
    profiles,
    quarantine,
    trait_history,
    traits,
    violations,
)

CHUNK = 5000
_TOKEN_KEY = re.compile(r'"enc:v1:([A-Za-z0-9_-]{1,32}):')


@dataclass
class LogRotation:
    messages: int = 0  # log messages re-encrypted
    # Key ids of tokens the keyring does not hold (left as they are), and how many
    # messages have one.
    unknown_keys: set[str] = field(default_factory=set)
    unknown_messages: int = 0


def rotate_log(
    store: Store,
    workspace_id: str,
    keyring: Keyring,
    progress: Callable[[int], None] | None = None,
) -> LogRotation:
    """Re-encrypt the workspace's log under ``keyring``'s current key, a chunk per
    transaction (a rotation can be stopped and run again). Raises ``PiiKeyError`` (naming
    the log offset) for a token under a held key that does not decrypt."""
    result, after = LogRotation(), 0
    held = set(keyring.key_ids)
    query = (
        sa.select(log_messages.c.log_offset, log_messages.c.payload)
        .where(
            log_messages.c.workspace_id == workspace_id,
            log_messages.c.payload.contains(f'"{PREFIX}'),
        )
        .order_by(log_messages.c.log_offset)
        .limit(CHUNK)
    )
    while True:
        with store.write() as conn:
            rows = conn.execute(query.where(log_messages.c.log_offset > after)).all()
            if not rows:
                return result
            updates = []
            for offset, payload in rows:
                unknown = set(_TOKEN_KEY.findall(payload)) - held
                if unknown:
                    result.unknown_keys |= unknown
                    result.unknown_messages += 1
                try:
                    msg, rewritten = keyring.reencrypt_values(orjson.loads(payload), workspace_id)
                except PiiKeyError as exc:
                    raise PiiKeyError(f"log offset {offset}: {exc}") from None
                if rewritten:
                    updates.append((orjson.dumps(msg).decode(), offset))
            update_many(conn, log_messages, "payload", "log_offset", updates)
        result.messages += len(updates)
        after = rows[-1][0]
        if progress is not None:
            progress(len(rows))


def rotate_removals(store: Store, workspace_id: str, keyring: Keyring) -> int:
    """Re-encrypt the identifiers operators removed (``plait profiles unmerge``) and their
    lineage entries; returns the rows changed. Small tables: one transaction."""
    changed = 0

    def again(value: str | None) -> str | None:
        return keyring.reencrypt_values(value, workspace_id)[0] if value else value

    with store.write() as conn:
        query = sa.select(
            identity_removals.c.id, identity_removals.c.a_value, identity_removals.c.b_value
        ).where(identity_removals.c.workspace_id == workspace_id)
        for row_id, a_value, b_value in conn.execute(query).all():
            new_a, new_b = again(a_value), again(b_value)
            if (new_a, new_b) != (a_value, b_value):
                conn.execute(
                    identity_removals.update()
                    .where(identity_removals.c.id == row_id)
                    .values(a_value=new_a, b_value=new_b)
                )
                changed += 1
        query = sa.select(lineage.c.id, lineage.c.details).where(
            lineage.c.workspace_id == workspace_id,
            lineage.c.kind == "unmerge",
            lineage.c.details.contains(f'"{PREFIX}'),
        )
        for row_id, details in conn.execute(query).all():
            doc, rewritten = keyring.reencrypt_values(orjson.loads(details), workspace_id)
            if rewritten:
                conn.execute(
                    lineage.update()
                    .where(lineage.c.id == row_id)
                    .values(details=orjson.dumps(doc).decode())
                )
                changed += 1
    return changed


def stale_derived_state(conn: sa.Connection, workspace_id: str, keyring: Keyring) -> bool:
    """Whether the workspace's derived state still holds a token under one of the
    keyring's older keys (then it needs a rebuild from the rotated log)."""
    ids = sa.select(profiles.c.id).where(profiles.c.workspace_id == workspace_id)
    columns = [
        (identifiers.c.value, identifiers.c.workspace_id == workspace_id),
        (identity_edges.c.a_value, identity_edges.c.workspace_id == workspace_id),
        (identity_edges.c.b_value, identity_edges.c.workspace_id == workspace_id),
        (message_profiles.c.payload, message_profiles.c.workspace_id == workspace_id),
        (traits.c.value, traits.c.profile_id.in_(ids)),
        (trait_history.c.value, trait_history.c.profile_id.in_(ids)),
        (violations.c.description, violations.c.workspace_id == workspace_id),
        (quarantine.c.reason, quarantine.c.workspace_id == workspace_id),
        (lineage.c.details, lineage.c.workspace_id == workspace_id),
    ]
    for old in keyring.key_ids[1:]:
        token = f"{PREFIX}{old}:"
        for column, scope in columns:
            found = sa.select(sa.literal(1)).where(scope, column.contains(token, autoescape=True))
            if conn.execute(found.limit(1)).first() is not None:
                return True
    return False
