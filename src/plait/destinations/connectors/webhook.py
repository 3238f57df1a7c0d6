"""Webhook: each message (or a batch of them, as a JSON array) POSTed to a URL, as
Segment's webhook destination does.

- ``X-Signature``: the HMAC of the exact body with the shared ``secret``, hex; SHA-1 by
  default as Segment's, ``signature: sha256`` for SHA-256 (no secret: no header).
- ``Idempotency-Key``: the delivery key of each message in the body, comma-separated in
  the body's order (one key for one message); the same on every retry.
- ``headers``: added to every request; ``timeout``: seconds (default 5).
- A privacy deletion that forwards (DELETE_ONLY, SUPPRESS_WITH_DELETE) arrives as
  ``{"type": "delete", "userId": …, "timestamp": …}``, one per user id of the person.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx

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
from plait.store.workspaces import Invalid

SETTINGS = {
    "url": Setting(required=True, example="https://example.com/hook"),
    "secret": Setting(example="a-shared-secret", about="signs each request (X-Signature)"),
    "signature": Setting("choice", example="sha1", choices=("sha1", "sha256")),
    "headers": Setting("json", example={"X-Team": "growth"}),
    "timeout": Setting("number", example=5, about="seconds, at most 60"),
}
RESERVED = {"content-type", "content-length", "x-signature", "idempotency-key", "host"}


def signature(body: bytes, secret: str, algorithm: str = "sha1") -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()


class Webhook(Connector):
    name = "webhook"
    max_batch = 1000
    secrets = ("secret",)
    deletes = True

    def deletion(self, user_id: str, timestamp: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"type": "delete", "userId": user_id, "timestamp": timestamp}

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        url = require_url(settings, "url", where)
        secret = settings.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise Invalid(f"{where}.secret", "must be a non-empty string")
        algorithm = settings.get("signature", "sha1")
        if algorithm not in ("sha1", "sha256"):
            raise Invalid(f"{where}.signature", "must be sha1 or sha256")
        headers = settings.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in headers.items()
        ):
            raise Invalid(f"{where}.headers", "must map header names to strings")
        clash = sorted(k for k in headers if k.lower() in RESERVED)
        if clash:
            raise Invalid(f"{where}.headers", f"{clash[0]} is set by Plait")
        timeout = settings.get("timeout", 5)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 60
        ):
            raise Invalid(f"{where}.timeout", "must be seconds, more than 0 and at most 60")
        return {"url": url, "secret": secret, "signature": algorithm, "headers": headers,
                "timeout": float(timeout)}  # fmt: skip

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        raws = [item.raw for item in items]
        body = raws[0] if len(raws) == 1 else b"[" + b",".join(raws) + b"]"
        headers = {**settings["headers"], "Content-Type": "application/json",
                   "Idempotency-Key": ",".join(item.key for item in items)}  # fmt: skip
        if settings["secret"]:
            headers["X-Signature"] = signature(body, settings["secret"], settings["signature"])
        try:
            response = await client.post(settings["url"], content=body, headers=headers,
                                         timeout=settings["timeout"])  # fmt: skip
        except httpx.HTTPError as exc:
            outcome = outcome_of_error(exc)
        else:
            outcome = outcome_of(response)
        return [outcome] * len(items)
