"""Privacy requests with the semantics of Segment's regulations API, completing in seconds:
deletion, suppression and both, for subjects given by any identifier type.

A request is created (validated, stored with its subject ids only as identity hashes) and
run at once: status INITIALIZED, RUNNING, then FINISHED; PARTIAL_SUCCESS when the deletion
committed but a later step did not (making it physical, forwarding it); FAILED with the error
when nothing was deleted. A subject Plait holds nothing about is no failure (Segment
finishes those too): the receipt counts the subjects found. Since the subject ids are not
kept, a request a restart interrupted cannot resume: ``fail_interrupted`` fails it at
startup, asking for it to be filed again.

Suppressions keep a person's identities hashed; ingestion rejects their messages
(``SuppressionCache``). The rows of one subject form a group (``suppressions.request_id``
holds ``<request id>#<subject index>``), so UNSUPPRESS of any one identifier lifts every
identity suppressed with it, even those of a profile deleted since.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from plait.govern import audit
from plait.govern.erase import (
    Erasure,
    Person,
    erase,
    find_person,
    make_physical,
)
from plait.govern.identity_hash import identity_hash
from plait.govern.pii import Keyring
from plait.identity import graph_store
from plait.identity.identifiers import MAX_VALUE_LENGTH, PII_TYPES, Identifier, normalize
from plait.identity.rules import Rules
from plait.ids import new_id
from plait.settings import get_settings
from plait.store import Store
from plait.store.bulk import chunks, select_in
from plait.store.db import now_ms
from plait.store.schema import privacy_requests, suppressions
from plait.store.workspaces import Invalid, NotFound

logger = logging.getLogger("plait.privacy")

REGULATION_TYPES = (
    "DELETE_INTERNAL",  # delete from Plait
    "DELETE_ONLY",  # delete from Plait and forward the deletion to destinations
    "SUPPRESS_ONLY",  # reject the person's future messages
    "SUPPRESS_WITH_DELETE",  # suppress, delete, forward
    "SUPPRESS_WITH_DELETE_INTERNAL",  # suppress, delete from Plait only
    "UNSUPPRESS",  # lift a suppression
)
DELETES = frozenset(
    {"DELETE_INTERNAL", "DELETE_ONLY", "SUPPRESS_WITH_DELETE", "SUPPRESS_WITH_DELETE_INTERNAL"}
)
SUPPRESSES = frozenset({"SUPPRESS_ONLY", "SUPPRESS_WITH_DELETE", "SUPPRESS_WITH_DELETE_INTERNAL"})
FORWARDS = frozenset({"DELETE_ONLY", "SUPPRESS_WITH_DELETE"})
STATUSES = ("INITIALIZED", "RUNNING", "PARTIAL_SUCCESS", "FAILED", "FINISHED")
DONE = frozenset({"PARTIAL_SUCCESS", "FAILED", "FINISHED"})
MAX_SUBJECTS = 5000  # per request, as Segment
INTERRUPTED = (
    "interrupted before it finished (Plait stopped); the subject ids are not kept, so "
    "nothing can resume it: file the request again"
)


# Subjects ---------------------------------------------------------------------------------


def subject_types(rules: Rules) -> list[str]:
    """The subject types a workspace accepts: its person identifier types, upper case."""
    return [name.upper() for name in rules.types]


def identifier_type(subject_type: Any, rules: Rules) -> str:
    """``USER_ID`` -> ``user_id``; custom identifier types likewise (``CRM_ID``)."""
    name = subject_type.lower() if isinstance(subject_type, str) else None
    if name not in rules.types:
        if subject_type == "OBJECT_ID":
            raise Invalid("subjectType", "OBJECT_ID (cloud-source objects) is not supported")
        raise Invalid("subjectType", f"must be one of {', '.join(subject_types(rules))}")
    return name


def lookup_values(
    workspace_id: str,
    type_name: str,
    value: str,
    rules: Rules,
    keyring: Keyring | None = None,
) -> list[str]:
    """The form(s) a subject id has where Plait stores it (identifiers, suppressions,
    hashes): normalized as the pipeline normalizes it. [] when the value can never be an
    identifier (not an email, a phone number that does not parse, a blocked value).

    The one place that maps a subject id to stored values: when a PII policy hashes or
    encrypts identifiers before the log, their stored forms are added here."""
    normalized = normalize(type_name, value, rules)
    if normalized is None or rules.is_blocked(normalized):
        return []
    forms = [normalized]
    if type_name in PII_TYPES:  # as a policy's hash or encrypt action stores it
        forms.append(hashlib.sha256(normalized.encode()).hexdigest())
        keyring = keyring or Keyring.from_env()  # PLAIT_PII_KEYS, as the server reads it
        if keyring is not None:  # under every key: a rotation may not have run yet
            forms += [keyring.encrypt(normalized, workspace_id, k) for k in keyring.key_ids]
    return forms


def parse_subjects(
    workspace_id: str, type_name: str, subject_ids: Any, rules: Rules
) -> list[list[Identifier]]:
    """Each distinct subject's identifiers in stored form; Invalid names a bad one."""
    if not isinstance(subject_ids, list) or not subject_ids:
        raise Invalid("subjectIds", "must be a non-empty list of subject ids")
    if len(subject_ids) > MAX_SUBJECTS:
        raise Invalid("subjectIds", f"at most {MAX_SUBJECTS} subject ids per request")
    subjects, seen = [], set()
    for index, value in enumerate(subject_ids):
        field = f"subjectIds[{index}]"
        if not isinstance(value, str) or not value.strip():
            raise Invalid(field, "must be a non-empty string")
        if len(value) > MAX_VALUE_LENGTH:
            raise Invalid(field, f"is longer than {MAX_VALUE_LENGTH} characters")
        values = lookup_values(workspace_id, type_name, value, rules)
        if not values:
            raise Invalid(
                field, f"can never be a {type_name} (not a valid one, or a blocked value)"
            )
        if values[0] not in seen:
            seen.add(values[0])
            subjects.append([(type_name, v) for v in values])
    return subjects


def subject_hashes(workspace_id: str, subjects: list[list[Identifier]]) -> list[str]:
    return [identity_hash(workspace_id, *idents[0]) for idents in subjects]


# Requests ---------------------------------------------------------------------------------


def create_request(
    store: Store,
    workspace_id: str,
    regulation_type: Any,
    subject_type: Any,
    subject_ids: Any,
    requested_by: str,
) -> dict[str, Any]:
    """Validate and store a request (INITIALIZED); Invalid(field, message) for bad input.
    ``run_request`` with the same subject ids executes it."""
    if regulation_type not in REGULATION_TYPES:
        raise Invalid("regulationType", f"must be one of {', '.join(REGULATION_TYPES)}")
    with store.write() as conn:  # reads, then writes: the write lock from the start
        rules = graph_store.load_rules(conn, workspace_id)
        type_name = identifier_type(subject_type, rules)
        subjects = parse_subjects(workspace_id, type_name, subject_ids, rules)
        record = {
            "id": new_id("reg"),
            "workspace_id": workspace_id,
            "regulation_type": regulation_type,
            "subject_type": type_name.upper(),
            "subject_hashes": orjson.dumps(subject_hashes(workspace_id, subjects)).decode(),
            "status": "INITIALIZED",
            "requested_by": requested_by[:200],
            "created_at": now_ms(),
        }
        conn.execute(privacy_requests.insert().values(record))
        audit.record(conn, workspace_id, requested_by, "privacy.request.created", record["id"], {
            "regulation_type": regulation_type, "subject_type": record["subject_type"],
            "subjects": len(subjects),
        })  # fmt: skip
        return _public(conn.execute(_by_id(record["id"])).one())


def get_request(conn: sa.Connection, workspace_id: str, request_id: str) -> dict[str, Any]:
    row = conn.execute(_by_id(request_id).where(privacy_requests.c.workspace_id == workspace_id))
    found = row.first()
    if found is None:
        raise NotFound(f"privacy request {request_id!r} not found")
    return _public(found)


def list_requests(
    conn: sa.Connection,
    workspace_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` is the last id of the previous page."""
    stmt = sa.select(privacy_requests).where(privacy_requests.c.workspace_id == workspace_id)
    if status is not None:
        stmt = stmt.where(privacy_requests.c.status == status)
    if before is not None:
        last = get_request(conn, workspace_id, before)
        stmt = stmt.where(
            sa.tuple_(privacy_requests.c.created_at, privacy_requests.c.id)
            < sa.tuple_(sa.literal(last["created_at"]), sa.literal(last["id"]))
        )
    order = (privacy_requests.c.created_at.desc(), privacy_requests.c.id.desc())
    return [_public(row) for row in conn.execute(stmt.order_by(*order).limit(limit))]


def _by_id(request_id: str) -> sa.Select:
    return sa.select(privacy_requests).where(privacy_requests.c.id == request_id)


def _public(row: sa.Row) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "workspace_id": m["workspace_id"],
        "regulation_type": m["regulation_type"],
        "subject_type": m["subject_type"],
        "subjects": len(orjson.loads(m["subject_hashes"])),
        "status": m["status"],
        "requested_by": m["requested_by"],
        "created_at": m["created_at"],
        "started_at": m["started_at"],
        "finished_at": m["finished_at"],
        "receipt": orjson.loads(m["receipt"]) if m["receipt"] else None,
        "error": m["error"],
    }


class RequestFailed(RuntimeError):
    """The request failed; its status (FAILED) and error are recorded, the message redacted."""


def run_request(
    store: Store,
    request_id: str,
    subject_ids: list[str],
    *,
    settle_seconds: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Execute a created request with its subject ids (they must hash to the stored ones).
    Returns the finished request; raises RequestFailed when it failed (recorded as such).

    ``settle_seconds``: after a suppression is committed, how long to wait before deleting,
    so that every process's ingestion cache has seen it and no message of the person is
    written after the deletion (default: the governance cache's time, PLAIT_GOVERNANCE_
    CACHE_SECONDS). ``progress`` hears what is being done."""
    say = progress or (lambda _step: None)
    with store.engine.connect() as conn:
        row = conn.execute(_by_id(request_id)).first()
        if row is None:
            raise NotFound(f"privacy request {request_id!r} not found")
        request = _public(row)
        ws = request["workspace_id"]
        rules = graph_store.load_rules(conn, ws)
    subjects = parse_subjects(ws, request["subject_type"].lower(), subject_ids, rules)
    if subject_hashes(ws, subjects) != orjson.loads(row.subject_hashes):
        raise ValueError(f"these subject ids are not those of request {request_id}")
    with _Lease(store, request_id):
        started = now_ms()
        with store.engine.begin() as conn:
            running = conn.execute(
                privacy_requests.update()
                .where(privacy_requests.c.id == request_id)
                .where(privacy_requests.c.status == "INITIALIZED")
                .values(status="RUNNING", started_at=started)
            ).rowcount
        if not running:
            raise ValueError(f"request {request_id} is {request['status']}: it runs only once")
        receipt: dict[str, Any] = {
            "regulation_type": request["regulation_type"],
            "subject_type": request["subject_type"],
            "requested_by": request["requested_by"],
            "subjects": len(subjects),
            "started_at": started,
        }
        try:
            _execute(store, request, subjects, rules, receipt, settle_seconds, say)
        except Exception as exc:
            secrets = {*subject_ids, *(v for idents in subjects for _, v in idents)}
            error = f"{type(exc).__name__}: {redact(exc, secrets)}"
            logger.error("privacy request %s failed: %s\n%s", request_id, error,
                         "".join(traceback.format_tb(exc.__traceback__)))  # fmt: skip
            _finish(store, request, "FAILED", receipt, error)
            raise RequestFailed(f"privacy request {request_id} failed: {error}") from None
        status = "PARTIAL_SUCCESS" if receipt.get("errors") else "FINISHED"
        _finish(store, request, status, receipt, None)
    with store.engine.connect() as conn:
        return get_request(conn, ws, request_id)


def _execute(
    store: Store,
    request: dict[str, Any],
    subjects: list[list[Identifier]],
    rules: Rules,
    receipt: dict[str, Any],
    settle_seconds: float | None,
    say: Callable[[str], None],
) -> None:
    ws, kind, request_id = request["workspace_id"], request["regulation_type"], request["id"]
    if kind == "UNSUPPRESS":
        say("lifting suppressions")
        with store.write() as conn:
            person = find_person(conn, ws, subjects, rules, messages=False)
            receipt["suppressions_removed"] = remove_suppressions(conn, ws, person.hashes())
        _found(receipt, person)
        invalidate_all(ws)
        return
    added = 0
    if kind in SUPPRESSES:
        say("suppressing")
        with store.write() as conn:
            person = find_person(conn, ws, subjects, rules)
            added = add_suppressions(conn, ws, request_id, person)
        _found(receipt, person)
        receipt["suppressions_added"] = added
        invalidate_all(ws)
    if kind not in DELETES:
        return
    if kind in SUPPRESSES:
        wait = get_settings().governance_cache_seconds if settle_seconds is None else settle_seconds
        say(f"waiting {wait:g} s for ingestion to see the suppression")
        time.sleep(wait)

    def suppress_found(conn: sa.Connection, found: Person) -> None:
        # Identifiers found only now (messages that came in meanwhile) are suppressed too.
        nonlocal added
        if kind in SUPPRESSES:
            added += add_suppressions(conn, ws, request_id, found)

    say("deleting")
    erasure = erase(store, ws, subjects, rules, before=suppress_found)
    _found(receipt, erasure.person)
    if kind in SUPPRESSES:
        receipt["suppressions_added"] = added
    receipt["rows_removed"] = dict(sorted(erasure.removed.items()))
    receipt.update(NOT_PRESENT)
    say("forwarding" if kind in FORWARDS else "making the deletion physical")
    for name, step in AFTER_COMMIT_STEPS:
        if name == "forwarded_to" and kind not in FORWARDS:
            receipt[name] = []
            continue
        try:
            receipt[name] = step(store, erasure)
        except Exception as exc:  # the deletion is committed: the request partly succeeded
            secrets = {v for _, v in erasure.person.identifiers}
            message = f"{type(exc).__name__}: {redact(exc, secrets)}"
            logger.error("privacy request %s: %s failed: %s\n%s", request_id, name, message,
                         "".join(traceback.format_tb(exc.__traceback__)))  # fmt: skip
            receipt.setdefault("errors", {})[name] = message


def _found(receipt: dict[str, Any], person: Person) -> None:
    """What was found, in counts (a receipt never holds an identifier or a value)."""
    by_type: dict[str, int] = {}
    for type_name, _ in person.held:  # not the forms a subject was looked up by
        by_type[type_name] = by_type.get(type_name, 0) + 1
    receipt.update({
        "subjects_found": len(person.subjects_found),
        "profiles": len(person.profile_ids),
        "identifiers": dict(sorted(by_type.items())),
        "log_messages": {"processed": len(person.processed), "unlinked": len(person.unlinked),
                         "unprocessed": len(person.unprocessed)},
    })  # fmt: skip


def _finish(
    store: Store, request: dict[str, Any], status: str, receipt: dict[str, Any], error: str | None
) -> None:
    finished = now_ms()
    receipt["finished_at"] = finished
    with store.engine.begin() as conn:
        conn.execute(
            privacy_requests.update()
            .where(privacy_requests.c.id == request["id"])
            .values(status=status, finished_at=finished, error=error and error[:2000],
                    receipt=orjson.dumps(receipt).decode())
        )  # fmt: skip
        action = "privacy.request.failed" if status == "FAILED" else "privacy.request.finished"
        details = {k: receipt[k] for k in AUDITED if k in receipt}
        audit.record(conn, request["workspace_id"], request["requested_by"], action,
                     request["id"], {"status": status, **details})  # fmt: skip


AUDITED = ("regulation_type", "subjects", "subjects_found", "profiles", "identifiers",
           "log_messages", "rows_removed", "suppressions_added", "suppressions_removed",
           "forwarded_to", "errors")  # fmt: skip


def redact(exc: BaseException, secrets: Iterable[str]) -> str:
    """An error's message without personal data: a database error's own message without
    its DETAIL lines (PostgreSQL repeats key values there), no statement parameters, and
    every known value of the subjects replaced."""
    text = str(getattr(exc, "orig", None) or exc)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("DETAIL")]
    text = "\n".join(lines).split("[parameters:")[0].strip()
    for value in sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text[:1500]


def fail_interrupted(store: Store) -> list[str]:
    """Mark FAILED the requests left INITIALIZED or RUNNING that no process runs any more
    (a restart cut them short). Safe to call from every starting process: a request still
    running elsewhere holds its lease and is left alone. Returns the ids failed."""
    with store.engine.connect() as conn:
        candidates = conn.execute(
            sa.select(privacy_requests.c.id, privacy_requests.c.workspace_id).where(
                privacy_requests.c.status.in_(("INITIALIZED", "RUNNING"))
            )
        ).all()
    failed = []
    for request_id, workspace_id in candidates:
        if _Lease.held(store, request_id):
            continue
        with store.engine.begin() as conn:
            changed = conn.execute(
                privacy_requests.update()
                .where(privacy_requests.c.id == request_id,
                       privacy_requests.c.status.in_(("INITIALIZED", "RUNNING")))
                .values(status="FAILED", error=INTERRUPTED, finished_at=now_ms())
            ).rowcount  # fmt: skip
            if changed:
                audit.record(conn, workspace_id, "system:startup", "privacy.request.failed",
                             request_id, {"status": "FAILED", "reason": "interrupted"})  # fmt: skip
                failed.append(request_id)
    if failed:
        logger.warning("privacy requests interrupted by a restart, now FAILED: %s", failed)
    return failed


class _Lease:
    """Held while a process runs a request: a session advisory lock on PostgreSQL, a locked
    file beside the database on SQLite (and this process's own set, for an in-memory one)."""

    _running: set[str] = set()
    _guard = threading.Lock()

    def __init__(self, store: Store, request_id: str):
        self.store, self.request_id = store, request_id
        self._conn: sa.Connection | None = None
        self._file = None

    @staticmethod
    def _key(request_id: str) -> int:
        digest = hashlib.blake2b(f"privacy:{request_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    @staticmethod
    def _path(store: Store, request_id: str) -> Path | None:
        database = store.url.database
        if store.kind != "sqlite" or not database or database == ":memory:":
            return None
        return Path(f"{database}-privacy-{request_id}.lock")

    def __enter__(self) -> _Lease:
        with self._guard:
            if self.request_id in self._running:
                raise ValueError(f"request {self.request_id} is running already")
            self._running.add(self.request_id)
        try:
            if self.store.kind == "postgresql":
                self._conn = self.store.engine.connect()
                self._conn.execute(sa.select(sa.func.pg_advisory_lock(self._key(self.request_id))))
                self._conn.commit()
            elif (path := self._path(self.store, self.request_id)) is not None:
                self._file = open(path, "a+b")  # noqa: SIM115 (closed in __exit__)
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self._conn is not None:
                self._conn.execute(
                    sa.select(sa.func.pg_advisory_unlock(self._key(self.request_id)))
                )
                self._conn.commit()
                self._conn.close()
            if self._file is not None:
                path = self._path(self.store, self.request_id)
                if path is not None:
                    path.unlink(missing_ok=True)
                self._file.close()
        finally:
            with self._guard:
                self._running.discard(self.request_id)

    @classmethod
    def held(cls, store: Store, request_id: str) -> bool:
        """Whether some process runs the request now."""
        if request_id in cls._running:
            return True
        if store.kind == "postgresql":
            key = cls._key(request_id)
            with store.engine.connect() as conn:
                got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar()
                if got:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                conn.commit()
            return not got
        path = cls._path(store, request_id)
        if path is None or not path.exists():
            return False
        with open(path, "a+b") as probe:
            try:
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe.fileno(), fcntl.LOCK_UN)
        return False


# Running in the background (the API answers at once, as Segment's does) -----------------

_background: set[threading.Thread] = set()


def run_in_background(
    store: Store, request_id: str, subject_ids: list[str], settle_seconds: float | None = None
) -> threading.Thread:
    """Run the request in a thread of this process. Its outcome is the request's status: a
    failure is recorded (FAILED, the error redacted) and logged by ``run_request``."""

    def target() -> None:
        try:
            run_request(store, request_id, subject_ids, settle_seconds=settle_seconds)
        except RequestFailed:
            pass  # recorded as FAILED with its error, and logged, by run_request
        except Exception as exc:  # failed before it ran (the store unreachable): log it
            logger.error("privacy request %s could not run: %s: %s", request_id,
                         type(exc).__name__, redact(exc, subject_ids))  # fmt: skip
        finally:
            _background.discard(threading.current_thread())

    thread = threading.Thread(target=target, name=f"plait-privacy-{request_id}", daemon=True)
    _background.add(thread)
    thread.start()
    return thread


def wait_for_background(timeout: float = 30.0) -> bool:
    """Wait for requests running in this process (a server shutting down); True if none
    is left running."""
    deadline = time.monotonic() + timeout
    for thread in list(_background):
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in _background)


# Suppressions -----------------------------------------------------------------------------


def add_suppressions(
    conn: sa.Connection, workspace_id: str, request_id: str, person: Person
) -> int:
    """Suppress every identifier of the person (the subjects' and their profiles'), each
    subject's as one group; an identity already suppressed keeps its group. Returns how many
    identities are newly suppressed."""
    groups = person.groups()
    wanted = {
        identity_hash(workspace_id, t, v): (t, f"{request_id}#{subject}")
        for subject, idents in groups.items()
        for t, v in idents
    }
    existing = {
        h
        for (h,) in select_in(
            conn,
            "SELECT value_hash FROM suppressions WHERE workspace_id = ? AND value_hash IN ({keys})",
            list(wanted),
            (workspace_id,),
        )
    }
    now = now_ms()
    rows = [
        {"workspace_id": workspace_id, "value_hash": h, "type": t, "request_id": group,
         "created_at": now}
        for h, (t, group) in sorted(wanted.items())
        if h not in existing
    ]  # fmt: skip
    if rows:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(suppressions).on_conflict_do_nothing(), rows)
    return len(rows)


def remove_suppressions(conn: sa.Connection, workspace_id: str, hashes: Iterable[str]) -> int:
    """Lift the suppression groups any of ``hashes`` is in; returns the identities lifted."""
    groups = {
        group
        for (group,) in select_in(
            conn,
            "SELECT request_id FROM suppressions WHERE workspace_id = ? AND value_hash IN ({keys})",
            list(hashes),
            (workspace_id,),
        )
    }
    removed = 0
    for part in chunks(sorted(groups)):
        removed += conn.execute(
            suppressions.delete().where(
                suppressions.c.workspace_id == workspace_id, suppressions.c.request_id.in_(part)
            )
        ).rowcount
    return removed


_caches: weakref.WeakSet[SuppressionCache] = weakref.WeakSet()


class SuppressionCache:
    """A workspace's suppressed identity hashes for ingestion, re-read at most every
    ``ttl_seconds``. A workspace without suppressions costs a dict lookup and a clock read
    per call; with some, one SHA-256 per identity checked."""

    def __init__(self, store_or_engine: Store | sa.Engine, ttl_seconds: float = 2.0):
        self.engine: sa.Engine = getattr(store_or_engine, "engine", store_or_engine)
        self.ttl = ttl_seconds
        self._entries: dict[str, tuple[float, frozenset[str]]] = {}
        _caches.add(self)

    def hashes(self, workspace_id: str) -> frozenset[str]:
        now = time.monotonic()
        entry = self._entries.get(workspace_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        with self.engine.connect() as conn:
            found = frozenset(
                conn.scalars(
                    sa.select(suppressions.c.value_hash).where(
                        suppressions.c.workspace_id == workspace_id
                    )
                )
            )
        self._entries[workspace_id] = (now + self.ttl, found)
        return found

    def suppressed(self, workspace_id: str, identities: Iterable[Identifier]) -> bool:
        """Whether any of ``identities`` (type, value in stored form: as ``extract`` gives
        them) is suppressed."""
        found = self.hashes(workspace_id)
        if not found:
            return False
        return any(identity_hash(workspace_id, t, v) in found for t, v in identities)

    def invalidate(self, workspace_id: str | None = None) -> None:
        if workspace_id is None:
            self._entries.clear()
        else:
            self._entries.pop(workspace_id, None)


def invalidate_all(workspace_id: str) -> None:
    """Every SuppressionCache of this process forgets the workspace (other processes see a
    change within their cache's time)."""
    for cache in list(_caches):
        cache.invalidate(workspace_id)


# After the commit -------------------------------------------------------------------------


def forward_to_destinations(store: Store, erasure: Erasure) -> list[str]:
    """The hook for destinations (they come in a later version): send the deletion of
    ``erasure.person.identifiers`` to each destination that supports deletions, and return
    their names. There are none yet."""
    return []


# (receipt key, step) run in order after the deletion commits; a failure makes the request
# PARTIAL_SUCCESS. The lake (plait.lake, which govern may not import) adds its step
# ("lake": its event files rewritten without the person, its profile snapshot again) when
# imported: the server and `plait privacy request` import it.
AFTER_COMMIT_STEPS: list[tuple[str, Callable[[Store, Erasure], Any]]] = [
    ("forwarded_to", forward_to_destinations),
    ("physical", make_physical),
]
# What a deletion cannot reach because it does not exist in this version, said so in the
# receipt. Pending deliveries add an ERASURE_STEPS step (erase.py) and leave this.
NOT_PRESENT = {
    "pending_deliveries": "not present yet (no destinations in this version)",
}
