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

Each generation holds a workspace's ids in ``SHARDS`` dicts (keys only) rather than one
set, for the latency of the requests waiting on the writer: with millions of ids, growing
one set rehashed all of them at once (~0.3 s measured), and the garbage collector's full
passes walked every member of a set (~0.2 s). A dict of strings is never tracked by the
collector, and a shard grows in steps a few hundredths of the size.
"""

from __future__ import annotations

import time

SHARDS = 256

# workspace id -> its shards: dicts of message id -> None
Generation = dict[str, list[dict[str, None]]]


class RecentMessageIds:
    def __init__(self, window_seconds: float):
        self.window_us = int(window_seconds * 1_000_000)
        self.seen_offset = 0  # rows up to this log offset are in the window
        self._current: Generation = {}
        self._previous: Generation = {}
        self._current_since = now_us()

    def add(self, workspace_id: str, message_id: str) -> bool:
        """Remember an id; False if it is already remembered (the message is a duplicate)."""
        shard = hash(message_id) % SHARDS
        shards = self._current.get(workspace_id)
        if shards is None:
            shards = self._current[workspace_id] = [{} for _ in range(SHARDS)]
        ids = shards[shard]
        if message_id in ids:
            return False
        previous = self._previous.get(workspace_id)
        if previous is not None and message_id in previous[shard]:
            return False
        ids[message_id] = None
        return True

    def rotate(self, now: int) -> None:
        """Forget the older generation once the newer one spans a whole window."""
        if now - self._current_since >= self.window_us:
            self._previous, self._current = self._current, {}
            self._current_since = now

    def __len__(self) -> int:
        return sum(
            len(ids)
            for generation in (self._current, self._previous)
            for shards in generation.values()
            for ids in shards
        )


def now_us() -> int:
    return time.time_ns() // 1000
