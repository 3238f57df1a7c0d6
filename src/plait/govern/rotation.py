"""Key rotation: the log's encrypted values re-encrypted under the current key.

The log is append-only but for this and for privacy deletions. Derived state holds the old
ciphertexts too (identifiers, traits): ``plait pii rotate-key`` rebuilds the workspace from
the log afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import sqlalchemy as sa

from plait.govern.pii import Keyring
from plait.store import Store
from plait.store.bulk import update_many
from plait.store.schema import log_messages

CHUNK = 5000


def rotate_log(
    store: Store,
    workspace_id: str,
    keyring: Keyring,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Re-encrypt the workspace's log under ``keyring``'s current key, a chunk per
    transaction (a rotation can be stopped and run again); returns the messages changed."""
    changed, after = 0, 0
    query = (
        sa.select(log_messages.c.log_offset, log_messages.c.payload)
        .where(
            log_messages.c.workspace_id == workspace_id,
            log_messages.c.payload.contains('"enc:v1:'),
        )
        .order_by(log_messages.c.log_offset)
        .limit(CHUNK)
    )
    while True:
        with store.write() as conn:
            rows = conn.execute(query.where(log_messages.c.log_offset > after)).all()
            if not rows:
                return changed
            updates = []
            for offset, payload in rows:
                msg, rewritten = keyring.reencrypt_values(orjson.loads(payload), workspace_id)
                if rewritten:
                    updates.append((orjson.dumps(msg).decode(), offset))
            update_many(conn, log_messages, "payload", "log_offset", updates)
        changed += len(updates)
        after = rows[-1][0]
        if progress is not None:
            progress(len(rows))
