"""Amplitude, through its HTTP V2 API (``POST <endpoint>/2/httpapi``, the API key in the
body, at most 2,000 events a request):

- track → an event (``event_type`` the event's name, ``event_properties`` its
  properties); page and screen → ``Viewed <name> Page`` / ``Viewed <name> Screen`` (as
  Segment's Amplitude destination); identify → ``$identify`` with ``user_properties:
  {"$set": traits}``;
- ``user_id`` the userId, ``device_id`` the anonymousId, ``time`` the event time in ms,
  ``insert_id`` the delivery key (Amplitude drops a repeat within 7 days: retries never
  duplicate), ``ip`` and ``os_name``/``platform`` from the context when present.

A 400 naming events (``events_with_invalid_fields``, ``events_with_missing_fields``,
``silenced_events``) makes those dead letters and the rest of the batch is sent again; a
429 (throttled) or 5xx is retried; a 413 (too large) is retried (smaller batches are the
fix: lower ``batch_size``).
"""

from __future__ import annotations

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
from plait.store.workspaces import Invalid

SETTINGS = {
    "api_key": Setting(required=True, example="amplitude-api-key", about="the project's API key"),
    "endpoint": Setting(
        example="https://api2.amplitude.com", about="EU: https://api.eu.amplitude.com"
    ),
    "min_id_length": Setting("number", example=5, about="Amplitude's shortest user/device id"),
}
NAMED = ("events_with_invalid_fields", "events_with_missing_fields")


class Amplitude(Connector):
    name = "amplitude"
    max_batch = 2000
    default_batch = 100
    secrets = ("api_key",)
    maps = True
    types = frozenset({"track", "page", "screen", "identify"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        key = settings.get("api_key")
        if not isinstance(key, str) or not key:
            raise Invalid(f"{where}.api_key", "required: the project's API key")
        endpoint = settings.get("endpoint", "https://api2.amplitude.com")
        require_url({"endpoint": endpoint}, "endpoint", where)
        most = settings.get("min_id_length")
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise Invalid(f"{where}.min_id_length", "a whole number, at least 1")
        return {"api_key": key, "endpoint": endpoint.rstrip("/"), "min_id_length": most}

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        kind = message.get("type")
        event: dict[str, Any] = {}
        if message.get("userId") is not None:
            event["user_id"] = str(message["userId"])
        if message.get("anonymousId") is not None:
            event["device_id"] = str(message["anonymousId"])
        if kind == "identify":
            event["event_type"] = "$identify"
            event["user_properties"] = {"$set": message.get("traits") or {}}
        else:
            event["event_type"] = event_name(message)
            event["event_properties"] = message.get("properties") or {}
        if (ms := time_ms(message)) is not None:
            event["time"] = ms
        context = message.get("context") or {}
        if context.get("ip"):
            event["ip"] = context["ip"]
        if isinstance(context.get("os"), dict) and context["os"].get("name"):
            event["os_name"] = context["os"]["name"]
        return event

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        events = [{**item.message, "insert_id": item.key} for item in items]
        body: dict[str, Any] = {"api_key": settings["api_key"], "events": events}
        if settings["min_id_length"]:
            body["options"] = {"min_id_length": settings["min_id_length"]}
        try:
            response = await client.post(f"{settings['endpoint']}/2/httpapi",
                                         content=orjson.dumps(body), timeout=10,
                                         headers={"Content-Type": "application/json",
                                                  "Accept": "*/*"})  # fmt: skip
        except httpx.HTTPError as exc:
            return [outcome_of_error(exc)] * len(items)
        outcome = outcome_of(response)
        if response.status_code != 400:
            return [outcome] * len(items)
        bad = _named(response)
        if not bad:  # the whole request was refused
            return [outcome] * len(items)
        text = response.text[:RESPONSE_CHARS]
        return [Outcome(False, status=400, response=text) if i in bad else
                Outcome(False, retry=True, status=400, response="sent again: others refused")
                for i in range(len(items))]  # fmt: skip


def _named(response: httpx.Response) -> set[int]:
    """The indexes of the events a 400 names."""
    try:
        body = response.json()
    except ValueError:
        return set()
    found: set[int] = set()
    for name in NAMED:
        for indexes in (body.get(name) or {}).values():
            found |= {i for i in indexes if isinstance(i, int)}
    found |= {i for i in body.get("silenced_events") or () if isinstance(i, int)}
    return found
