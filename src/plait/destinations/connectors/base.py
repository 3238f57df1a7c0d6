"""What a connector is: how it checks its settings, maps a message to its payload, and
sends a batch of payloads; and the outcome of a send, from an HTTP response or an error
(which failures are retried is decided here, once, for every HTTP connector)."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from plait.spec.timestamps import parse_timestamp
from plait.store.workspaces import Invalid

RESPONSE_CHARS = 1000  # of a response body kept with a delivery


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    retry: bool = False  # a failure worth retrying (timeouts, 429, 5xx)
    status: int | None = None  # the HTTP status, None when there was no response
    response: str = ""  # the response body's start, or the error
    retry_after: float | None = None  # seconds the server asked to wait


class Item:
    """One message to deliver: its key (stable across retries) and payload, as JSON text
    (``raw``: the processed message passed through untouched, never parsed again) or as
    an object (a connector's mapping); each is made from the other when asked."""

    __slots__ = ("key", "_raw", "_message", "profile_id", "traits")

    def __init__(self, key: str, raw: bytes | None = None, message: dict | None = None,
                 profile_id: str | None = None):  # fmt: skip
        self.key, self._raw, self._message = key, raw, message
        self.profile_id = profile_id  # the person's profile, when the message has one
        self.traits: dict[str, Any] = {}  # its current traits (connectors that need them)

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = orjson.dumps(self._message)
        return self._raw

    @property
    def message(self) -> dict[str, Any]:
        if self._message is None:
            self._message = orjson.loads(self._raw)
        return self._message


AUDIENCE_EVENTS = {"Audience Entered": True, "Audience Exited": False}


def event_name(message: dict[str, Any]) -> str:
    """A track's event; a page or screen as ``Viewed <name> Page`` / ``Viewed <name>
    Screen`` (``Loaded a Page`` without a name), as Segment's vendor destinations name them."""
    kind = message.get("type")
    if kind in ("page", "screen"):
        name = message.get("name")
        return f"Viewed {name} {kind.title()}" if name else f"Loaded a {kind.title()}"
    return str(message.get("event") or "")


def time_ms(message: dict[str, Any], field: str = "timestamp") -> int | None:
    """A message's time in milliseconds since the epoch (None when it has none)."""
    try:
        return int(parse_timestamp(message.get(field)).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def memberships(message: dict[str, Any]) -> dict[str, bool]:
    """The audiences a message of the audience step moves a person into (True) or out of:
    an identify with ``context.personas.computation_class: audience`` and the audience's
    flag, or "Audience Entered" / "Audience Exited" with ``properties.audience_key``."""
    if message.get("type") == "identify":
        personas = (message.get("context") or {}).get("personas") or {}
        traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
        key = personas.get("computation_key")
        if personas.get("computation_class") == "audience" and isinstance(key, str) \
                and isinstance(traits.get(key), bool):  # fmt: skip
            return {key: traits[key]}
    elif message.get("type") == "track" and message.get("event") in AUDIENCE_EVENTS:
        key = (message.get("properties") or {}).get("audience_key")
        if isinstance(key, str):
            return {key: AUDIENCE_EVENTS[message["event"]]}
    return {}


def retry_after(value: str | None) -> float | None:
    """A Retry-After header: seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def outcome_of(response: httpx.Response) -> Outcome:
    """2xx delivered; 408, 429 and 5xx retried (429 and 503 after Retry-After); any other
    status is a permanent failure, kept as a dead letter with the response."""
    status = response.status_code
    body = response.text[:RESPONSE_CHARS]
    if 200 <= status < 300:
        return Outcome(True, status=status, response=body)
    retryable = status in (408, 429) or status >= 500
    wait = retry_after(response.headers.get("retry-after")) if retryable else None
    return Outcome(False, retry=retryable, status=status, response=body, retry_after=wait)


def outcome_of_error(exc: Exception) -> Outcome:
    """No response (a timeout, a refused or broken connection): retried."""
    return Outcome(False, retry=True, response=f"{type(exc).__name__}: {exc}"[:RESPONSE_CHARS])


class Connector:
    """A kind of destination. Subclasses set ``name``, ``max_batch`` and ``secrets`` and
    implement ``check`` and ``send``; ``payload`` maps a Plait message (Segment's shape)
    to what the connector sends, the message itself unless the connector says otherwise."""

    name = ""
    max_batch = 1
    default_batch = 1  # messages a request when the destination does not say
    lanes = 8  # batches sent at once (by person, so that each person's order holds)
    types: frozenset[str] | None = None  # message types it takes (None: all)
    needs_traits = False  # True: items come with their profile's current traits
    secrets: tuple[str, ...] = ()  # settings shown masked
    maps = False  # True: ``payload`` changes the message (else it goes as it is)
    deletes = False  # True: privacy deletions are forwarded to it (``deletion``)

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        raise NotImplementedError

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        return message

    def deletion(self, user_id: str, timestamp: str, settings: dict[str, Any]) -> dict[str, Any]:
        """What tells the destination to delete a user (``deletes`` connectors)."""
        raise NotImplementedError

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        """One outcome per item, in order."""
        raise NotImplementedError


def require_url(settings: dict[str, Any], name: str, where: str) -> str:
    url = settings.get(name)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise Invalid(f"{where}.{name}", "required: an http:// or https:// URL")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise Invalid(f"{where}.{name}", f"not a URL: {exc}") from None
    return url


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting a connector takes, as forms show it (the console's destination editor,
    ``GET /api/v1/destination-types``); the connector's check() stays the judge, and the
    tests hold each declaration to it (the example passes, a missing required one fails).

    kind: text | number | boolean | choice (one of ``choices``) | json (an object)."""

    kind: str = "text"
    required: bool = False
    example: Any = None  # a value check() accepts: the form's placeholder
    choices: tuple[str, ...] = ()
    about: str = ""

    def describe(self, name: str, secret: bool) -> dict[str, Any]:
        return {"name": name, "kind": self.kind, "required": self.required, "secret": secret,
                "example": self.example, "choices": list(self.choices),
                "about": self.about}  # fmt: skip


def known_settings(settings: dict[str, Any], names: dict[str, Setting], where: str) -> None:
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise Invalid(f"{where}.{unknown[0]}",
                      f"unknown setting; expected {', '.join(sorted(names))}")  # fmt: skip
