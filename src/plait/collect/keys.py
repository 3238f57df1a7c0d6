"""Write key lookups, cached briefly so the hot path rarely touches the store."""

from __future__ import annotations

import time

from plait.store.workspaces import SourceAuth, Workspaces


class WriteKeyCache:
    def __init__(self, workspaces: Workspaces, ttl_seconds: float):
        self.workspaces = workspaces
        self.ttl = ttl_seconds
        self._entries: dict[str, tuple[float, SourceAuth | None]] = {}

    def lookup(self, write_key: str) -> SourceAuth | None:
        """The source of an active key, or None; unknown keys are cached too (bounded)."""
        now = time.monotonic()
        entry = self._entries.get(write_key)
        if entry is not None and entry[0] > now:
            return entry[1]
        auth = self.workspaces.authenticate_write_key(write_key)
        if len(self._entries) > 10_000:  # a flood of random keys must not grow memory
            self._entries.clear()
        self._entries[write_key] = (now + self.ttl, auth)
        return auth
