"""The pipeline: reads each workspace's log in offset order from a checkpoint and runs the
stages (parse → govern → normalize → resolve → profile → consent) over batches of
messages; after each batch commits, the audience step (plait.audiences.stage.follow)
evaluates the profiles it touched outside the write transaction and applies what changed
with a checkpoint of its own. Between rounds its loop runs the audiences' scheduler
(windows that expire, backfills of new definitions over the lake) and, hourly, retention.

A batch's effects and its checkpoint commit in one transaction, so a crash never applies
a batch twice, and a message already processed (reprocessing an offset range) is skipped:
the pipeline is idempotent. Workers coordinate per workspace: on SQLite the transaction
holds the store's write lock from its start; on PostgreSQL a transaction-scoped advisory
lock per workspace lets one worker at a time process a workspace, and the others move on
to other workspaces. Either way each worker re-reads the checkpoint inside its lock, so
nothing is processed twice, and one person's messages (one workspace's) stay in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa

from plait.audiences import scheduler as audience_scheduler
from plait.audiences import stage as audience_stage
from plait.govern import retention
from plait.govern.config import GovernanceCache
from plait.govern.consent_stage import update_consent
from plait.govern.stage import govern
from plait.identity.stage import normalize, parse, resolve
from plait.log import LogRecord, backend_for
from plait.log.processing import Batch, Item
from plait.observability import PIPELINE_BATCH_SECONDS, PIPELINE_MERGES, PIPELINE_MESSAGES
from plait.profiles.stage import update_profiles
from plait.store import Store
from plait.store.db import now_ms
from plait.store.locks import workspace_lock
from plait.store.schema import log_messages, message_profiles, workspaces

logger = logging.getLogger("plait.pipeline")

Stage = Callable[[Batch], None]
STAGES: tuple[Stage, ...] = (
    parse, govern, normalize, resolve, update_profiles, update_consent,
)  # fmt: skip
# Replays and unmerges run everything in their one transaction, the audience step too.
STAGES_WITH_AUDIENCES: tuple[Stage, ...] = (*STAGES, audience_stage.update_audiences)
RETENTION_INTERVAL_SECONDS = 3600
BATCH_SIZE = 5000  # larger batches amortize the commit and the per-batch reads


def consumer_name(workspace_id: str) -> str:
    return f"pipeline:{workspace_id}"


class Pipeline:
    def __init__(
        self,
        store: Store,
        batch_size: int = BATCH_SIZE,
        stages: Sequence[Stage] = STAGES,
        forward_violations: bool = True,
        governance: GovernanceCache | None = None,
        lake_dir: Path | None = None,
        clock: Callable[[], int] = now_ms,
        audience_tick_seconds: float = 1.0,
        reconcile_seconds: float = 3600.0,
        audiences: bool = True,
    ):
        self.store = store
        # The audience step after each batch (a rebuild reconciles over the lake instead).
        self.audiences = audiences
        # Audiences: the lake their backfills read (None: no scheduler), and "now".
        self.lake_dir = lake_dir
        self.clock = clock
        self.audience_tick_seconds = audience_tick_seconds
        self.reconcile_seconds = reconcile_seconds
        # A rebuild processes messages a live pipeline forwarded violations for already.
        self.forward_violations = forward_violations
        self.governance = governance or GovernanceCache()
        self.log = backend_for(store)
        self.batch_size = batch_size
        self.stages = tuple(stages)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # One batch ----------------------------------------------------------------------

    def run_batch(self, workspace_id: str, limit: int | None = None) -> int:
        """Process the next batch of a workspace; returns how many log records it covered
        (0 when caught up, or when another worker holds the workspace)."""
        if not self._has_new(workspace_id):  # without the write lock: polls stay cheap
            return 0
        started = time.perf_counter()
        with self.store.write(derived=True) as conn:
            if not workspace_lock(conn, workspace_id, wait=False):
                return 0
            consumer = consumer_name(workspace_id)
            after = self.log.checkpoint(consumer, conn)
            records = self.log.read(after, limit or self.batch_size, workspace_id, conn)
            if not records:
                return 0
            batch = self._process(conn, workspace_id, records)
            last = records[-1].offset
            self.log.save_checkpoint(consumer, last, conn)
            follow = self.audiences and audience_stage.prepare(
                conn, self.log, workspace_id, after, last
            )
        if follow:
            now = batch.context["now_ms"] if batch is not None else self.clock()
            audience_stage.follow(self.store, workspace_id, batch, after, last, now)
        PIPELINE_MESSAGES.labels("processed").inc(len(records))
        PIPELINE_MERGES.inc(len(batch.context.get("merges", ())) if batch is not None else 0)
        PIPELINE_BATCH_SECONDS.observe(time.perf_counter() - started)
        return len(records)

    def _has_new(self, workspace_id: str) -> bool:
        with self.store.engine.connect() as conn:
            last = conn.execute(
                sa.select(sa.func.max(log_messages.c.log_offset)).where(
                    log_messages.c.workspace_id == workspace_id
                )
            ).scalar()
            return last is not None and last > self.log.checkpoint(
                consumer_name(workspace_id), conn
            )

    def _process(
        self, conn: sa.Connection, workspace_id: str, records: list[LogRecord]
    ) -> Batch | None:
        done = set(
            conn.scalars(
                sa.select(message_profiles.c.log_offset).where(
                    message_profiles.c.log_offset.between(records[0].offset, records[-1].offset)
                )
            )
        )
        items = [Item(record) for record in records if record.offset not in done]
        if not items:
            return None
        governance = self.governance.get(conn, workspace_id)
        context = {
            "rules": governance.rules,  # compiled again only when a document changes
            "governance": governance,
            "forward_violations": self.forward_violations,
            "now_ms": self.clock(),
        }
        batch = Batch(workspace_id, items, conn, context)
        for stage in self.stages:
            stage(batch)
        return batch

    def _run_batch_isolating_failures(self, workspace_id: str) -> int:
        """A batch that fails is retried in halves down to the one message that fails:
        that one is logged, counted and passed over (a rebuild reprocesses it once the
        cause is fixed), so one bad message never stops a workspace's pipeline."""
        limit = self.batch_size
        while True:
            try:
                return self.run_batch(workspace_id, limit)
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                raise  # the store is unavailable or busy, not the message: retry later
            except Exception:
                if limit > 1:
                    limit //= 2
                    continue
                logger.exception("pipeline: passing over a message that fails (%s)", workspace_id)
                PIPELINE_MESSAGES.labels("failed").inc()
                self._pass_over_next(workspace_id)
                return 1

    def _pass_over_next(self, workspace_id: str) -> None:
        with self.store.write() as conn:
            consumer = consumer_name(workspace_id)
            records = self.log.read(self.log.checkpoint(consumer, conn), 1, workspace_id, conn)
            if records:
                self.log.save_checkpoint(consumer, records[0].offset, conn)

    # Loops --------------------------------------------------------------------------

    def workspace_ids(self) -> list[str]:
        with self.store.engine.connect() as conn:
            return list(conn.scalars(sa.select(workspaces.c.id).order_by(workspaces.c.id)))

    def catch_up(self, workspace_id: str | None = None) -> int:
        """Process until every workspace (or the one given) is caught up."""
        total = 0
        for ws in [workspace_id] if workspace_id else self.workspace_ids():
            while (count := self._run_batch_isolating_failures(ws)) > 0:
                total += count
        return total

    def run_audience_scheduler(self) -> None:
        """Expired windows, new or changed definitions, due SQL traits (every workspace)."""
        audience_scheduler.tick(
            self.store, self.lake_dir, int(self.reconcile_seconds * 1000), self.clock()
        )

    def notify(self) -> None:
        """New messages are in the log (the log writer calls this after each commit)."""
        self._wake.set()

    def run_forever(self, poll_interval: float = 0.25) -> None:
        retention_due = audiences_due = 0.0
        while not self._stop.is_set():
            try:
                processed = self.catch_up()
                if self.lake_dir is not None and time.monotonic() >= audiences_due:
                    self.run_audience_scheduler()
                    audiences_due = time.monotonic() + self.audience_tick_seconds
                if time.monotonic() >= retention_due:  # hourly: workspaces' retention periods
                    retention.run_due(self.store)
                    retention_due = time.monotonic() + RETENTION_INTERVAL_SECONDS
            except Exception:  # the store is down: wait and retry, never exit
                logger.exception("pipeline: batch failed; retrying")
                processed = 0
            if not processed:
                self._wake.wait(poll_interval)
                self._wake.clear()

    def start(self, poll_interval: float = 0.25) -> None:
        self._thread = threading.Thread(
            target=self.run_forever, args=(poll_interval,), name="plait-pipeline", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
