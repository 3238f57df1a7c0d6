"""Group commit: concurrent requests share one transaction, and each learns when its
rows are durable. A request's 2xx waits for that commit."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from plait.log.backends import LogBackend, Row

logger = logging.getLogger("plait.log")


class Overloaded(Exception):
    """More messages wait for the log than ``max_pending``: the client should retry later."""


class LogWriter:
    # The writer thread needs the GIL back after every driver call that released it (each
    # statement, the commit), and a busy event loop only hands it over when the switch
    # interval expires: at the default 5 ms, those waits, not SQLite, set the pace of
    # group commits. While a writer runs the interval is 0.5 ms (+25% single-event
    # requests/s in benchmarks/ingest.py).
    switch_interval = 0.0005

    def __init__(
        self,
        backend: LogBackend,
        max_pending: int,
        on_commit: Callable[[int, int], None] | None = None,
    ):
        self.backend = backend
        self.max_pending = max_pending
        self.on_commit = on_commit  # (rows written, rows new) after every commit
        self._queue: list[tuple[Sequence[Row], asyncio.Future]] = []
        self._pending = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._saved_switch_interval: float | None = None
        # One thread owns the writer connection; the driver releases the GIL while
        # SQLite or PostgreSQL works, so parsing the next requests overlaps the commit.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="plait-log-writer")

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        self._saved_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._saved_switch_interval, self.switch_interval))
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="plait-log-writer")

    async def append(self, rows: Sequence[Row]) -> None:
        """Return once ``rows`` are committed; raise Overloaded without queueing them."""
        if self._task is None or self._closing:
            raise RuntimeError("log writer is not running")
        if self._pending + len(rows) > self.max_pending:
            raise Overloaded
        future = asyncio.get_running_loop().create_future()
        self._queue.append((rows, future))
        self._pending += len(rows)
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            group, self._queue = self._queue, []
            rows = [row for rows, _ in group for row in rows]
            try:
                inserted = await loop.run_in_executor(self._executor, self.backend.append, rows)
            except Exception as exc:  # every waiting request gets the error: nothing is acked
                logger.exception("log append failed for %d messages", len(rows))
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._pending -= len(rows)
            for _, future in group:
                if not future.done():
                    future.set_result(None)
            if self.on_commit is not None:
                self.on_commit(len(rows), inserted)

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        await self._task
        self._task = None
        await asyncio.get_running_loop().run_in_executor(self._executor, self.backend.close)
        self._executor.shutdown()
        if self._saved_switch_interval is not None:
            sys.setswitchinterval(self._saved_switch_interval)
