"""Google Analytics 4 (Measurement Protocol) and Meta's Conversions API against local
servers that check the vendors' documented request formats, limits and answers (their
clouds cannot be reached here): GA4 answers 2xx to everything, so its server records what
it would have dropped and the tests require nothing; Meta refuses a whole batch for one bad
event, as documented."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from destination_world import DeliveryWorld
from webhook_server import WebhookServer

from plait.destinations import manage
from plait.destinations.connectors import CONNECTORS
from plait.store.workspaces import Invalid


@pytest.fixture
def world(store):
    return DeliveryWorld(store)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def settle(world, rounds: int = 4) -> None:
    for _ in range(rounds):  # retries are due after the (tiny) backoff
        asyncio.run(asyncio.sleep(0.05))
        world.drain()


def dead_letters(world, key: str) -> dict[str, dict]:
    return {d["message_id"]: d for d in manage.queued(world.store, world.repo, world.ws, key,
                                                      "failed")}  # fmt: skip


# Google Analytics 4 -------------------------------------------------------------------------

GA4_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
GA4_RESERVED = ("ga_", "google_", "firebase_")
GA4_LONGER = {"page_location": 1000, "page_title": 300, "page_referrer": 420}


def ga4_problems(body: dict) -> list[str]:
    """What GA4 would silently drop, by the Measurement Protocol's documented limits."""
    found = []
    if not isinstance(body.get("client_id"), str) or not body["client_id"]:
        found.append("no client_id")
    events = body.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= 25:
        return [*found, f"{len(events or [])} events (1 to 25)"]
    oldest = (time.time() - 72 * 3600) * 1_000_000
    for e in events:
        name = e.get("name", "")
        if not GA4_NAME.fullmatch(name) or len(name) > 40 or name.startswith(GA4_RESERVED):
            found.append(f"event name {name!r}")
        stamp = e.get("timestamp_micros")
        if not isinstance(stamp, int) or len(str(stamp)) != 16 or stamp < oldest:
            found.append(f"timestamp_micros {stamp!r}")
        params = e.get("params") or {}
        if len(params) > 25:
            found.append(f"{len(params)} params")
        for key, value in params.items():
            if not GA4_NAME.fullmatch(key) or len(key) > 40:
                found.append(f"param name {key!r}")
            if key == "items":
                found += [f"item {i}" for i in value
                          if not (i.get("item_id") or i.get("item_name"))]  # fmt: skip
            elif isinstance(value, str) and len(value) > GA4_LONGER.get(key, 100):
                found.append(f"param {key} too long")
            elif not isinstance(value, str | int | float):
                found.append(f"param {key} is {type(value).__name__}")
    props = body.get("user_properties") or {}
    if len(props) > 25:
        found.append("more than 25 user properties")
    for key, value in props.items():
        if len(key) > 24 or not GA4_NAME.fullmatch(key) or len(str(value.get("value"))) > 36:
            found.append(f"user property {key!r}")
    return found


def ga4_server(measurement_id: str, api_secret: str, answer=lambda n: 204):
    """GA4's /mp/collect as documented: the measurement id and API secret in the query, a
    JSON body under 130 kB; 2xx whatever the payload (problems are only recorded)."""
    problems: list[str] = []

    def respond(n, request):
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path != "/mp/collect":
            return 404, {}
        if query != {"measurement_id": [measurement_id], "api_secret": [api_secret]}:
            problems.append(f"query {query}")
        if request.headers.get("content-type") != "application/json" or len(request.body) >= (
            130_000
        ):
            problems.append("not a JSON body under 130 kB")
        status = answer(n)
        if status < 300:
            problems.extend(ga4_problems(request.json))
        return status, {"Retry-After": "0"} if status == 429 else {}, b""

    return respond, problems


def ga4_destination(world, server, **settings) -> None:
    manage.put(world.repo, world.ws, {
        "key": "ga", "type": "ga4", "backoff": 0.01, "max_backoff": 0.02, "batch_size": 100,
        "settings": {"measurement_id": "G-TEST1234", "api_secret": "s3cret",
                     "endpoint": server.url.removesuffix("/hook"), **settings},
    })  # fmt: skip


def test_ga4_sends_each_persons_events_in_requests_of_at_most_25_in_its_own_terms(world):
    at = datetime.now(UTC) - timedelta(minutes=5)
    ann = {"userId": "ann", "anonymousId": "anon-ann", "timestamp": at.isoformat()}
    bob = {"anonymousId": "anon-bob", "timestamp": at.isoformat(),
           "integrations": {"Google Analytics 4": {"clientId": "123.456",
                                                   "sessionId": "1700000000"}}}  # fmt: skip
    bobs = [
        {**bob, "type": "page", "name": "Pricing", "context": {"page": {
            "url": "https://shop.example/pricing", "title": "Pricing - Shop",
            "referrer": "https://search.example/"}}},
        {**bob, "type": "track", "event": "Products Searched", "properties": {"query": "shoes"}},
        {**bob, "type": "track", "event": "Product Added",
         "properties": {"product_id": "p2", "name": "Hat", "price": 15, "currency": "eur"}},
    ]  # fmt: skip
    messages = [
        {
            **ann,
            "type": "identify",
            "traits": {"plan": "pro", "email": "ann@shop.example", "company": {"name": "Acme"}},
        }
    ]
    for i in range(30):
        messages.append({**ann, "type": "track", "event": "Song Played",
                         "properties": {"index": i, "isLive": False}})  # fmt: skip
        if i % 10 == 5:
            messages.append(bobs.pop(0))
    messages.append(
        {
            **ann,
            "type": "track",
            "event": "Order Completed",
            "properties": {
                "order_id": "o-1",
                "total": 30.0,
                "currency": "usd",
                "coupon": "SPRING",
                "products": [{"product_id": "p1", "name": "Shoe", "price": 10.0, "quantity": 3}],
            },
        }
    )
    respond, problems = ga4_server("G-TEST1234", "s3cret")
    with WebhookServer(respond) as server:
        ga4_destination(world, server)
        world.feed(messages)
    assert problems == [] and [r.status for r in server.requests] == [204] * 3
    bodies = [r.json for r in server.requests]
    assert sorted(len(b["events"]) for b in bodies) == [3, 7, 25]
    ann_bodies = [b for b in bodies if b["client_id"] == "anon-ann"]
    assert all(b["user_id"] == "ann" for b in ann_bodies)
    first, second = sorted(ann_bodies, key=lambda b: -len(b["events"]))
    assert first["user_properties"] == {"plan": {"value": "pro"}}  # no email, nothing nested
    assert "user_properties" not in second
    names = [e["name"] for b in (first, second) for e in b["events"]]
    assert names == ["identify", *["song_played"] * 30, "purchase"]
    song = first["events"][1]
    assert song["params"] == {"index": 0, "is_live": "false", "engagement_time_msec": 1}
    assert song["timestamp_micros"] == int(at.timestamp() * 1000) * 1000
    assert second["events"][-1]["params"] == {
        "transaction_id": "o-1", "value": 30.0, "currency": "USD", "coupon": "SPRING",
        "items": [{"item_id": "p1", "item_name": "Shoe", "price": 10.0, "quantity": 3}],
        "engagement_time_msec": 1,
    }  # fmt: skip
    (bob_body,) = [b for b in bodies if b["client_id"] == "123.456"]
    assert "user_id" not in bob_body
    page, search, added = bob_body["events"]
    assert page == {"name": "page_view", "timestamp_micros": song["timestamp_micros"],
                    "params": {"page_location": "https://shop.example/pricing",
                               "page_title": "Pricing - Shop",
                               "page_referrer": "https://search.example/",
                               "session_id": "1700000000", "engagement_time_msec": 1}}  # fmt: skip
    assert search["name"] == "search" and search["params"]["search_term"] == "shoes"
    assert added["name"] == "add_to_cart" and added["params"]["currency"] == "EUR"
    assert added["params"]["items"] == [{"item_id": "p2", "item_name": "Hat", "price": 15}]
    status = manage.status(world.store, world.ws, "ga")
    assert status["delivered"] == len(messages) and status["failed"] == 0


def test_ga4_maps_segment_events_to_its_recommended_events():
    ga4 = CONNECTORS["ga4"]
    settings = ga4.check({"measurement_id": "G-TEST1234", "api_secret": "s"}, "settings")

    def mapped(event: str, **properties) -> dict:
        message = {"type": "track", "event": event, "userId": "u", "properties": properties}
        out = ga4.payload(message, settings)
        assert "invalid" not in out, out
        return out["event"]

    assert mapped("Signed Up", type="google") == {
        "name": "sign_up",
        "params": {"method": "google", "engagement_time_msec": 1},
    }
    assert mapped("Signed In", method="sso")["params"]["method"] == "sso"
    assert mapped("Product Viewed", product_id="p", price=3)["name"] == "view_item"
    assert mapped("Checkout Started", revenue=9, currency="USD")["params"]["value"] == 9
    assert mapped("Order Refunded", order_id="o", total=4, currency="USD")["name"] == "refund"
    assert mapped("Promotion Viewed", promotion_id="x", creative="banner")["params"] == {
        "promotion_id": "x",
        "creative_name": "banner",
        "engagement_time_msec": 1,
    }
    assert mapped("Cart Viewed", products=[{"sku": "s1"}])["params"]["items"] == [{"item_id": "s1"}]
    assert mapped("Order Shipped", orderId="o")["name"] == "order_shipped"
    assert mapped("Order Shipped", orderId="o")["params"]["order_id"] == "o"
    assert CONNECTORS["ga4"].deletes is False  # the Measurement Protocol deletes nothing


def test_ga4_refuses_what_it_would_drop_as_dead_letters_with_the_reason(world):
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    cat = {"type": "track", "userId": "cat", "anonymousId": "anon-cat", "timestamp": at}
    respond, problems = ga4_server("G-TEST1234", "s3cret", lambda n: 429 if n == 0 else 204)
    with WebhookServer(respond) as server:
        ga4_destination(world, server, region="eu")
        sent = world.feed([
            {**cat, "event": "First Open"},
            {**cat, "event": "ga special"},
            {**cat, "event": "A" * 41},
            {**cat, "event": "Comment Posted", "properties": {"text": "x" * 101}},
            {**cat, "event": "Thing Done", "properties": {"meta": {"a": 1}}},
            {**cat, "event": "Order Completed", "properties": {"total": 5, "currency": "USD"}},
            {**cat, "event": "Product Added", "properties": {"product_id": "p", "value": 5}},
            {**cat, "event": "Late", "timestamp": (datetime.now(UTC) - timedelta(days=4))
             .isoformat()},
            {**cat, "event": "Fine Event", "properties": {"text": "x" * 100}},
        ])  # fmt: skip
        settle(world)
    assert [r.status for r in server.requests] == [429, 204] and problems == []
    assert [e["name"] for e in server.requests[1].json["events"]] == ["fine_event"]
    dead = dead_letters(world, "ga")
    reasons = {m["event"]: dead[m["messageId"]]["last_response"] for m in sent[:-1]}
    assert reasons == {
        "First Open": "not sent: the event name 'first_open' is reserved by GA4",
        "ga special": "not sent: the event name 'ga_special' is reserved by GA4",
        "A" * 41: f"not sent: the event name '{'a' * 41}' is longer than GA4's 40 characters",
        "Comment Posted": "not sent: parameter 'text': 101 characters, GA4's limit is 100",
        "Thing Done": "not sent: parameter 'meta': a nested value; GA4 parameters are strings "
                      "and numbers",
        "Order Completed": "not sent: purchase needs a transaction_id (the order_id property)",
        "Product Added": "not sent: a value needs a currency (GA4 requires it)",
        "Late": "not sent: more than 72 hours old, GA4 drops such events",
    }  # fmt: skip
    assert manage.status(world.store, world.ws, "ga")["delivered"] == 1


def test_ga4_settings_are_checked_with_the_settings_path(world):
    ga4 = CONNECTORS["ga4"]
    good = {"measurement_id": "G-TEST1234", "api_secret": "s"}
    assert ga4.check({**good, "region": "eu"}, "s")["endpoint"] == (
        "https://region1.google-analytics.com"
    )
    assert ga4.check(good, "s")["endpoint"] == "https://www.google-analytics.com"
    for settings, message in [
        ({"api_secret": "s"}, r"settings\.measurement_id: required: the web stream's"),
        ({**good, "measurement_id": "UA-1234-5"}, r"settings\.measurement_id: required"),
        ({**good, "api_secret": ""}, r"settings\.api_secret: required"),
        ({**good, "region": "us"}, r"settings\.region: must be global or eu"),
        ({**good, "endpoint": "ftp://x"}, r"settings\.endpoint: required: an http"),
        ({**good, "firebase_app_id": "x"}, r"settings\.firebase_app_id: unknown setting"),
    ]:  # fmt: skip
        with pytest.raises(Invalid, match=message):
            manage.put(world.repo, world.ws, {"key": "ga", "type": "ga4", "settings": settings})
    with pytest.raises(Invalid, match="1 to 500"):
        manage.put(world.repo, world.ws, {"key": "ga", "type": "ga4", "batch_size": 501,
                                          "settings": good})  # fmt: skip
    with pytest.raises(Invalid, match="unknown type 'screen' for ga4"):
        manage.put(world.repo, world.ws, {"key": "ga", "type": "ga4", "types": ["screen"],
                                          "settings": good})  # fmt: skip


# Meta Conversions API ------------------------------------------------------------------------

META_HASHED = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
META_SOURCES = {"email", "website", "app", "phone_call", "chat", "physical_store",
                "system_generated", "business_messaging", "other"}  # fmt: skip
CURRENCIES = {"USD", "EUR", "GBP"}


def meta_error(code: int, message: str, kind: str = "OAuthException", **more) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code,
                                   "fbtrace_id": "AbC123", **more}})  # fmt: skip


def meta_server(pixel: str, token: str, version: str = "v24.0", answer=lambda n: None):
    """Meta's /<version>/<pixel>/events as documented: the access token, at most 1,000
    events in ``data``, each with event_name, event_time (at most 7 days ago), action_source,
    user_data hashed (SHA-256 hex) but for IP, user agent, fbc and fbp, and for website
    events event_source_url and client_user_agent; one bad event refuses the batch."""

    def respond(n, request):
        url = urlsplit(request.path)
        if url.path != f"/{version}/{pixel}/events":
            return 400, {}, meta_error(803, "Unknown path components", "OAuthException")
        body = request.json
        if request.headers.get("content-type") != "application/json" or (
            body.get("access_token") != token
        ):
            return 400, {}, meta_error(190, "Invalid OAuth access token - Cannot parse "
                                            "access token")  # fmt: skip
        if (status := answer(n)) is not None:
            return status
        data = body.get("data") or []
        if not 1 <= len(data) <= 1000:
            return 400, {}, meta_error(100, "Invalid parameter", "OAuthException")
        oldest = time.time() - 7 * 86400
        for e in data:
            users = e.get("user_data") or {}
            custom = e.get("custom_data") or {}
            bad = (
                not isinstance(e.get("event_name"), str) or not isinstance(e.get("event_id"), str)
                or not isinstance(e.get("event_time"), int) or e["event_time"] < oldest
                or e.get("action_source") not in META_SOURCES
                or (e["action_source"] == "website" and not (
                    e.get("event_source_url") and users.get("client_user_agent")))
                or any(not re.fullmatch(r"[0-9a-f]{64}", users[k]) for k in META_HASHED
                       if k in users)
                or re.fullmatch(r"[0-9a-f]{64}", users.get("client_ip_address", ""))
                or ("currency" in custom and custom["currency"] not in CURRENCIES)
            )  # fmt: skip
            if bad:
                return (
                    400,
                    {},
                    meta_error(
                        100,
                        "Invalid parameter",
                        "OAuthException",
                        error_subcode=2804050,
                        error_user_title="Invalid event",
                        error_user_msg="An event is invalid",
                    ),
                )
        return 200, {}, orjson.dumps({"events_received": len(data), "messages": [],
                                      "fbtrace_id": "AbC123"})  # fmt: skip

    return respond


def meta_destination(world, server, **settings) -> None:
    manage.put(world.repo, world.ws, {
        "key": "meta", "type": "meta_capi", "backoff": 0.01, "max_backoff": 0.02,
        "batch_size": 50, "settings": {
            "pixel_id": 1234567890, "access_token": "EAAB-token",
            "endpoint": server.url.removesuffix("/hook"), **settings},
    })  # fmt: skip


WEB = {"userAgent": "Mozilla/5.0 (X11)", "page": {"url": "https://shop.example/cart"}}


def test_meta_capi_hashes_normalized_user_data_and_maps_standard_events(world):
    at = datetime.now(UTC) - timedelta(minutes=5)
    stamp = at.isoformat()
    hashed_email = sha("carol@shop.example")
    with WebhookServer(meta_server("1234567890", "EAAB-token")) as server:
        meta_destination(world, server, test_event_code="TEST123")
        sent = world.feed([
            {"type": "identify", "userId": "bob",  # the profile's traits (not sent itself)
             "traits": {"email": " Bob@Example.com", "phone": "0044 20 7946 0958"}},
            {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": stamp,
             "context": {**WEB, "ip": "203.0.113.9", "traits": {
                 "email": " Ann@Example.COM ", "phone": "+1 (650) 555-1212",
                 "firstName": "Mary-Ann", "lastName": "O'Neil", "gender": "Female",
                 "birthday": "1990-05-17T00:00:00.000Z",
                 "address": {"city": "South San Francisco", "state": "California",
                             "postalCode": "94035-1234", "country": "US"}}},
             "properties": {"order_id": "o-1", "total": 30, "currency": "usd",
                            "fbp": "fb.1.1558571054389.1098115397",
                            "fbc": "fb.1.1554763741205.AbCdEf",
                            "products": [{"product_id": "p1", "price": 10, "quantity": 3}]}},
            {"type": "page", "userId": "ann", "name": "Pricing", "timestamp": stamp,
             "context": WEB},
            {"type": "track", "userId": "bob", "event": "Product Viewed", "timestamp": stamp,
             "context": WEB, "properties": {"product_id": "p2", "name": "Hat", "price": 15,
                                            "category": "hats", "currency": "EUR"}},
            {"type": "track", "userId": "carol", "event": "Newsletter Joined", "timestamp": stamp,
             "context": {**WEB, "traits": {"email": hashed_email}},
             "properties": {"list": "weekly"}},
        ])  # fmt: skip
    (request,) = server.requests
    assert request.status == 200 and request.path == "/v24.0/1234567890/events"
    body = request.json
    assert body["access_token"] == "EAAB-token" and body["test_event_code"] == "TEST123"
    assert b"example.com" not in request.body.lower() and b"555-1212" not in request.body
    events = {e["event_name"]: e for e in body["data"]}
    assert list(events) == ["Purchase", "PageView", "ViewContent", "Newsletter Joined"]
    purchase = events["Purchase"]
    assert purchase["user_data"] == {
        "em": sha("ann@example.com"), "ph": sha("16505551212"), "fn": sha("maryann"),
        "ln": sha("oneil"), "ge": sha("f"), "db": sha("19900517"),
        "ct": sha("southsanfrancisco"), "st": sha("ca"), "zp": sha("94035"),
        "country": sha("us"), "external_id": sha("ann"),
        "client_ip_address": "203.0.113.9", "client_user_agent": "Mozilla/5.0 (X11)",
        "fbp": "fb.1.1558571054389.1098115397", "fbc": "fb.1.1554763741205.AbCdEf",
    }  # fmt: skip
    # Meta's own example: (650)555-1212 in the US is 16505551212.
    assert purchase["user_data"]["ph"] == (
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    )
    assert purchase["custom_data"] == {
        "contents": [{"id": "p1", "quantity": 3, "item_price": 10}], "content_ids": ["p1"],
        "content_type": "product", "num_items": 3, "order_id": "o-1", "value": 30,
        "currency": "USD",
    }  # fmt: skip
    assert purchase["event_time"] == int(at.timestamp())
    assert purchase["event_id"] == sent[1]["messageId"]  # as the Pixel's eventID
    assert purchase["action_source"] == "website"
    assert purchase["event_source_url"] == "https://shop.example/cart"
    assert "custom_data" not in events["PageView"]
    viewed = events["ViewContent"]
    assert viewed["user_data"]["em"] == sha("bob@example.com")  # from the profile
    assert viewed["user_data"]["ph"] == sha("442079460958")  # no leading zeros
    assert viewed["user_data"]["external_id"] == sha("bob")
    assert viewed["custom_data"] == {
        "contents": [{"id": "p2", "item_price": 15}], "content_ids": ["p2"],
        "content_type": "product", "content_name": "Hat", "content_category": "hats",
        "value": 15, "currency": "EUR"}  # fmt: skip
    joined = events["Newsletter Joined"]
    assert joined["user_data"]["em"] == hashed_email  # hashed already: sent as it is
    assert joined["custom_data"] == {"list": "weekly"}
    status = manage.status(world.store, world.ws, "meta")
    assert status["delivered"] == 4 and status["filtered"] == 1  # the identify


def test_meta_capi_splits_a_refused_batch_to_find_the_bad_event(world):
    stamp = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    order = {"type": "track", "event": "Order Completed", "timestamp": stamp, "context": WEB}
    with WebhookServer(meta_server("1234567890", "EAAB-token")) as server:
        meta_destination(world, server)
        sent = world.feed([
            *[{**order, "userId": f"u{i}", "properties": {
                "order_id": f"o{i}", "total": 5, "currency": "XYZ" if i == 3 else "USD"}}
              for i in range(1, 5)],
            {**order, "userId": "old", "properties": {"total": 5, "currency": "USD"},
             "timestamp": (datetime.now(UTC) - timedelta(days=8)).isoformat()},
            {**order, "userId": "app", "context": {"page": WEB["page"]},
             "properties": {"total": 5, "currency": "USD"}},
            {**order, "userId": "free", "properties": {"total": 5}},
        ])  # fmt: skip
    assert [len(r.json["data"]) for r in server.requests] == [4, 2, 2, 1, 1]
    assert [r.status for r in server.requests] == [400, 200, 400, 400, 200]
    dead = dead_letters(world, "meta")
    assert set(dead) == {m["messageId"] for m in (sent[2], *sent[4:])}
    assert dead[sent[2]["messageId"]]["last_status"] == 400
    assert '"error_subcode":2804050' in dead[sent[2]["messageId"]]["last_response"]
    assert [dead[m["messageId"]]["last_response"] for m in sent[4:]] == [
        "not sent: more than 7 days old, Meta refuses such events",
        "not sent: a website event needs client_user_agent (context.userAgent)",
        "not sent: a Purchase needs a value (total) and a currency",
    ]
    assert manage.status(world.store, world.ws, "meta")["delivered"] == 3
    with WebhookServer(meta_server("1234567890", "another-token")) as server:
        meta_destination(world, server)
        sent = world.feed([{**order, "userId": u, "properties": {"total": 1, "currency": "USD"}}
                           for u in ("x1", "x2")])  # fmt: skip
    assert len(server.requests) == 1  # a bad token: not split, dead letters
    dead = dead_letters(world, "meta")
    assert all('"code":190' in dead[m["messageId"]]["last_response"] for m in sent)


def test_meta_capi_retries_rate_limits_and_server_errors(world):
    stamp = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    answers = {0: (400, {}, meta_error(17, "User request limit reached", is_transient=True)),
               1: (400, {}, meta_error(4, "Application request limit reached")),
               2: (503, {}, b"")}  # fmt: skip
    with WebhookServer(meta_server("1234567890", "EAAB-token", answer=answers.get)) as server:
        meta_destination(world, server, action_source="system_generated")
        world.feed([{"type": "track", "userId": "ann", "event": "Signed Up", "timestamp": stamp}])
        settle(world)
    assert [r.status for r in server.requests] == [400, 400, 503, 200]
    (event,) = server.requests[-1].json["data"]
    assert event["event_name"] == "CompleteRegistration"
    assert event["action_source"] == "system_generated" and "event_source_url" not in event
    status = manage.status(world.store, world.ws, "meta")
    assert status["delivered"] == 1 and status["failed"] == 0


def test_meta_capi_settings_are_checked_and_batches_are_at_most_1000(world):
    good = {"pixel_id": "123", "access_token": "t"}
    for settings, message in [
        ({"access_token": "t"}, r"settings\.pixel_id: required: the pixel"),
        ({**good, "pixel_id": "px-1"}, r"settings\.pixel_id: required"),
        ({"pixel_id": "123"}, r"settings\.access_token: required"),
        ({**good, "api_version": "24"}, r"settings\.api_version: a Graph API version"),
        ({**good, "action_source": "web"}, r"settings\.action_source: one of app, "),
        ({**good, "test_event_code": ""}, r"settings\.test_event_code: a non-empty"),
        ({**good, "token": "t"}, r"settings\.token: unknown setting"),
    ]:  # fmt: skip
        with pytest.raises(Invalid, match=message):
            manage.put(world.repo, world.ws, {"key": "m", "type": "meta_capi",
                                              "settings": settings})  # fmt: skip
    with pytest.raises(Invalid, match="1 to 1000"):
        manage.put(world.repo, world.ws, {"key": "m", "type": "meta_capi", "batch_size": 1001,
                                          "settings": good})  # fmt: skip
    assert CONNECTORS["meta_capi"].deletes is False  # the Conversions API deletes nothing
