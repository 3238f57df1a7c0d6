"""Deduplication on SQLite: the messageIds of the log's recent rows, held in memory.

A unique index on (workspace, messageId) made SQLite appends ~5x slower: messageIds are
random, so every row dirtied a random index page, and WAL mode writes dirty pages whole
at each commit. Instead each appending process keeps the ids of the rows received in the
last ``window`` and, inside its write transaction (which SQLite serializes across
processes), first reads the rows other processes appended since it last looked. So a
messageId is stored once per workspace within the window, whichever process got it.

Ids live in two generations: when the newer one spans a whole window it becomes the
older one and the older one is dropped, so an id is remembered for at least ``window``
after it was received (about twice that at most, while messages keep arriving). Memory
is about 100 bytes per remembered message.
"""

from __future__ import annotations

import time


class RecentMessageIds:
    def __init__(self, window_seconds: float):
        self.window_us = int(window_seconds * 1_000_000)
        self.seen_offset = 0  # rows up to this log offset are in the window
        self._current: dict[str, set[str]] = {}  # workspace id -> message ids
        self._previous: dict[str, set[str]] = {}
        self._current_since = now_us()

    def add(self, workspace_id: str, message_id: str) -> bool:
        """Remember an id; False if it is already remembered (the message is a duplicate)."""
        ids = self._current.get(workspace_id)
        if ids is None:
            ids = self._current[workspace_id] = set()
        elif message_id in ids:
            return False
        previous = self._previous.get(workspace_id)
        if previous is not None and message_id in previous:
            return False
        ids.add(message_id)
        return True

    def rotate(self, now: int) -> None:
        """Forget the older generation once the newer one spans a whole window."""
        if now - self._current_since >= self.window_us:
            self._previous, self._current = self._current, {}
            self._current_since = now

    def __len__(self) -> int:
        return sum(map(len, self._current.values())) + sum(map(len, self._previous.values()))


def now_us() -> int:
    return time.time_ns() // 1000
