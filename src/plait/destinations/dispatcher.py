"""The delivery engine: every enabled destination of every workspace follows the
processed log from its own checkpoint, in a thread of its own running an asyncio loop
(one task per destination: a destination that is down slows nothing else, and nothing in
ingestion or the pipeline waits for any destination).

A round of a destination:

1. **Due retries**: the queue's heads (one per person, lowest offset) whose time has come
   are sent again. Delivered, they leave the queue (the person's next one becomes the
   head); a retryable failure is tried again after an exponential backoff with jitter (or
   the server's Retry-After) until the destination's retry period has passed since the
   first attempt; then, or on a permanent failure (4xx other than 408 and 429), the
   message becomes a dead letter, kept with the response, and the person's next goes.
2. **New messages**: a window of processed messages after the checkpoint (never past the
   pipeline's), filtered (sources, types, the filter expression, consent), mapped by the
   connector, and sent: one request per person at a time (up to ``concurrency`` persons
   at once) for a batch size of 1, else batches in log order. A message of a person with
   a queued message waits behind it in the queue. Then one transaction queues what failed
   or waits, counts, and moves the checkpoint.

A crash before that transaction sends the window again: delivery is at least once, and
a message sent twice carries the same idempotency key. With several workers (PostgreSQL),
a lease lets one of them at a time send for a destination.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from plait.destinations import queue
from plait.destinations.config import SECTION, Destination, compile_destinations
from plait.destinations.connectors import Item, Outcome
from plait.govern.config import GovernanceCache
from plait.govern.consent import ConsentConfig, effective_preferences
from plait.govern.transformations import TransformationSet
from plait.lake.writer import read_processed
from plait.log import backend_for
from plait.observability import DELIVERIES
from plait.store import Store
from plait.store.bulk import select_in
from plait.store.db import now_ms
from plait.store.schema import sources, workspace_settings, workspaces

logger = logging.getLogger("plait.destinations")

WINDOW = 1000  # new messages read at a time
CONCURRENCY = 8  # persons sent to at once (batch size 1)
LEASE_RENEW_MS = queue.LEASE_MS // 3
STOP_SECONDS = 10.0  # for rounds in flight to finish when stopping


class TokenBucket:
    """``rate`` requests a second, bursts of up to one second's worth."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.at = rate, rate, time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass(slots=True)
class Message:
    log_offset: int
    person: str
    item: Item


@dataclass
class Target:
    """A destination being delivered, with what its rounds keep."""

    workspace_id: str
    destination: Destination
    source_ids: frozenset[str] | None  # None: every source
    limiter: TokenBucket | None = None
    lease_until: int = 0
    task: asyncio.Task | None = None


class Dispatcher:
    def __init__(
        self,
        store: Store,
        poll_seconds: float = 0.2,
        clock: Callable[[], int] = now_ms,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.store = store
        self.log = backend_for(store)
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.transport = transport
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.governance = GovernanceCache(ttl_seconds=1.0)
        self._targets: dict[tuple[str, str], Target] = {}
        self._docs: dict[str, tuple[str, dict[str, Destination]]] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._client: httpx.AsyncClient | None = None

    # Lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="plait-deliveries", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        asyncio.run(self.run_forever())

    async def run_forever(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self._http() as client:
            self._client = client
            while not self._stop.is_set():
                try:
                    for target in await asyncio.to_thread(self.refresh):
                        if target.task is not None:
                            target.task.cancel()
                    self._supervise()
                except Exception:  # the store is down: try again, never exit
                    logger.exception("deliveries: reading the destinations failed")
                try:
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                except TimeoutError:
                    pass
            # Rounds in flight finish (their results are committed), then the rest stops.
            tasks = [t.task for t in self._targets.values() if t.task is not None]
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=STOP_SECONDS)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            await asyncio.to_thread(self._release_all)

    def _http(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
        return httpx.AsyncClient(transport=self.transport, limits=limits,
                                 headers={"User-Agent": "Plait"})  # fmt: skip

    def _supervise(self) -> None:
        for target in self._targets.values():
            if target.task is None or target.task.done():
                target.task = asyncio.create_task(self._follow(target))

    async def _follow(self, target: Target) -> None:
        while not self._stop.is_set():
            try:
                worked = await self.round(target)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("deliveries: a round of %s failed; retrying",
                                 target.destination.key)  # fmt: skip
                worked = False
            if not worked:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.poll_seconds)
                except TimeoutError:
                    pass

    async def drain(self, workspace_id: str | None = None, rounds: int = 1000) -> None:
        """Run rounds of every destination (of one workspace) until none has anything due
        now (tests, ``plait deliveries send``)."""
        async with self._http() as client:
            self._client = client
            self.refresh()
            for _ in range(rounds):
                targets = [t for (ws, _), t in self._targets.items()
                           if workspace_id is None or ws == workspace_id]  # fmt: skip
                done = await asyncio.gather(*(self.round(t) for t in targets))
                if not any(done):
                    break
            self._release_all()
            self._client = None

    # Definitions ----------------------------------------------------------------------

    def refresh(self) -> list[Target]:
        """Read every workspace's destinations (compiled again only when changed); returns
        the targets no longer wanted (removed, disabled or changed), whose tasks the
        event loop's thread stops (a task is cancelled only from its loop)."""
        with self.store.engine.connect() as conn:
            docs = dict(conn.execute(
                sa.select(workspace_settings.c.workspace_id, workspace_settings.c.value)
                .join(workspaces, workspaces.c.id == workspace_settings.c.workspace_id)
                .where(workspace_settings.c.key == SECTION)
            ).all())  # fmt: skip
            names = {ws: source_names(conn, ws) for ws in docs}
        wanted: dict[tuple[str, str], tuple[Destination, frozenset[str] | None]] = {}
        for ws, value in docs.items():
            cached = self._docs.get(ws)
            if cached is None or cached[0] != value:
                try:
                    cached = (value, compile_destinations(orjson.loads(value)))
                except ValueError:  # stored unchecked (never through the API): left alone
                    logger.exception("deliveries: the destinations of %s do not compile", ws)
                    cached = (value, {})
                self._docs[ws] = cached
            for key, dest in cached[1].items():
                if dest.enabled:
                    wanted[(ws, key)] = (dest, source_ids(names[ws], dest))
        gone = []
        for at, target in list(self._targets.items()):
            if wanted.get(at) != (target.destination, target.source_ids):
                gone.append(self._targets.pop(at))
        for (ws, key), (dest, ids) in wanted.items():
            if (ws, key) not in self._targets:
                limiter = TokenBucket(dest.rate_limit) if dest.rate_limit else None
                self._targets[(ws, key)] = Target(ws, dest, ids, limiter)
        return gone

    def _release_all(self) -> None:
        with self.store.write() as conn:
            for (ws, key), target in self._targets.items():
                if target.lease_until:
                    queue.drop_lease(conn, ws, key, self.owner)
                    target.lease_until = 0

    # A round -----------------------------------------------------------------------------

    async def round(self, target: Target) -> bool:
        """One round of a destination; True when it sent or moved anything."""
        now = self.clock()
        if target.lease_until - LEASE_RENEW_MS < now:
            if not await asyncio.to_thread(self._lease, target, now):
                return False
        worked = await self._retry_due(target)
        return await self._deliver_new(target) or worked

    def _lease(self, target: Target, now: int) -> bool:
        with self.store.write() as conn:
            if queue.take_lease(conn, target.workspace_id, target.destination.key, self.owner,
                                now):  # fmt: skip
                target.lease_until = now + queue.LEASE_MS
                return True
        target.lease_until = 0
        return False

    async def _send(self, target: Target, batch: list[Message]) -> list[Outcome]:
        if target.limiter is not None:
            await target.limiter.take()
        dest = target.destination
        try:
            items = [m.item for m in batch]
            return await dest.connector.send(self._client, dest.settings, items,
                                             target.workspace_id)  # fmt: skip
        except Exception as exc:  # a connector's bug must not lose the messages
            logger.exception("deliveries: %s failed to send", dest.key)
            return [Outcome(False, retry=True, response=f"{type(exc).__name__}: {exc}")] * len(
                batch
            )

    # New messages ---------------------------------------------------------------------------

    def _read_new(self, target: Target) -> tuple[int, int, list[Message], int, set[str]]:
        """The next window after the checkpoint: the admitted messages, how many were
        filtered, and the persons with queued ones."""
        ws, dest = target.workspace_id, target.destination
        with self.store.engine.connect() as conn:
            after = queue.checkpoint(self.log, conn, ws, dest.key)
            upto = queue.pipeline_position(self.log, conn, ws)
            if after is None:  # a new destination receives what comes from now on
                self.log.save_checkpoint(queue.consumer_name(ws, dest.key), upto)
                return upto, upto, [], 0, set()
            if after >= upto:
                return after, upto, [], 0, set()
            window = max(WINDOW, dest.batch_size * dest.connector.lanes * 8)
            rows = read_processed(conn, ws, after, upto, window)
            governance = self.governance.get(conn, ws)
            consent, shapes = governance.consent, governance.transformations
            categories = consent.categories(dest.name)
            prefs = profile_preferences(conn, {r.profile_id for r in rows if r.profile_id}) \
                if categories else {}  # fmt: skip
            # The message is parsed only when a filter, consent, a transformation for this
            # destination or a mapping reads it; else its text goes as it is.
            reads = (dest.filter is not None or bool(categories) or dest.connector.maps
                     or bool(dest.audiences)
                     or bool(shapes.for_destination(dest.name)))  # fmt: skip
            messages, filtered = [], 0
            if not reads and target.source_ids is None and not dest.types:
                # Nothing to decide per message: every one goes, its text as it is.
                # (Tuple unpacking: a row's attributes by name cost more than the rest.)
                messages = [Message(offset, pid or f"message:{mid}",
                                    Item(queue.delivery_key(dest.key, offset),
                                         raw=payload.encode(), profile_id=pid))
                            for offset, _, _, mid, _, _, pid, _, _, payload in rows]  # fmt: skip
            else:
                for row in rows:
                    msg = loads(row.payload) if reads else None
                    item = None
                    if admits(dest, target.source_ids, row, msg, consent, prefs):
                        item = item_for(dest, shapes, row.log_offset, row.payload, msg,
                                        row.profile_id)  # fmt: skip
                    if item is None:
                        filtered += 1
                        continue
                    messages.append(Message(row.log_offset, person_of(row), item))
            waiting = queue.queued_persons(conn, ws, dest.key, {m.person for m in messages})
            if dest.connector.needs_traits:
                attach_traits(conn, [m.item for m in messages])
        last = rows[-1].log_offset if len(rows) == window else upto
        return after, last, messages, filtered, waiting

    async def _deliver_new(self, target: Target) -> bool:
        after, last, messages, filtered, waiting = await asyncio.to_thread(self._read_new, target)
        if last <= after:
            return False
        dest = target.destination
        now = self.clock()
        parked: list[dict] = []  # queued: retrying, or waiting behind one
        failed: list[dict] = []
        delivered = retried = 0
        last_outcome: Outcome | None = None

        def park(m: Message, outcome: Outcome | None) -> None:
            if outcome is None:  # behind an earlier message of the person
                parked.append({"log_offset": m.log_offset, "person": m.person, "status": "queued",
                               "attempts": 0, "next_attempt_at": 0})  # fmt: skip
            else:
                parked.append({"log_offset": m.log_offset, "person": m.person,
                               "status": "queued", "attempts": 1, "first_attempt_at": now,
                               "next_attempt_at": now + _wait_ms(dest, 1, outcome),
                               "last_status": outcome.status,
                               "last_response": outcome.response})  # fmt: skip
            waiting.add(m.person)

        def settle(m: Message, outcome: Outcome) -> None:
            nonlocal delivered, retried, last_outcome
            last_outcome = outcome
            if outcome.ok:
                delivered += 1
            elif outcome.retry:
                retried += 1
                park(m, outcome)
            else:
                failed.append({"log_offset": m.log_offset, "person": m.person,
                               "status": "failed", "attempts": 1, "first_attempt_at": now,
                               "next_attempt_at": 0, "last_status": outcome.status,
                               "last_response": outcome.response})  # fmt: skip

        if dest.batch_size == 1:
            by_person: dict[str, list[Message]] = {}
            for m in messages:
                by_person.setdefault(m.person, []).append(m)
            gate = asyncio.Semaphore(CONCURRENCY)

            async def person(seq: list[Message]) -> None:
                async with gate:
                    for m in seq:
                        if m.person in waiting:
                            park(m, None)
                            continue
                        settle(m, (await self._send(target, [m]))[0])

            await asyncio.gather(*(person(seq) for seq in by_person.values()))
        else:
            # Lanes by person: each sends its batches in order, the lanes at once, so a
            # person's messages keep their order and batches still overlap.
            count = max(1, min(dest.connector.lanes, -(-len(messages) // dest.batch_size)))
            lanes: list[list[Message]] = [[] for _ in range(count)]
            for m in messages:
                lanes[hash(m.person) % count].append(m)

            async def lane(queued: list[Message]) -> None:
                pending: list[Message] = []
                for m in [*queued, None]:
                    if m is not None and m.person in waiting:
                        park(m, None)
                        continue
                    if m is not None:
                        pending.append(m)
                    if pending and (m is None or len(pending) == dest.batch_size):
                        outcomes = await self._send(target, pending)
                        for sent, outcome in zip(pending, outcomes, strict=True):
                            settle(sent, outcome)
                        pending = []

            await asyncio.gather(*(lane(queued) for queued in lanes if queued))
        await asyncio.to_thread(
            self._commit_new, target, after, last, parked, failed, delivered, filtered, retried,
            last_outcome, now,
        )  # fmt: skip
        return True

    def _commit_new(self, target: Target, after: int, last: int, parked: list[dict],
                    failed: list[dict], delivered: int, filtered: int, retried: int,
                    last_outcome: Outcome | None, now: int) -> None:  # fmt: skip
        ws, key = target.workspace_id, target.destination.key
        with self.store.write() as conn:
            if queue.checkpoint(self.log, conn, ws, key) != after:
                return  # moved meanwhile (a reset): this window is not ours to record
            queue.enqueue(conn, ws, key, parked + failed, now)
            queue.count(conn, ws, key, now, delivered=delivered, filtered=filtered,
                        retried=retried, failed=len(failed),
                        last_status=last_outcome.status if last_outcome else None,
                        last_response=last_outcome.response if last_outcome else None,
                        attempted=last_outcome is not None)  # fmt: skip
            self.log.save_checkpoint(queue.consumer_name(ws, key), last, conn)
        _count(key, delivered=delivered, filtered=filtered, retried=retried, failed=len(failed))

    # Retries ----------------------------------------------------------------------------------

    def _read_due(self, target: Target) -> list[tuple[queue.Queued, Message | None]]:
        ws, dest = target.workspace_id, target.destination
        now = self.clock()
        with self.store.engine.connect() as conn:
            shapes = self.governance.get(conn, ws).transformations
            heads = queue.due(conn, ws, dest.key, now, max(dest.batch_size, CONCURRENCY) * 4)
            payloads = dict(select_in(
                conn,
                "SELECT mp.log_offset, coalesce(mp.payload, lm.payload) FROM message_profiles mp "
                "JOIN log_messages lm ON lm.log_offset = mp.log_offset "
                "WHERE mp.log_offset IN ({keys})",
                [h.log_offset for h in heads if h.payload is None],
            )) if any(h.payload is None for h in heads) else {}  # fmt: skip
        found = []
        for h in heads:
            message = None
            if h.person.startswith(queue.DELETION):  # in the connector's form already
                key = queue.delivery_key(dest.key, h.log_offset)
                message = Message(h.log_offset, h.person, Item(key, raw=h.payload.encode()))
            # A message of its own (an audience's full sync), else the log's (None: erased).
            elif (payload := h.payload or payloads.get(h.log_offset)) is not None:
                profile = None if h.person.startswith("message:") else h.person
                reads = dest.connector.maps or bool(shapes.for_destination(dest.name))
                msg = loads(payload) if reads else None
                item = item_for(dest, shapes, h.log_offset, payload, msg, profile)
                if item is not None:  # None: a transformation drops it for this destination
                    message = Message(h.log_offset, h.person, item)
            found.append((h, message))
        if dest.connector.needs_traits:
            with self.store.engine.connect() as conn:
                attach_traits(conn, [m.item for _, m in found if m is not None])
        return found

    async def _retry_due(self, target: Target) -> bool:
        heads = await asyncio.to_thread(self._read_due, target)
        if not heads:
            return False
        dest = target.destination
        results: list[tuple[queue.Queued, Outcome | None]] = [
            (h, None) for h, m in heads if m is None
        ]
        sendable = [(h, m) for h, m in heads if m is not None]
        if dest.batch_size == 1:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(h: queue.Queued, m: Message) -> None:
                async with gate:
                    results.append((h, (await self._send(target, [m]))[0]))

            await asyncio.gather(*(one(h, m) for h, m in sendable))
        else:
            for i in range(0, len(sendable), dest.batch_size):
                part = sendable[i : i + dest.batch_size]
                outcomes = await self._send(target, [m for _, m in part])
                results += [(h, o) for (h, _), o in zip(part, outcomes, strict=True)]
        await asyncio.to_thread(self._commit_retries, target, results, self.clock())
        return True

    def _commit_retries(self, target: Target, results: list[tuple[queue.Queued, Outcome | None]],
                        now: int) -> None:  # fmt: skip
        dest = target.destination
        gone, changed = [], []
        delivered = retried = failed = 0
        last = None
        for h, outcome in results:
            if outcome is None or outcome.ok:  # delivered, or erased meanwhile
                gone.append(h.id)
                delivered += outcome is not None
                last = outcome or last
                continue
            last = outcome
            first = h.first_attempt_at or now
            attempts = h.attempts + 1
            expired = now - first >= dest.retry_seconds * 1000
            if outcome.retry and not expired:
                retried += 1
                status, next_at = "queued", now + _wait_ms(dest, attempts, outcome)
            else:
                failed += 1
                status, next_at = "failed", 0
            changed.append({"id": h.id, "status": status, "attempts": attempts,
                            "first_attempt_at": first, "next_attempt_at": next_at,
                            "last_status": outcome.status,
                            "last_response": outcome.response})  # fmt: skip
        with self.store.write() as conn:
            queue.remove(conn, gone)
            queue.update(conn, changed, now)
            queue.count(conn, target.workspace_id, dest.key, now, delivered=delivered,
                        retried=retried, failed=failed,
                        last_status=last.status if last else None,
                        last_response=last.response if last else None,
                        attempted=last is not None)  # fmt: skip
        _count(dest.key, delivered=delivered, retried=retried, failed=failed)


def _wait_ms(dest: Destination, attempts: int, outcome: Outcome) -> int:
    if outcome.retry_after is not None:  # the server's word, within the retry period
        return int(min(outcome.retry_after, dest.retry_seconds) * 1000)
    return queue.backoff_ms(attempts, dest.backoff_seconds, dest.max_backoff_seconds)


def item_for(
    dest: Destination, shapes: TransformationSet, log_offset: int, payload: str,
    msg: dict | None, profile_id: str | None = None,
) -> Item | None:  # fmt: skip
    """What the destination receives of a processed message: the workspace's
    transformations for it applied (None: one drops it), then the connector's mapping;
    the message's own text when neither changes it."""
    key = queue.delivery_key(dest.key, log_offset)
    shaped = msg
    if msg is not None and shapes.for_destination(dest.name):
        shaped = shapes.apply_for_destination(msg, dest.name)
        if shaped is None:
            return None
    if dest.connector.maps:
        return Item(key, message=dest.connector.payload(shaped, dest.settings),
                    profile_id=profile_id)  # fmt: skip
    if shaped is not msg:
        return Item(key, message=shaped, profile_id=profile_id)
    return Item(key, raw=payload.encode(), message=msg, profile_id=profile_id)


def loads(payload: str) -> dict[str, Any]:
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return msg if isinstance(msg, dict) else {}


def source_names(conn: sa.Connection, workspace_id: str) -> dict[str, str]:
    """The workspace's sources: name -> id."""
    query = sa.select(sources.c.name, sources.c.id).where(sources.c.workspace_id == workspace_id)
    return dict(conn.execute(query).all())


def source_ids(names: dict[str, str], dest: Destination) -> frozenset[str] | None:
    """The ids of the sources a destination takes (named or given by id); None: all."""
    return frozenset(names.get(s, s) for s in dest.sources) if dest.sources else None


def person_of(row: Any) -> str:
    """The key that orders a processed message's deliveries: its profile, else itself."""
    return row.profile_id or f"message:{row.message_id}"


def admits(
    dest: Destination, source_ids: frozenset[str] | None, row: Any, msg: dict[str, Any] | None,
    consent: ConsentConfig, prefs: dict[str, dict[str, bool]],
) -> bool:  # fmt: skip
    """Whether a processed message (``row``: its source_id, type, profile_id) goes to
    ``dest`` (see ``refusal``)."""
    return refusal(dest, source_ids, row, msg, consent, prefs) is None


def refusal(
    dest: Destination, source_ids: frozenset[str] | None, row: Any, msg: dict[str, Any] | None,
    consent: ConsentConfig, prefs: dict[str, dict[str, bool]],
) -> str | None:  # fmt: skip
    """Why a processed message does not go to ``dest`` (None: it goes): its sources, types
    and filter, then consent (the message's choices and its profile's, for the categories
    ``consent.destinations`` maps the destination's name to). ``msg`` may be None when the
    destination has no filter, categories or audiences."""
    if source_ids is not None and row.source_id not in source_ids:
        return "its source is not one of the destination's sources"
    if dest.types and row.type not in dest.types:
        return f"the destination takes {', '.join(sorted(dest.types))} messages, not {row.type}"
    if dest.audiences:  # connected audiences: their entries and exits only
        personas = (msg.get("context") or {}).get("personas") or {}
        if (personas.get("computation_class") != "audience"
                or personas.get("computation_key") not in dest.audiences):  # fmt: skip
            return "the destination takes only its audiences' entries and exits"
    if dest.filter is not None and not dest.filter.evaluate(msg):  # the language's truth
        return "its filter leaves the message out"
    if not consent.categories(dest.name):
        return None
    if consent.allows(dest.name, effective_preferences(msg, prefs.get(row.profile_id))):
        return None
    return "the person has not consented to its categories"


def attach_traits(conn: sa.Connection, items: list[Item]) -> None:
    """Give each item its profile's current traits (email templates read them)."""
    ids = sorted({i.profile_id for i in items if i.profile_id})
    found: dict[str, dict[str, Any]] = {}
    for pid, key, value in select_in(
        conn, "SELECT profile_id, key, value FROM traits WHERE profile_id IN ({keys})", ids,
    ) if ids else []:  # fmt: skip
        found.setdefault(pid, {})[key] = orjson.loads(value)
    for item in items:
        item.traits = found.get(item.profile_id, {})


def profile_preferences(conn: sa.Connection, profile_ids: set[str]) -> dict[str, dict]:
    prefs: dict[str, dict[str, bool]] = {}
    for pid, category, allowed in select_in(
        conn, "SELECT profile_id, category, allowed FROM profile_consent "
              "WHERE profile_id IN ({keys})", sorted(profile_ids),
    ) if profile_ids else []:  # fmt: skip
        prefs.setdefault(pid, {})[category] = bool(allowed)
    return prefs


def _count(key: str, **outcomes: int) -> None:
    for outcome, n in outcomes.items():
        if n:
            DELIVERIES.labels(key, outcome).inc(n)
