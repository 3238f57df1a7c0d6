"""Mixpanel, through its Import API (``POST <endpoint>/import?strict=1&project_id=…``, a
service account's credentials in Basic auth, at most 2,000 events a request):

- track → an event named as the track's; page and screen → ``Viewed <name> Page`` /
  ``Viewed <name> Screen``; its properties with ``time`` (ms), ``distinct_id`` (the
  userId, else the anonymousId) and ``$insert_id`` (from the delivery key, 32 hex
  characters: Mixpanel's limit is 36 of [A-Za-z0-9-]; a repeat is dropped by Mixpanel);
- in strict mode a 400 lists ``failed_records`` by index: those are dead letters and the
  others were imported; 401/403 (credentials) are dead letters; 429 and 5xx are retried.
"""

from __future__ import annotations

import hashlib
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
    "project_id": Setting(required=True, example="123456"),
    "username": Setting(
        required=True, example="plait.service-account", about="a service account's username"
    ),
    "secret": Setting(required=True, example="service-account-secret"),
    "endpoint": Setting(
        example="https://api.mixpanel.com", about="EU: https://api-eu.mixpanel.com"
    ),
}


def insert_id(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:32]


class Mixpanel(Connector):
    name = "mixpanel"
    max_batch = 2000
    default_batch = 200
    secrets = ("secret",)
    maps = True
    types = frozenset({"track", "page", "screen"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        for name in ("project_id", "username", "secret"):
            value = settings.get(name)
            if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
                raise Invalid(f"{where}.{name}", "required (the service account and project)")
        endpoint = settings.get("endpoint", "https://api.mixpanel.com")
        require_url({"endpoint": endpoint}, "endpoint", where)
        return {"project_id": str(settings["project_id"]), "username": str(settings["username"]),
                "secret": str(settings["secret"]), "endpoint": endpoint.rstrip("/")}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        props = dict(message.get("properties") or {})
        who = (
            message.get("userId")
            if message.get("userId") is not None
            else message.get("anonymousId")
        )
        props["distinct_id"] = "" if who is None else str(who)
        if (ms := time_ms(message)) is not None:
            props["time"] = ms
        context = message.get("context") or {}
        if context.get("ip"):
            props["ip"] = context["ip"]
        return {"event": event_name(message), "properties": props}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        events = [{"event": i.message["event"],
                   "properties": {**i.message["properties"], "$insert_id": insert_id(i.key)}}
                  for i in items]  # fmt: skip
        try:
            response = await client.post(
                f"{settings['endpoint']}/import", params={"strict": "1",
                                                          "project_id": settings["project_id"]},
                content=orjson.dumps(events), auth=(settings["username"], settings["secret"]),
                headers={"Content-Type": "application/json"}, timeout=10,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            return [outcome_of_error(exc)] * len(items)
        outcome = outcome_of(response)
        if response.status_code != 400:
            return [outcome] * len(items)
        try:
            failed = {r.get("index") for r in response.json().get("failed_records") or ()}
        except (ValueError, AttributeError):
            failed = set()
        if not failed:
            return [outcome] * len(items)
        text = response.text[:RESPONSE_CHARS]
        return [Outcome(False, status=400, response=text) if n in failed else
                Outcome(True, status=400, response="imported (others in the batch refused)")
                for n in range(len(items))]  # fmt: skip
