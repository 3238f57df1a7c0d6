"""Meta (Facebook) Conversions API: ``POST <endpoint>/<api_version>/<pixel_id>/events``, a
JSON body ``{"data": [...], "access_token": …, "test_event_code": …}`` (the token in the
body rather than the query string, so that it stays out of URLs and logs), at most 1,000
events a request. Followed: Meta's Conversions API pages "Using the API" (batching, the
7-day limit, a refused event refusing its whole batch), "Server event parameters",
"Customer information parameters" (what is hashed and how each value is normalized),
the Graph API's "Handling errors", Meta's Business SDK normalizer, and Segment's Facebook
Conversions API destination (its event mapping and the traits it reads).

- track → an event: Order Completed → Purchase (custom_data value (``total``, else
  ``revenue`` or ``value``), currency, contents, content_ids, num_items, order_id),
  Checkout Started → InitiateCheckout, Payment Info Entered → AddPaymentInfo, Product
  Added → AddToCart, Product Viewed → ViewContent, Product Added to Wishlist →
  AddToWishlist (the product as contents, content_name, content_category, value, currency),
  Products Searched → Search (search_string), Signed Up → CompleteRegistration; any other
  name is sent as it is, with its properties as custom_data; page → PageView;
- ``event_time`` in seconds; ``event_id`` the messageId (the id Segment's Pixel
  integration gives the browser event, so Meta deduplicates the two), else the delivery
  key; ``action_source`` the setting (``website`` by default), with ``event_source_url``
  from ``context.page.url``;
- ``user_data``: SHA-256 (hex) of the normalized em (trimmed, lowercase), ph (digits only,
  no leading zeros: it must carry its country code), fn and ln (lowercase, no punctuation),
  ct (lowercase letters only), st (lowercase, US state names as their two-letter code),
  zp (lowercase, no spaces or dash, US ZIP+4 cut to 5 digits), country (a two-letter ISO
  code, lowercase; a country name is not sent), ge (f or m), db (YYYYMMDD) and
  external_id (the userId, else the anonymousId, trimmed and lowercase); a value that is
  already a SHA-256 hex is sent as it is. Sent unhashed: client_ip_address (context.ip),
  client_user_agent (context.userAgent), fbc and fbp (``properties`` or ``context``). The
  traits are the message's ``context.traits``, then the profile's current traits.

Checked before sending (a dead letter saying why): an event more than 7 days old (Meta
refuses the whole request for one), a website event without event_source_url or
client_user_agent, a Purchase without value and currency. Meta reports no per-event errors:
a 400 refuses the whole batch, so the batch is split in halves and sent again, down to the
refused events alone, which are dead letters with Meta's error. A bad token (code 190 or
102) is a dead letter; rate limits (code 4, 17, 32, 341, 613), temporary errors (code 1,
2, or ``is_transient``), 429 and 5xx are retried. The Conversions API has no deletion:
``deletes = False``.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from typing import Any

import httpx
import orjson

from plait.destinations.connectors.base import (
    RESPONSE_CHARS,
    Connector,
    Item,
    Outcome,
    Setting,
    known_settings,
    outcome_of,
    outcome_of_error,
    require_url,
    time_ms,
)
from plait.store.workspaces import Invalid

API_VERSION = "v24.0"
ACTION_SOURCES = {"email", "website", "app", "phone_call", "chat", "physical_store",
                  "system_generated", "business_messaging", "other"}  # fmt: skip
SETTINGS = {
    "pixel_id": Setting(required=True, example="1234567890", about="the pixel (dataset) ID"),
    "access_token": Setting(required=True, example="capi-access-token"),
    "api_version": Setting(example=API_VERSION),
    "action_source": Setting("choice", example="website", choices=tuple(sorted(ACTION_SOURCES))),
    "test_event_code": Setting(example="TEST12345", about="Events Manager's test code"),
    "endpoint": Setting(example="https://graph.facebook.com"),
}
STANDARD = {
    "Order Completed": "Purchase", "Checkout Started": "InitiateCheckout",
    "Payment Info Entered": "AddPaymentInfo", "Product Added": "AddToCart",
    "Product Viewed": "ViewContent", "Product Added to Wishlist": "AddToWishlist",
    "Products Searched": "Search", "Signed Up": "CompleteRegistration",
}  # fmt: skip
MULTI_PRODUCT = {"Purchase", "InitiateCheckout", "AddPaymentInfo"}
SINGLE_PRODUCT = {"AddToCart", "ViewContent", "AddToWishlist"}
MAX_AGE = 7 * 86400
TOKEN_CODES = {102, 190}
RETRIED_CODES = {1, 2, 4, 17, 32, 341, 613}
SHA256 = re.compile(r"[0-9a-f]{64}")
US_STATES = dict(zip(
    "alabama alaska arizona arkansas california colorado connecticut delaware "
    "districtofcolumbia florida georgia hawaii idaho illinois indiana iowa kansas kentucky "
    "louisiana maine maryland massachusetts michigan minnesota mississippi missouri montana "
    "nebraska nevada newhampshire newjersey newmexico newyork northcarolina northdakota ohio "
    "oklahoma oregon pennsylvania rhodeisland southcarolina southdakota tennessee texas utah "
    "vermont virginia washington westvirginia wisconsin wyoming".split(),
    "al ak az ar ca co ct de dc fl ga hi id il in ia ks ky la me md ma mi mn ms mo mt ne nv "
    "nh nj nm ny nc nd oh ok or pa ri sc sd tn tx ut vt va wa wv wi wy".split(), strict=True,
))  # fmt: skip


def _letters(value: str) -> str:
    return "".join(c for c in value.lower() if c.isalpha())


def _name(value: str) -> str:
    return "".join(c for c in value.lower() if not unicodedata.category(c).startswith("P")).strip()


def _zip(value: str) -> str:
    value = re.sub(r"\s", "", value.lower())
    return value[:5] if re.fullmatch(r"\d{5}-\d{4}", value) else value.replace("-", "")


def _gender(value: str) -> str:
    value = value.strip().lower()
    return value[0] if value in ("f", "m", "female", "male") else ""


def _birthday(value: str) -> str:
    digits = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", value.strip()[:10])
    return "".join(digits.groups()) if digits else ""


NORMALIZE = {
    "em": lambda v: v.strip().lower(),
    "ph": lambda v: re.sub(r"\D", "", v).lstrip("0"),
    "fn": _name, "ln": _name, "ct": _letters,
    "st": lambda v: US_STATES.get(_letters(v), _letters(v)),
    "zp": _zip,
    "country": lambda v: c if len(c := _letters(v)) == 2 else "",
    "ge": _gender, "db": _birthday,
    "external_id": lambda v: v.strip().lower(),
}  # fmt: skip
TRAITS = {"em": ("email",), "ph": ("phone",), "fn": ("firstName", "first_name"),
          "ln": ("lastName", "last_name"), "ge": ("gender",), "db": ("birthday",),
          "ct": ("city",), "st": ("state",), "zp": ("postalCode", "postal_code", "zip"),
          "country": ("country",)}  # fmt: skip


def hashed(field: str, value: Any) -> str | None:
    """The SHA-256 hex of a normalized value (None when nothing is left to send)."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    value = str(value)
    if SHA256.fullmatch(value.strip().lower()):  # hashed already
        return value.strip().lower()
    normal = NORMALIZE[field](value)
    return hashlib.sha256(normal.encode()).hexdigest() if normal else None


def user_data(traits: dict[str, Any]) -> dict[str, str]:
    """The hashed customer information found in a person's traits."""
    address = traits.get("address") if isinstance(traits.get("address"), dict) else {}
    found: dict[str, str] = {}
    for field, names in TRAITS.items():
        for source in (address, traits) if field in ("ct", "st", "zp", "country") else (traits,):
            value = next((hashed(field, source[n]) for n in names if source.get(n)), None)
            if value:
                found[field] = value
                break
    return found


def _product(p: dict[str, Any]) -> dict[str, Any]:
    content = {"id": p.get("product_id") or p.get("sku"), "quantity": p.get("quantity"),
               "item_price": p.get("price")}  # fmt: skip
    return {k: v for k, v in content.items() if v is not None}


def _custom_data(name: str, props: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if name in MULTI_PRODUCT or name in SINGLE_PRODUCT:
        products = props.get("products") if name in MULTI_PRODUCT else [props]
        contents = [_product(p) for p in products or () if isinstance(p, dict)]
        contents = [c for c in contents if "id" in c]
        if contents:
            data.update(contents=contents, content_ids=[c["id"] for c in contents],
                        content_type="product")  # fmt: skip
        if name in MULTI_PRODUCT:
            if contents:
                data["num_items"] = sum(int(c.get("quantity") or 1) for c in contents)
            data["order_id"] = props.get("order_id")
            value = next((props[k] for k in ("total", "revenue", "value")
                          if props.get(k) is not None), None)  # fmt: skip
        else:
            data.update(content_name=props.get("name"), content_category=props.get("category"))
            value = props.get("value", props.get("price"))
        data["value"] = value
    elif name == "Search":
        data.update(search_string=props.get("query"), value=props.get("value"))
    elif name == "CompleteRegistration":
        data.update(status=props.get("status"), value=props.get("value"))
    elif name != "PageView":  # a custom event: its properties
        data = {k: v for k, v in props.items() if k not in ("fbc", "fbp")}
    if isinstance(props.get("currency"), str) and name != "PageView":
        data["currency"] = props["currency"].upper()
    return {k: v for k, v in data.items() if v is not None}


def _refusal(response: httpx.Response) -> tuple[Outcome, bool]:
    """The outcome of an answer, and whether it refuses the batch for one of its events."""
    outcome = outcome_of(response)
    if outcome.ok:
        return outcome, False
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    text = response.text[:RESPONSE_CHARS]
    if code in TOKEN_CODES:
        return Outcome(False, status=response.status_code, response=text), False
    if code in RETRIED_CODES or error.get("is_transient") is True:
        return Outcome(False, retry=True, status=response.status_code, response=text,
                       retry_after=outcome.retry_after), False  # fmt: skip
    return outcome, response.status_code == 400 and not outcome.retry


class MetaCapi(Connector):
    name = "meta_capi"
    max_batch = 1000
    default_batch = 200
    secrets = ("access_token",)
    maps = True
    needs_traits = True
    types = frozenset({"track", "page"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        pixel = settings.get("pixel_id")
        if isinstance(pixel, int) and not isinstance(pixel, bool):
            pixel = str(pixel)
        if not isinstance(pixel, str) or not pixel.isdigit():
            raise Invalid(f"{where}.pixel_id", "required: the pixel (dataset) ID, digits")
        token = settings.get("access_token")
        if not isinstance(token, str) or not token:
            raise Invalid(f"{where}.access_token", "required: a Conversions API access token")
        version = settings.get("api_version", API_VERSION)
        if not isinstance(version, str) or not re.fullmatch(r"v\d+\.\d+", version):
            raise Invalid(f"{where}.api_version", "a Graph API version such as v24.0")
        source = settings.get("action_source", "website")
        if source not in ACTION_SOURCES:
            raise Invalid(f"{where}.action_source",
                          f"one of {', '.join(sorted(ACTION_SOURCES))}")  # fmt: skip
        code = settings.get("test_event_code")
        if code is not None and (not isinstance(code, str) or not code):
            raise Invalid(f"{where}.test_event_code", "a non-empty string (Events Manager's)")
        endpoint = settings.get("endpoint", "https://graph.facebook.com")
        require_url({"endpoint": endpoint}, "endpoint", where)
        return {"pixel_id": pixel, "access_token": token, "api_version": version,
                "action_source": source, "test_event_code": code,
                "endpoint": endpoint.rstrip("/")}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        props = message.get("properties") or {}
        context = message.get("context") or {}
        if message.get("type") == "page":
            name = "PageView"
        else:
            event = str(message.get("event") or "")
            name = STANDARD.get(event, event)
        traits = context.get("traits") if isinstance(context.get("traits"), dict) else {}
        users = user_data(traits)
        who = message.get("userId") if message.get("userId") is not None \
            else message.get("anonymousId")  # fmt: skip
        if (external := hashed("external_id", who)) is not None:
            users["external_id"] = external
        for field, value in (("client_ip_address", context.get("ip")),
                             ("client_user_agent", context.get("userAgent")),
                             ("fbc", props.get("fbc") or context.get("fbc")),
                             ("fbp", props.get("fbp") or context.get("fbp"))):  # fmt: skip
            if isinstance(value, str) and value:
                users[field] = value
        event_data: dict[str, Any] = {"event_name": name, "user_data": users,
                                      "action_source": settings["action_source"]}  # fmt: skip
        if (ms := time_ms(message)) is not None:
            event_data["event_time"] = ms // 1000
        if message.get("messageId"):
            event_data["event_id"] = str(message["messageId"])
        url = (context.get("page") or {}).get("url") or (props.get("url") if name == "PageView"
                                                         else None)  # fmt: skip
        if url:
            event_data["event_source_url"] = url
        if custom := _custom_data(name, props):
            event_data["custom_data"] = custom
        problem = None
        if settings["action_source"] == "website" and not url:
            problem = "a website event needs event_source_url (context.page.url)"
        elif settings["action_source"] == "website" and "client_user_agent" not in users:
            problem = "a website event needs client_user_agent (context.userAgent)"
        elif name == "Purchase" and ("value" not in custom or "currency" not in custom):
            problem = "a Purchase needs a value (total) and a currency"
        if problem:
            event_data["invalid"] = f"not sent: {problem}"
        return event_data

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        outcomes: list[Outcome | None] = [None] * len(items)
        ready: list[tuple[int, dict[str, Any]]] = []
        oldest = time.time() - MAX_AGE
        for i, item in enumerate(items):
            event = dict(item.message)
            reason = event.pop("invalid", None)
            if not reason and event.get("event_time", oldest) < oldest:
                reason = "not sent: more than 7 days old, Meta refuses such events"
            if reason:
                outcomes[i] = Outcome(False, response=reason)
                continue
            event.setdefault("event_id", item.key)
            # The profile's traits fill what the message's own do not say.
            event["user_data"] = {**user_data(item.traits), **event["user_data"]}
            ready.append((i, event))
        await self._deliver(client, settings, ready, outcomes)
        return [o or Outcome(False, retry=True, response="not sent") for o in outcomes]

    async def _deliver(self, client: httpx.AsyncClient, settings: dict[str, Any],
                       part: list[tuple[int, dict[str, Any]]],
                       outcomes: list[Outcome | None]) -> None:  # fmt: skip
        """Send a part; a refused batch is split in halves until its bad events are alone."""
        if not part:
            return
        body: dict[str, Any] = {"data": [e for _, e in part],
                                "access_token": settings["access_token"]}  # fmt: skip
        if settings["test_event_code"]:
            body["test_event_code"] = settings["test_event_code"]
        url = f"{settings['endpoint']}/{settings['api_version']}/{settings['pixel_id']}/events"
        try:
            response = await client.post(url, content=orjson.dumps(body), timeout=10,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        except httpx.HTTPError as exc:
            outcome, split = outcome_of_error(exc), False
        else:
            outcome, split = _refusal(response)
        if split and len(part) > 1:
            half = len(part) // 2
            await self._deliver(client, settings, part[:half], outcomes)
            await self._deliver(client, settings, part[half:], outcomes)
            return
        for i, _ in part:
            outcomes[i] = outcome
