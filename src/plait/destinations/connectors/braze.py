"""Braze, through its REST API: ``POST <endpoint>/users/track`` with a REST API key as
``Authorization: Bearer …`` (the endpoint is the instance's REST URL, such as
https://rest.iad-01.braze.com). Followed: braze.com/docs "Track users" (at most 75 attribute,
75 event and 75 purchase objects a request), the user attributes, event and purchase object
pages (``_update_existing_only`` false to create an alias-only profile; a purchase's
``quantity`` at most 100), "API errors and responses" (a 2xx ``{"message": "success",
"errors": [{"type", "input_array", "index"}]}`` names the objects refused, the others were
taken; a 4xx is fatal), "Rate limits" (429 with ``X-RateLimit-Reset``, the epoch second the
window resets) and "Delete users" (``POST /users/delete``, at most 50 ``external_ids``); and
Segment's Braze destination (its docs and action-destinations' braze utils: traits to
Braze's profile fields, "Order Completed" products as purchases, reserved event properties
dropped, per-index errors, ``X-Braze-Batch``).

- The person: ``external_id`` the userId; without one, ``user_alias`` ``{alias_name: the
  anonymousId, alias_label: "anonymous_id"}`` (``alias_label``) with ``_update_existing_only:
  false``, so that Braze creates the alias-only profile.
- identify → an attributes object: firstName / lastName → ``first_name`` / ``last_name``,
  birthday → ``dob`` (YYYY-MM-DD), avatar → ``image_url``, address.city / address.country →
  ``home_city`` / ``country``, gender → M/F/O/N/P, email and phone as they are; every other
  trait a custom attribute (an audience's identify: its flag, true or false).
- track → an event (``name``, ``time`` ISO 8601, ``properties`` without Braze's reserved
  time, quantity, event_name, price, currency); "Order Completed" with products → one
  purchase a product (``product_id`` from product_id, sku or name; ``currency`` the
  product's, the order's, else USD; ``price``; ``quantity``; ``properties``: the product's
  other fields and the order's); page and screen → events ``Viewed <name> Page`` / ``Loaded
  a Page`` as Segment's Braze destination logs them (leave "page" out of ``types`` to skip).
  ``app_id`` goes with events and purchases when set. (Braze records an alias's purchases
  only on a profile that exists: an anonymous order before any other call is dropped.)

A batch (75 messages at most) goes in as few requests as keep each array within 75; an
order with more products spans requests, its outcome the worst of theirs. Braze has no
idempotency key: a retried request may repeat what it took. Refused objects are dead letters
(the message of an object refused, a product without an id before any request); a 4xx for
the whole request that names objects makes those dead letters and sends the others again,
one naming none (401, 403, 404, …) makes all dead letters; 429 and 5xx are retried, a 429
after Retry-After or ``X-RateLimit-Reset``. A privacy deletion goes to ``/users/delete`` by
external id, 50 a request.
"""

from __future__ import annotations

import dataclasses
import time
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
from plait.spec.timestamps import format_ms, parse_timestamp
from plait.store.workspaces import Invalid

SETTINGS = {
    "api_key": Setting(
        required=True,
        example="braze-rest-api-key",
        about="a REST API key with users.track (and users.delete)",
    ),
    "endpoint": Setting(
        required=True, example="https://rest.iad-01.braze.com", about="the instance's REST endpoint"
    ),
    "app_id": Setting(example="braze-app-id"),
    "alias_label": Setting(example="anonymous_id", about="the user alias label of anonymous ids"),
}
ARRAYS = ("attributes", "events", "purchases")
PER_ARRAY = 75  # objects of each array a /users/track request
PER_DELETE = 50  # external ids a /users/delete request
RESERVED_PROPERTIES = {"time", "quantity", "event_name", "price", "currency"}
PRODUCT_FIELDS = {"product_id", "sku", "currency", "price", "quantity"}
IDENTITY = {"external_id", "user_alias", "braze_id", "_update_existing_only",
            "push_token_import"}  # fmt: skip
STANDARD = {"firstName": "first_name", "lastName": "last_name", "avatar": "image_url"}
GENDERS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F", "w": "F",
           "o": "O", "other": "O", "n": "N", "not applicable": "N", "p": "P",
           "prefer not to say": "P"}  # fmt: skip


class Braze(Connector):
    name = "braze"
    max_batch = PER_ARRAY
    default_batch = PER_ARRAY
    secrets = ("api_key",)
    maps = True
    deletes = True
    types = frozenset({"identify", "track", "page", "screen"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        key = settings.get("api_key")
        if not isinstance(key, str) or not key.strip():
            raise Invalid(f"{where}.api_key", "required: a REST API key with users.track "
                          "(and users.delete, for privacy deletions)")  # fmt: skip
        if "endpoint" not in settings:
            raise Invalid(f"{where}.endpoint", "required: the instance's REST endpoint, such "
                          "as https://rest.iad-01.braze.com")  # fmt: skip
        endpoint = require_url(settings, "endpoint", where).rstrip("/")
        if endpoint.endswith(("/users/track", "/users/delete")):
            raise Invalid(f"{where}.endpoint", "the instance's REST endpoint, without the "
                          "/users/… path")  # fmt: skip
        for name in ("app_id", "alias_label"):
            value = settings.get(name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise Invalid(f"{where}.{name}", "must be a non-empty string")
        return {"api_key": key.strip(), "endpoint": endpoint, "app_id": settings.get("app_id"),
                "alias_label": settings.get("alias_label") or "anonymous_id"}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """The message's objects by array (``refused``: why it cannot be sent)."""
        who = _who(message, settings)
        if who is None:
            return {"refused": "neither a userId nor an anonymousId to name the Braze user"}
        if message.get("type") == "identify":
            traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
            return {"attributes": [{**_attributes(traits), **who}]}
        ms = time_ms(message)
        at = format_ms(ms if ms is not None else int(time.time() * 1000))
        app = {"app_id": settings["app_id"]} if settings["app_id"] else {}
        props = message.get("properties") if isinstance(message.get("properties"), dict) else {}
        products = props.get("products")
        if message.get("event") == "Order Completed" and isinstance(products, list) and products:
            purchases = []
            order = {k: v for k, v in props.items() if k != "products"}
            for product in products:
                product = product if isinstance(product, dict) else {}
                product_id = next((product[k] for k in ("product_id", "sku", "name")
                                   if isinstance(product.get(k), str | int)
                                   and not isinstance(product.get(k), bool)
                                   and product[k] != ""), None)  # fmt: skip
                if product_id is None:
                    return {"refused": "a product without product_id, sku or name: Braze "
                                       "needs a product_id for each purchase"}  # fmt: skip
                purchase = {**who, **app, "product_id": str(product_id), "time": at,
                            "currency": str(product.get("currency") or order.get("currency")
                                            or "USD").upper(),
                            "price": product.get("price"),
                            "properties": {**{k: v for k, v in product.items()
                                              if k not in PRODUCT_FIELDS}, **order}}  # fmt: skip
                if product.get("quantity") is not None:
                    purchase["quantity"] = product["quantity"]
                purchases.append(purchase)
            return {"purchases": purchases}
        properties = {k: v for k, v in props.items() if k not in RESERVED_PROPERTIES}
        return {"events": [{**who, **app, "name": event_name(message), "time": at,
                            "properties": properties}]}  # fmt: skip

    def deletion(self, user_id: str, timestamp: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"type": "delete", "external_id": user_id, "timestamp": timestamp}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        outcomes: list[list[Outcome]] = [[] for _ in items]
        deletes = [i for i, item in enumerate(items) if item.message.get("type") == "delete"]
        tracked: list[tuple[int, dict[str, Any]]] = []
        for i, item in enumerate(items):
            if item.message.get("type") == "delete":
                continue
            if "refused" in item.message:
                outcomes[i].append(Outcome(False, response=item.message["refused"]))
            else:
                tracked.append((i, item.message))
        for body, owners in _requests(tracked):
            for i, outcome in (await self._track(client, settings, body, owners)).items():
                outcomes[i].append(outcome)
        for n in range(0, len(deletes), PER_DELETE):
            part = deletes[n : n + PER_DELETE]
            ids = list(dict.fromkeys(items[i].message["external_id"] for i in part))
            outcome, _ = await self._post(client, settings, "/users/delete",
                                          {"external_ids": ids})  # fmt: skip
            for i in part:
                outcomes[i].append(outcome)
        return [_worst(found) for found in outcomes]

    async def _post(self, client: httpx.AsyncClient, settings: dict[str, Any], path: str,
                    body: dict[str, Any], batch: bool = False) -> tuple[Outcome, str]:  # fmt: skip
        """The outcome of a request, and its whole response (the outcome keeps its start)."""
        headers = {"Authorization": f"Bearer {settings['api_key']}",
                   "Content-Type": "application/json"}  # fmt: skip
        if batch:
            headers["X-Braze-Batch"] = "true"  # as Segment's Braze destination sends it
        try:
            response = await client.post(f"{settings['endpoint']}{path}", timeout=10,
                                         content=orjson.dumps(body), headers=headers)  # fmt: skip
        except httpx.HTTPError as exc:
            return outcome_of_error(exc), ""
        return _outcome(response), response.text

    async def _track(self, client: httpx.AsyncClient, settings: dict[str, Any],
                     body: dict[str, list], owners: dict[str, list[int]],
                     ) -> dict[int, Outcome]:  # fmt: skip
        """One /users/track request: each owning item's outcome."""
        everyone = {i for indexes in owners.values() for i in indexes}
        count = sum(len(objects) for objects in body.values())
        outcome, text = await self._post(client, settings, "/users/track", body,
                                         batch=count > 1)  # fmt: skip
        if not outcome.ok and (outcome.retry or outcome.status is None):
            return dict.fromkeys(everyone, outcome)
        named = _named(text, owners)
        if outcome.ok:
            return {i: _refused(named[i], outcome.response) if i in named else outcome
                    for i in everyone}  # fmt: skip
        if not named:  # the request refused as a whole
            return dict.fromkeys(everyone, outcome)
        again = Outcome(False, retry=True, status=outcome.status,
                        response="sent again: others in the request refused")  # fmt: skip
        return {i: _refused(named[i], outcome.response, outcome.status) if i in named
                else again for i in everyone}  # fmt: skip


def _who(message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    if message.get("userId") not in (None, ""):
        return {"external_id": str(message["userId"])}
    if message.get("anonymousId") not in (None, ""):
        alias = {"alias_name": str(message["anonymousId"]), "alias_label": settings["alias_label"]}
        return {"user_alias": alias, "_update_existing_only": False}
    return None


def _attributes(traits: dict[str, Any]) -> dict[str, Any]:
    """Segment's traits as Braze's profile fields; the rest as custom attributes."""
    out: dict[str, Any] = {}
    for key, value in traits.items():
        if key in IDENTITY or key == "address":
            continue
        if key == "birthday":
            out["dob"] = _date(value)
        elif key == "gender" and isinstance(value, str):
            out["gender"] = GENDERS.get(value.strip().lower(), value)
        else:
            out[STANDARD.get(key, key)] = value
    address = traits.get("address")
    if isinstance(address, dict):
        for field, name in (("city", "home_city"), ("country", "country")):
            if address.get(field) is not None:
                out.setdefault(name, address[field])
    return out


def _date(value: Any) -> Any:
    """A birthday as Braze's ``dob``, YYYY-MM-DD."""
    try:
        return parse_timestamp(value).date().isoformat()
    except ValueError:
        return value


def _requests(tracked: list[tuple[int, dict[str, Any]]]) -> list[tuple[dict, dict]]:
    """The items' objects packed into requests of at most 75 of each array, in order: a
    request's body and, for each of its arrays, the item that owns each object."""
    requests: list[tuple[dict, dict]] = []
    body: dict[str, list] = {}
    owners: dict[str, list[int]] = {}
    for i, arrays in tracked:
        objects = {a: arrays[a] for a in ARRAYS if arrays.get(a)}
        if body and any(len(body.get(a, ())) + len(o) > PER_ARRAY for a, o in objects.items()):
            requests.append((body, owners))  # keep a message in one request when it fits
            body, owners = {}, {}
        for array, found in objects.items():
            for obj in found:
                if len(body.get(array, ())) == PER_ARRAY:
                    requests.append((body, owners))
                    body, owners = {}, {}
                body.setdefault(array, []).append(obj)
                owners.setdefault(array, []).append(i)
    if body:
        requests.append((body, owners))
    return requests


def _outcome(response: httpx.Response) -> Outcome:
    outcome = outcome_of(response)
    if response.status_code == 429 and outcome.retry_after is None:
        reset = response.headers.get("x-ratelimit-reset", "")
        if reset.strip().isdigit():
            outcome = dataclasses.replace(outcome, retry_after=max(0.0, int(reset) - time.time()))
    return outcome


def _named(text: str, owners: dict[str, list[int]]) -> dict[int, str]:
    """The items whose objects a response's ``errors`` name: item -> the error's type."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    named: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else ():
        if not isinstance(error, dict):
            continue
        array, index = error.get("input_array"), error.get("index")
        found = owners.get(array) if isinstance(array, str) else None
        if found and isinstance(index, int) and not isinstance(index, bool) \
                and 0 <= index < len(found):  # fmt: skip
            named.setdefault(found[index], f"{error.get('type')} ({array}[{index}])")
    return named


def _refused(why: str, text: str, status: int = 400) -> Outcome:
    return Outcome(False, status=status, response=f"{why}: {text}"[:RESPONSE_CHARS])


def _worst(found: list[Outcome]) -> Outcome:
    """An item's outcome over its requests: a refusal, else a retry, else delivered."""
    return (next((o for o in found if not o.ok and not o.retry), None)
            or next((o for o in found if not o.ok), None)
            or (found[0] if found else Outcome(True, response="nothing to send")))  # fmt: skip
