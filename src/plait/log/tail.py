"""Following the log as events arrive: the engine of ``plait tail``, Plait's debugger.

A :class:`TailFilter` says which records to show; a :class:`Tail` polls the log from a
position (the current end, the start, or an offset) and yields the records that match.
Filtering on the record's columns (source, type) happens before the payload is parsed.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from plait.log.backends import LogBackend, LogRecord


def _lower_all(values: Iterable[str] | None) -> frozenset[str]:
    return frozenset(v.lower() for v in values or ())


@dataclass(frozen=True, slots=True)
class TailFilter:
    """Which records to show. Within one criterion any value matches (OR); criteria
    combine with AND; an empty criterion matches everything.

    - ``source_ids``: the record's source id.
    - ``types``: the message type (``track``, ``page`` ...).
    - ``events``: shell-style globs (``Order*``, ``*Viewed``), case-insensitive, matched
      against a track's ``event`` or a page's or screen's ``name``; other types never match.
    - ``users``: the message's ``userId`` or ``anonymousId``.
    """

    source_ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    events: tuple[str, ...] = ()
    users: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        source_ids: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        events: Iterable[str] | None = None,
        users: Iterable[str] | None = None,
    ) -> TailFilter:
        return cls(
            source_ids=frozenset(source_ids or ()),
            types=_lower_all(types),
            events=tuple(p.lower() for p in events or ()),
            users=frozenset(users or ()),
        )

    @property
    def needs_payload(self) -> bool:
        return bool(self.events or self.users)

    def matches_record(self, record: LogRecord) -> bool:
        """The checks that need only the record's columns."""
        if self.source_ids and record.source_id not in self.source_ids:
            return False
        return not self.types or record.type in self.types

    def matches_message(self, message: dict[str, Any]) -> bool:
        """The checks that need the message itself."""
        if self.events:
            name = event_name(message)
            if name is None:
                return False
            name = name.lower()
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.events):
                return False
        if self.users:
            ids = {str(message.get("userId") or ""), str(message.get("anonymousId") or "")}
            if not ids & self.users:
                return False
        return True


def event_name(message: dict[str, Any]) -> str | None:
    """A track's event, or a page's or screen's name (None for other types)."""
    kind = message.get("type")
    value = message.get("event") if kind == "track" else None
    if kind in ("page", "screen"):
        value = message.get("name")
    return value if isinstance(value, str) else None


def describe(message: dict[str, Any]) -> str:
    """What a message is about, in a few words: the track's event, the page's name and
    path, the identify's email (or trait names), the group, the alias."""
    kind = message.get("type")
    if kind == "track":
        return str(message.get("event", ""))
    if kind in ("page", "screen"):
        page = (message.get("context") or {}).get("page")
        path = page.get("path") if isinstance(page, dict) else None
        path = path or (message.get("properties") or {}).get("path")
        return " ".join(str(part) for part in (message.get("name"), path) if part)
    traits = message.get("traits")
    traits = traits if isinstance(traits, dict) else {}
    if kind == "identify":
        if traits.get("email"):
            return f"email={traits['email']}"
        return ", ".join(sorted(traits)) if traits else ""
    if kind == "group":
        name = traits.get("name")
        return f"{message.get('groupId')}" + (f" ({name})" if name else "")
    if kind == "alias":
        return f"{message.get('previousId')} → {message.get('userId')}"
    return ""


@dataclass(frozen=True, slots=True)
class TailEvent:
    record: LogRecord
    message: dict[str, Any]


class Tail:
    """Poll the log of one workspace (or all) and yield matching records in offset order.

    The position is fixed when the Tail is made: ``after=None`` means the current end of
    the log (only events appended from now on), ``0`` the start, any other number the
    offset to continue after. :attr:`position` is the last offset read, so a caller can
    resume from it.
    """

    def __init__(
        self,
        backend: LogBackend,
        workspace_id: str | None = None,
        filter: TailFilter | None = None,
        after: int | None = None,
        *,
        poll_interval: float = 0.5,
        page_size: int = 500,
    ):
        self.backend = backend
        self.workspace_id = workspace_id
        self.filter = filter or TailFilter()
        self.position = backend.last_offset() if after is None else max(0, after)
        self.poll_interval = poll_interval
        self.page_size = page_size
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Make :meth:`events` return at its next poll (safe from another thread)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def poll(self) -> tuple[list[TailEvent], bool]:
        """Read one page after the position; returns the matches and whether the page
        was full (more may be waiting)."""
        records = self.backend.read(self.position, self.page_size, self.workspace_id)
        matched = []
        for record in records:
            self.position = record.offset
            if not self.filter.matches_record(record):
                continue
            message = orjson.loads(record.payload)
            if self.filter.matches_message(message):
                matched.append(TailEvent(record, message))
        return matched, len(records) == self.page_size

    def events(self, limit: int | None = None, follow: bool = True) -> Iterator[TailEvent]:
        """Matching events; with ``follow`` wait for new ones every ``poll_interval``
        seconds until ``limit`` events were yielded or :meth:`stop` is called, without
        it stop at the end of the log."""
        count = 0
        while not self.stopped:
            matched, more = self.poll()
            for event in matched:
                yield event
                count += 1
                if limit is not None and count >= limit:
                    return
            if more:
                continue
            if not follow:
                return
            self._stopped.wait(self.poll_interval)

    def __iter__(self) -> Iterator[TailEvent]:
        return self.events()


def tail(
    backend: LogBackend,
    workspace_id: str | None = None,
    filter: TailFilter | None = None,
    after: int | None = None,
    *,
    limit: int | None = None,
    follow: bool = True,
    poll_interval: float = 0.5,
) -> Iterator[TailEvent]:
    """Shorthand for ``Tail(...).events(limit, follow)``; the position is taken at once."""
    return Tail(backend, workspace_id, filter, after, poll_interval=poll_interval).events(
        limit, follow
    )
