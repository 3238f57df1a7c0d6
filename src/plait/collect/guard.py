"""What governance does before a message reaches the log: the workspace's PII policy (so
the log never holds what it masks, hashes, drops or encrypts) and suppressions (a suppressed
person's messages are rejected).

Both are per workspace and cached briefly, so a request for a workspace with neither pays
one dict lookup. A message is checked after it is enriched (context.ip included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa

from plait.govern.config import GovernanceCache
from plait.govern.identity_hash import identity_hash
from plait.govern.pii import Keyring
from plait.govern.privacy import SuppressionCache
from plait.identity.identifiers import extract
from plait.log.backends import Row
from plait.observability import GOVERNED_MESSAGES

SUPPRESSED = "suppressed"
# A guard gets a fresh copy of the message about to be written; it changes it in place and
# returns the code of a rejection, or None to let it through.
Guard = Callable[[dict[str, Any]], str | None]


class IngestGuards:
    def __init__(self, engine: sa.Engine, ttl_seconds: float, keyring: Keyring | None):
        self.engine = engine
        self.keyring = keyring
        self.governance = GovernanceCache(ttl_seconds, keyring)
        self.suppressions = SuppressionCache(engine, ttl_seconds)

    def for_source(self, workspace_id: str, source_id: str) -> Guard | None:
        """The guard for one source's messages, or None when there is nothing to do."""
        governance = self.governance.get(self.engine, workspace_id)
        policy = governance.pii_for(source_id)
        suppressed = self.suppressions.hashes(workspace_id)
        if policy is None and not suppressed:
            return None
        keyring, rules = self.keyring, governance.rules

        def is_suppressed(msg: dict[str, Any]) -> bool:
            return any(
                identity_hash(workspace_id, type_name, value) in suppressed
                for type_name, value in extract(msg, rules)
            )

        def guard(msg: dict[str, Any]) -> str | None:
            # Suppressions hold identities as sent and as the policy stores them (hashed,
            # encrypted): both forms are checked.
            if suppressed and is_suppressed(msg):
                GOVERNED_MESSAGES.labels(SUPPRESSED).inc()
                return SUPPRESSED
            if policy is not None:
                policy.apply(msg, keyring, workspace_id)
                if suppressed and is_suppressed(msg):
                    GOVERNED_MESSAGES.labels(SUPPRESSED).inc()
                    return SUPPRESSED
            return None

        return guard


def guarded_row(row: Row, guard: Guard) -> Row | str:
    """The row with its payload as the guard leaves it, or the guard's rejection code. The
    guard works on a parse of the payload: a fresh copy, never the objects a batch's
    messages share (a batch-level context is merged into each of them)."""
    msg = orjson.loads(row[5])
    code = guard(msg)
    if code is not None:
        return code
    return (*row[:5], orjson.dumps(msg).decode())
