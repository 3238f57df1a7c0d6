"""Slack, through an incoming webhook: one message a request, ``{"text": …}`` made from
the ``template`` (Python format fields over the message: ``{event}``, ``{userId}``,
``{properties[revenue]}``; a field the message lacks is left empty). Slack answers 200
``ok``; a 400/403/404 (``invalid_payload``, ``no_service``, ``channel_not_found`` …) is a
dead letter; a 429 is retried after its Retry-After.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from plait.destinations.connectors.base import (
    Connector,
    Item,
    Outcome,
    Setting,
    known_settings,
    outcome_of,
    outcome_of_error,
    require_url,
)
from plait.destinations.templates import check_template, render
from plait.store.workspaces import Invalid

DEFAULT_TEMPLATE = "{type} {event} from {userId}"
SETTINGS = {
    "url": Setting(
        required=True,
        example="https://hooks.slack.com/services/T0/B0/XXXX",
        about="the incoming webhook's URL",
    ),
    "template": Setting(example=DEFAULT_TEMPLATE),
    "channel": Setting(example="#events"),
    "username": Setting(example="Plait"),
}


class Slack(Connector):
    name = "slack"
    max_batch = 1
    secrets = ("url",)  # the webhook URL is the credential
    maps = True

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        url = require_url(settings, "url", where)
        template = check_template(settings.get("template", DEFAULT_TEMPLATE), f"{where}.template")
        for name in ("channel", "username"):
            if settings.get(name) is not None and not isinstance(settings[name], str):
                raise Invalid(f"{where}.{name}", "must be a string")
        return {"url": url, "template": template, "channel": settings.get("channel"),
                "username": settings.get("username")}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        body = {"text": render(settings["template"], message)}
        for name in ("channel", "username"):
            if settings.get(name):
                body[name] = settings[name]
        return body

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        try:
            response = await client.post(settings["url"], content=orjson.dumps(items[0].message),
                                         headers={"Content-Type": "application/json"},
                                         timeout=10)  # fmt: skip
        except httpx.HTTPError as exc:
            return [outcome_of_error(exc)]
        return [outcome_of(response)]
