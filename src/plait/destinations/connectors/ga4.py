"""Google Analytics 4, through the Measurement Protocol for web streams (``POST <endpoint>
/mp/collect?measurement_id=G-…&api_secret=…``, a JSON body; ``region: eu`` sends to
region1.google-analytics.com). Followed: Google's Measurement Protocol reference and its
"Send events" and "Send user properties" guides (limits, 72-hour backdating, reserved
names), the GA4 recommended-events reference, and Segment's Google Analytics 4 (cloud)
destination for which Segment event becomes which GA4 event.

- track → an event: Segment's e-commerce and lifecycle events become GA4's recommended
  ones (``RECOMMENDED``: Order Completed → purchase with transaction_id, value (``total``),
  currency and items (``products``); Product Added → add_to_cart with the product as its
  item; Product Viewed → view_item; Products Searched → search with search_term (``query``);
  Signed Up → sign_up, Signed In → login, with method (``type``); …); any other name is
  snake_cased ("Order Shipped" → order_shipped); the other properties become parameters
  (names snake_cased, true/false sent as "true"/"false", nulls left out);
- page → page_view with page_location, page_title and page_referrer;
- identify → an ``identify`` event carrying the traits as ``user_properties`` (GA4 takes
  user properties only with an event); traits that identify a person (email, phone, names,
  address, birthday: Google's policy forbids them) and nested traits are left out;
- client_id is the browser's GA client id when the message carries it
  (``integrations["Google Analytics 4"].clientId`` or ``properties.client_id``, as Segment
  asks), else the anonymousId, else the userId; user_id is the userId; each event has its
  own ``timestamp_micros``; ``session_id`` comes from ``integrations["Google Analytics
  4"].sessionId``; ``engagement_time_msec`` is 1 unless given (as Segment does, so the
  users count as active).

GA4 answers 2xx even for events it drops and never says which, so each event is checked
here against the documented rules and a refused one is a dead letter saying why: names
(letters, digits and _, starting with a letter, at most 40 characters; reserved names and
the ga_/google_/firebase_ prefixes), at most 25 parameters of strings and numbers (at most
100 characters; page_location 1,000, page_title 300, page_referrer 420), items each with an
item_id or item_name, at most 25 user properties (names 24 characters, values 36), for the
recommended events a transaction_id (purchase, refund) and a currency with a value, a time
at most 72 hours ago (GA4 drops older events) and a body under 130 kB. Screen, group and
alias calls are not sent (its types: track, page, identify).

A request carries one client_id/user_id, so a batch is sent as one request per person's
run of events: at most 25 events, a new one at each identify (its user properties apply
from there on); a person's requests go in order, and when one is retried the later ones
wait with it. 429 and 5xx are retried. The Measurement Protocol has no idempotency key (a
retried request can count twice; GA4 deduplicates purchases by transaction_id) and no
deletion (GA4's User Deletion API is a separate OAuth API): ``deletes = False``.
"""

from __future__ import annotations

import asyncio
import re
import time
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
    time_ms,
)
from plait.store.workspaces import Invalid

REGIONS = {"global": "https://www.google-analytics.com",
           "eu": "https://region1.google-analytics.com"}  # fmt: skip
SETTINGS = {
    "measurement_id": Setting(
        required=True, example="G-ABC123XYZ", about="the web stream's measurement ID"
    ),
    "api_secret": Setting(
        required=True,
        example="mp-api-secret",
        about="a Measurement Protocol API secret of the stream",
    ),
    "region": Setting("choice", example="global", choices=tuple(REGIONS)),
    "endpoint": Setting(example="https://www.google-analytics.com"),
}
MEASUREMENT_ID = re.compile(r"G-[A-Z0-9]{4,20}")
INTEGRATION = "Google Analytics 4"  # the message's integrations key for its options
MAX_EVENTS = 25
MAX_BODY = 130_000  # bytes: "the post body must be smaller than 130kB"
MAX_AGE_US = 72 * 3600 * 1_000_000
CONCURRENCY = 8  # requests at once for one batch

RECOMMENDED = {
    "Order Completed": "purchase", "Order Refunded": "refund",
    "Product Added": "add_to_cart", "Product Removed": "remove_from_cart",
    "Product Added to Wishlist": "add_to_wishlist", "Product Viewed": "view_item",
    "Product Clicked": "select_item", "Product List Viewed": "view_item_list",
    "Cart Viewed": "view_cart", "Checkout Started": "begin_checkout",
    "Payment Info Entered": "add_payment_info", "Promotion Viewed": "view_promotion",
    "Promotion Clicked": "select_promotion", "Products Searched": "search",
    "Signed Up": "sign_up", "Signed In": "login",
}  # fmt: skip
ECOMMERCE = set(RECOMMENDED.values())
PROMOTION = {"name": "promotion_name", "creative": "creative_name", "position": "creative_slot"}
RENAMES: dict[str, dict[str, str]] = {  # Segment property → GA4 parameter
    "purchase": {"order_id": "transaction_id", "total": "value", "revenue": "value"},
    "refund": {"order_id": "transaction_id", "total": "value", "revenue": "value"},
    "begin_checkout": {"revenue": "value"},
    "add_payment_info": {"payment_method": "payment_type"},
    "view_item_list": {"list_id": "item_list_id", "category": "item_list_name"},
    "search": {"query": "search_term"},
    "sign_up": {"type": "method"}, "login": {"type": "method"},
    "view_promotion": PROMOTION, "select_promotion": PROMOTION,
}  # fmt: skip
SINGLE_PRODUCT = {"add_to_cart", "remove_from_cart", "add_to_wishlist", "view_item",
                  "select_item"}  # fmt: skip
ITEM_FIELDS = {"product_id": "item_id", "sku": "item_id", "name": "item_name",
               "brand": "item_brand", "category": "item_category", "variant": "item_variant",
               "price": "price", "quantity": "quantity", "position": "index",
               "coupon": "coupon", "affiliation": "affiliation"}  # fmt: skip
# Firebase's reserved event names, which the Measurement Protocol reference points to.
RESERVED_EVENTS = set(
    "ad_activeview ad_click ad_exposure ad_impression ad_query ad_reward adunit_exposure "
    "app_background app_clear_data app_exception app_remove app_store_refund "
    "app_store_subscription_cancel app_store_subscription_convert app_store_subscription_renew "
    "app_update app_upgrade dynamic_link_app_open dynamic_link_app_update "
    "dynamic_link_first_open error first_open first_visit in_app_purchase "
    "notification_dismiss notification_foreground notification_open notification_receive "
    "os_update session_start session_start_with_rollout user_engagement".split()
)
RESERVED_USER_PROPERTIES = {"first_open_time", "first_visit_time", "last_deep_link_referrer",
                            "user_id", "first_open_after_install"}  # fmt: skip
RESERVED_PREFIXES = ("ga_", "google_", "firebase_")
PII = {"email", "phone", "name", "first_name", "last_name", "username", "address",
       "birthday"}  # fmt: skip
LONGER = {"page_location": 1000, "page_title": 300, "page_referrer": 420}
NAME = re.compile(r"[^\W\d_]\w*")  # starts with a letter; letters, digits, _


def snake(name: str) -> str:
    """Order Completed → order_completed, orderId → order_id."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[\W_]+", "_", name).strip("_").lower()


def _bad_name(name: str, what: str, most: int, reserved: set[str] = frozenset()) -> str | None:
    if not NAME.fullmatch(name):
        return f"the {what} {name!r} is not a GA4 name (letters, digits and _, from a letter)"
    if len(name) > most:
        return f"the {what} {name!r} is longer than GA4's {most} characters"
    if name in reserved or name.startswith(RESERVED_PREFIXES):
        return f"the {what} {name!r} is reserved by GA4"
    return None


def _scalar(value: Any, most: int) -> tuple[Any, str | None]:
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int | float):
        return value, None
    if isinstance(value, str):
        return value, (f"{len(value)} characters, GA4's limit is {most}"
                       if len(value) > most else None)  # fmt: skip
    return None, "a nested value; GA4 parameters are strings and numbers"


def _item(product: Any) -> tuple[dict[str, Any], str | None]:
    if not isinstance(product, dict):
        return {}, "a product that is not an object"
    item: dict[str, Any] = {}
    for field, name in ITEM_FIELDS.items():
        if product.get(field) is not None and name not in item:
            value, problem = _scalar(product[field], 100)
            if problem:
                return {}, f"item {name}: {problem}"
            item[name] = value
    if "item_id" not in item and "item_name" not in item:
        return {}, "an item without item_id (product_id) or item_name (name), GA4 needs one"
    return item, None


def _params(props: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    params: dict[str, Any] = {}
    for key, value in props.items():
        if value is None:
            continue
        name = snake(str(key))
        if problem := _bad_name(name, "parameter", 40):
            return {}, problem
        if name == "items" and isinstance(value, list):
            params[name] = value
            continue
        params[name], problem = _scalar(value, LONGER.get(name, 100))
        if problem:
            return {}, f"parameter {name!r}: {problem}"
    if len(params) > 25:
        return {}, f"{len(params)} parameters; GA4 takes at most 25 an event"
    return params, None


def _ecommerce(name: str, props: dict[str, Any]) -> str | None:
    """Segment's e-commerce properties in GA4's terms (in place); a problem, if any."""
    for source, target in RENAMES.get(name, {}).items():
        if source in props:
            value = props.pop(source)
            props.setdefault(target, value)
    if name in SINGLE_PRODUCT:  # the product is the event's properties
        fields = (*ITEM_FIELDS, "url", "image_url")
        products: Any = [{field: props.pop(field) for field in fields if field in props}]
    else:
        products = props.pop("products", None)
    if isinstance(products, list):
        items = []
        for product in products:
            item, problem = _item(product)
            if problem:
                return problem
            items.append(item)
        props["items"] = items
    if isinstance(props.get("currency"), str):
        props["currency"] = props["currency"].upper()
    if name in ("purchase", "refund") and props.get("transaction_id") in (None, ""):
        return f"{name} needs a transaction_id (the order_id property)"
    if props.get("value") is not None and not props.get("currency"):
        return "a value needs a currency (GA4 requires it)"
    return None


def _user_properties(traits: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    found: dict[str, Any] = {}
    for key, value in traits.items():
        name = snake(str(key))
        if value is None or name in PII or isinstance(value, dict | list):
            continue
        if problem := _bad_name(name, "user property", 24, RESERVED_USER_PROPERTIES):
            return {}, problem
        value, problem = _scalar(value, 36)
        if problem:
            return {}, f"user property {name!r}: {problem}"
        found[name] = {"value": value}
    if len(found) > 25:
        return {}, f"{len(found)} user properties; GA4 takes at most 25 a request"
    return found, None


class GA4(Connector):
    name = "ga4"
    max_batch = 500  # split here into requests of one person's events, at most 25 each
    default_batch = 100
    secrets = ("api_secret",)
    maps = True
    types = frozenset({"track", "page", "identify"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        mid = settings.get("measurement_id")
        if not isinstance(mid, str) or not MEASUREMENT_ID.fullmatch(mid):
            raise Invalid(f"{where}.measurement_id", "required: the web stream's measurement "
                                                     "ID, G- and letters or digits")  # fmt: skip
        secret = settings.get("api_secret")
        if not isinstance(secret, str) or not secret:
            raise Invalid(f"{where}.api_secret", "required: a Measurement Protocol API secret "
                                                 "of the stream")  # fmt: skip
        region = settings.get("region", "global")
        if region not in REGIONS:
            raise Invalid(f"{where}.region", "must be global or eu")
        endpoint = settings.get("endpoint", REGIONS[region])
        require_url({"endpoint": endpoint}, "endpoint", where)
        return {"measurement_id": mid, "api_secret": secret, "region": region,
                "endpoint": endpoint.rstrip("/")}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        kind = message.get("type")
        props = dict(message.get("properties") or {})
        options = (message.get("integrations") or {}).get(INTEGRATION)
        options = options if isinstance(options, dict) else {}
        from_props = props.pop("client_id", None)
        who = options.get("clientId") or from_props or message.get("anonymousId") \
            or message.get("userId")  # fmt: skip
        out: dict[str, Any] = {"client_id": str(who)}
        if message.get("userId") is not None:
            out["user_id"] = str(message["userId"])
        problem = None
        if kind == "identify":
            name, props = "identify", {}
            out["user_properties"], problem = _user_properties(message.get("traits") or {})
        elif kind == "page":
            name = "page_view"
            page = (message.get("context") or {}).get("page") or {}
            for param, field in (("page_location", "url"), ("page_title", "title"),
                                 ("page_referrer", "referrer")):  # fmt: skip
                value = props.pop(field, None) or page.get(field)
                if param == "page_title":
                    value = value or message.get("name")
                props.setdefault(param, value)
            for field in ("path", "search", "name"):  # in page_location, page_title
                props.pop(field, None)
        else:
            event = str(message.get("event") or "")
            name = RECOMMENDED.get(event) or snake(event)
            problem = _bad_name(name, "event name", 40, RESERVED_EVENTS)
            if not problem and name in ECOMMERCE:
                problem = _ecommerce(name, props)
        if options.get("sessionId") is not None:
            props.setdefault("session_id", options["sessionId"])
        props.setdefault("engagement_time_msec", 1)
        params, bad = _params(props)
        event = {"name": name, "params": params}
        if (ms := time_ms(message)) is not None:
            event["timestamp_micros"] = ms * 1000
        out["event"] = event
        if problem or bad:
            out["invalid"] = f"not sent: {problem or bad}"
        return out

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        outcomes: list[Outcome | None] = [None] * len(items)
        runs: dict[tuple[str, str | None], list[list[int]]] = {}
        sizes: dict[int, int] = {}  # a request's bytes, by its first item
        oldest = time.time_ns() // 1000 - MAX_AGE_US
        for i, item in enumerate(items):
            m = item.message
            size = len(orjson.dumps(m["event"])) + len(orjson.dumps(m.get("user_properties")))
            reason = m.get("invalid")
            if not reason and m["event"].get("timestamp_micros", oldest) < oldest:
                reason = "not sent: more than 72 hours old, GA4 drops such events"
            if not reason and size + 200 >= MAX_BODY:
                reason = "not sent: larger than GA4's 130 kB a request"
            if reason:
                outcomes[i] = Outcome(False, response=reason)
                continue
            chunks = runs.setdefault((m["client_id"], m.get("user_id")), [[]])
            last = chunks[-1]
            if last and (len(last) == MAX_EVENTS or m.get("user_properties")
                         or sizes[last[0]] + size + 200 >= MAX_BODY):  # fmt: skip
                chunks.append(last := [])
            if not last:
                sizes[i] = 0
            last.append(i)
            sizes[last[0]] += size
        gate = asyncio.Semaphore(CONCURRENCY)

        async def person(who: tuple[str, str | None], chunks: list[list[int]]) -> None:
            for n, chunk in enumerate(chunks):
                async with gate:
                    outcome = await self._post(client, settings, who,
                                               [items[i].message for i in chunk])  # fmt: skip
                for i in chunk:
                    outcomes[i] = outcome
                if outcome.retry:  # the person's later events wait, to keep their order
                    wait = Outcome(False, retry=True, response="waiting behind a retried request")
                    for i in (i for later in chunks[n + 1 :] for i in later):
                        outcomes[i] = wait
                    return

        await asyncio.gather(*(person(who, chunks) for who, chunks in runs.items()))
        return [o or Outcome(False, retry=True, response="not sent") for o in outcomes]

    async def _post(
        self, client: httpx.AsyncClient, settings: dict[str, Any], who: tuple[str, str | None],
        messages: list[dict[str, Any]],
    ) -> Outcome:  # fmt: skip
        body: dict[str, Any] = {"client_id": who[0]}
        if who[1] is not None:
            body["user_id"] = who[1]
        if messages[0].get("user_properties"):  # an identify opens its request
            body["user_properties"] = messages[0]["user_properties"]
        body["events"] = [m["event"] for m in messages]
        try:
            response = await client.post(
                f"{settings['endpoint']}/mp/collect", content=orjson.dumps(body), timeout=10,
                params={"measurement_id": settings["measurement_id"],
                        "api_secret": settings["api_secret"]},
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
        except httpx.HTTPError as exc:
            return outcome_of_error(exc)
        return outcome_of(response)
