"""Customer.io, through its Track API v2 batch endpoint (``POST <endpoint>/api/v2/batch``,
the workspace's site id and Track API key in Basic auth; ``region`` us → track.customer.io,
eu → track-eu.customer.io). Followed: docs.customer.io "Journeys Track API" (the v2 batch:
``{"batch": [entity, …]}`` of people entries ``{type: person, identifiers, action, …}``, a
request smaller than 500 KB and each entry at most 32 KB; the US and EU hosts; Basic auth),
"Deduplicating events" (an event's ``id``, a ULID: a repeat is not processed again) and
Segment's Customer.io destination (action-destinations' customerio utils: entries by action,
identifiers ``id`` / ``email`` / ``cio_id`` / ``anonymous_id``, ISO dates as Unix seconds,
a 200 or 207 whose ``errors`` name entries by ``batch_index``).

- The person: ``identifiers`` from the userId (``id``; an email address → ``email``;
  ``cio_…`` → ``cio_id``), else, for events, ``anonymous_id`` (Customer.io keeps anonymous
  events and merges them into the person identified later with that ``anonymous_id``).
- identify → ``action: identify`` with the traits as ``attributes`` (and the anonymousId as
  ``anonymous_id``, to merge the person's anonymous events); without a userId, by the email
  trait; with neither, a dead letter (Customer.io names people by id or email). An
  audience's identify sets its flag as an attribute.
- track → ``action: event`` (``name``, ``attributes`` its properties); page → ``action:
  page`` named by its URL (``properties.url``, ``context.page.url``, else its name); screen →
  ``action: screen`` named as the screen. Each with ``timestamp`` (Unix seconds), and events,
  pages and screens with ``id``: a ULID from the delivery key (the same on every retry, so
  Customer.io drops a repeat). ISO 8601 dates among attributes become Unix seconds.

Entries go in order, as many a request as keep it under 500 KB; an entry over 32 KB is a dead
letter, never sent. A 2xx (200, 207) naming entries in ``errors`` makes those dead letters,
the others were taken; a 4xx that names entries makes those dead letters and sends the
others again (event ids keep that safe); one naming none (401, 403, …) makes all dead
letters; 429 and 5xx are retried. A privacy deletion is ``action: delete`` for the user id.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import orjson

from plait.destinations.connectors.base import (
    RESPONSE_CHARS,
    Connector,
    Item,
    Outcome,
    Setting,
    event_name,
    known_settings,
    outcome_of,
    outcome_of_error,
    require_url,
    time_ms,
)
from plait.spec.timestamps import parse_timestamp
from plait.store.workspaces import Invalid

REGIONS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
SETTINGS = {
    "site_id": Setting(required=True, example="cio-site-id", about="the Track API site id"),
    "api_key": Setting(required=True, example="cio-track-api-key", about="the Track API key"),
    "region": Setting("choice", example="us", choices=tuple(REGIONS), about="the data center"),
    "endpoint": Setting(example="https://track.customer.io"),
}
MAX_REQUEST = 500_000  # bytes a batch request (500 KB, read as 1,000 bytes a KB)
MAX_ENTRY = 32_000  # bytes an entry (32 KB)
EVENTS = {"event", "page", "screen"}  # the actions that take an ``id`` to deduplicate
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
                      r"(Z|[+-]\d{2}:?\d{2})?)?")  # fmt: skip
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def identifiers(user_id: str) -> dict[str, str]:
    """A userId as Customer.io's identifiers, as Segment's Customer.io destination reads it."""
    if user_id.startswith("cio_"):
        return {"cio_id": user_id[4:]}
    if EMAIL.fullmatch(user_id):
        return {"email": user_id}
    return {"id": user_id}


def ulid(key: str, ms: int) -> str:
    """A ULID (26 Crockford base-32 characters: 48 bits of time, 80 more) made from the
    delivery key, so that it is the same on every retry."""
    value = (ms & (2**48 - 1)) << 80 | int.from_bytes(hashlib.sha256(key.encode()).digest()[:10])
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


class CustomerIo(Connector):
    name = "customerio"
    max_batch = 1000
    default_batch = 100
    secrets = ("api_key",)
    maps = True
    deletes = True
    types = frozenset({"identify", "track", "page", "screen"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        for name in ("site_id", "api_key"):
            value = settings.get(name)
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                raise Invalid(f"{where}.{name}", "required: the workspace's Track API site id "
                              "and API key")  # fmt: skip
        region = settings.get("region", "us")
        if region not in REGIONS:
            raise Invalid(f"{where}.region", "must be us or eu (the workspace's data center)")
        endpoint = settings.get("endpoint", REGIONS[region])
        require_url({"endpoint": endpoint}, "endpoint", where)
        return {"site_id": str(settings["site_id"]), "api_key": str(settings["api_key"]),
                "region": region, "endpoint": endpoint.rstrip("/")}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """The message's entry (``refused``: why it cannot be sent)."""
        kind = message.get("type")
        user_id = message.get("userId")
        anonymous = message.get("anonymousId")
        entry: dict[str, Any] = {"type": "person"}
        if kind == "identify":
            traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
            if user_id not in (None, ""):
                entry["identifiers"] = identifiers(str(user_id))
            elif isinstance(traits.get("email"), str) and traits["email"]:
                entry["identifiers"] = {"email": traits["email"]}
            else:
                return {"refused": "neither a userId nor an email trait: Customer.io "
                                   "identifies people by id or email"}  # fmt: skip
            entry["action"] = "identify"
            entry["attributes"] = _unix_dates(traits)
            if anonymous not in (None, ""):
                entry["attributes"]["anonymous_id"] = str(anonymous)
        else:
            if user_id not in (None, ""):
                entry["identifiers"] = identifiers(str(user_id))
            elif anonymous not in (None, ""):
                entry["identifiers"] = {"anonymous_id": str(anonymous)}
            else:
                return {"refused": "neither a userId nor an anonymousId"}
            props = message.get("properties")
            props = props if isinstance(props, dict) else {}
            page = (message.get("context") or {}).get("page") or {}
            if kind == "page":
                url = props.get("url") or (page.get("url") if isinstance(page, dict) else None)
                entry["action"], entry["name"] = "page", url or message.get("name")
            elif kind == "screen":
                entry["action"], entry["name"] = "screen", message.get("name")
            else:
                entry["action"], entry["name"] = "event", message.get("event")
            entry["name"] = str(entry["name"] or event_name(message))
            entry["attributes"] = _unix_dates(props)
        if (ms := time_ms(message)) is not None:
            entry["timestamp"] = ms // 1000
        return entry

    def deletion(self, user_id: str, timestamp: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"type": "person", "identifiers": identifiers(user_id), "action": "delete"}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        outcomes: list[Outcome | None] = [None] * len(items)
        requests: list[list[tuple[int, bytes]]] = [[]]
        size = len(b'{"batch":[]}')
        for i, item in enumerate(items):
            entry = item.message
            if "refused" in entry:
                outcomes[i] = Outcome(False, response=entry["refused"])
                continue
            if entry.get("action") in EVENTS:  # its dedup id, from the key
                entry = {**entry, "id": ulid(item.key, int(entry.get("timestamp") or 0) * 1000)}
            raw = orjson.dumps(entry)
            if len(raw) > MAX_ENTRY:
                outcomes[i] = Outcome(False, response=f"an entry of {len(raw)} bytes: over "
                                      f"Customer.io's {MAX_ENTRY} bytes an entry")  # fmt: skip
                continue
            if requests[-1] and size + len(raw) + 1 > MAX_REQUEST:
                requests.append([])
                size = len(b'{"batch":[]}')
            requests[-1].append((i, raw))
            size += len(raw) + (1 if len(requests[-1]) > 1 else 0)
        for request in requests:
            if request:
                for i, outcome in zip((i for i, _ in request),
                                      await self._batch(client, settings, [r for _, r in request]),
                                      strict=True):  # fmt: skip
                    outcomes[i] = outcome
        return [o or Outcome(False, response="not sent") for o in outcomes]

    async def _batch(self, client: httpx.AsyncClient, settings: dict[str, Any],
                     entries: list[bytes]) -> list[Outcome]:  # fmt: skip
        body = b'{"batch":[' + b",".join(entries) + b"]}"
        try:
            response = await client.post(f"{settings['endpoint']}/api/v2/batch", content=body,
                                         auth=(settings["site_id"], settings["api_key"]),
                                         headers={"Content-Type": "application/json"},
                                         timeout=10)  # fmt: skip
        except httpx.HTTPError as exc:
            return [outcome_of_error(exc)] * len(entries)
        outcome = outcome_of(response)
        status = response.status_code
        if not (200 <= status < 300 or (400 <= status < 500 and not outcome.retry)):
            return [outcome] * len(entries)
        named = _named(response, len(entries))
        text = response.text
        if 200 <= status < 300:
            return [_refused(named[n], text) if n in named else outcome
                    for n in range(len(entries))]  # fmt: skip
        if not named:  # the request refused as a whole
            return [outcome] * len(entries)
        again = Outcome(False, retry=True, status=status,
                        response="sent again: others in the batch refused")  # fmt: skip
        return [_refused(named[n], text, status) if n in named else again
                for n in range(len(entries))]  # fmt: skip


def _unix_dates(value: Any) -> Any:
    """ISO 8601 date strings as Unix seconds, in objects at any depth (as Segment's
    Customer.io destination converts them: Customer.io compares dates as numbers)."""
    if isinstance(value, dict):
        return {k: _unix_dates(v) for k, v in value.items()}
    if isinstance(value, str) and ISO_DATE.fullmatch(value):
        try:
            return int(parse_timestamp(value).timestamp())
        except ValueError:
            return value
    return value


def _named(response: httpx.Response, count: int) -> dict[int, str]:
    """The entries a response's ``errors`` name: batch index -> what was wrong."""
    try:
        body = response.json()
    except ValueError:
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    named: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else ():
        index = error.get("batch_index") if isinstance(error, dict) else None
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < count:
            why = error.get("message") or error.get("reason") or "refused"
            field = f" ({error['field']})" if error.get("field") else ""
            named.setdefault(index, f"{why}{field}")
    return named


def _refused(why: str, text: str, status: int = 400) -> Outcome:
    return Outcome(False, status=status, response=f"{why}: {text}"[:RESPONSE_CHARS])
