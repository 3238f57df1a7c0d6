"""Engagement vendors against local servers that check their documented request formats,
credentials, batch limits and error answers (their clouds cannot be reached here): Braze's
/users/track and /users/delete, and Customer.io's Track API v2 batch."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from destination_world import DeliveryWorld
from webhook_server import WebhookServer

from plait.destinations import manage
from plait.destinations.connectors import CONNECTORS
from plait.destinations.dispatcher import Dispatcher
from plait.spec import MAX_MESSAGE_BYTES
from plait.store.workspaces import Invalid


@pytest.fixture
def world(store):
    return DeliveryWorld(store)


def now_ms() -> int:
    return int(time.time() * 1000)


def settle(world, rounds: int = 4) -> None:
    """Deliver what is due, again after the (tiny) backoffs."""
    for _ in range(rounds):
        world.drain()
        asyncio.run(asyncio.sleep(0.05))


def forget(world, user_id: str) -> dict:
    """A privacy deletion that forwards (DELETE_ONLY) of one user id."""
    import plait.destinations  # noqa: F401  (its steps in privacy deletions)
    from plait.govern import privacy

    created = privacy.create_request(world.store, world.ws, "DELETE_ONLY", "USER_ID", [user_id],
                                     "tok_test")  # fmt: skip
    return privacy.run_request(world.store, created["id"], [user_id], settle_seconds=0)


# Braze ------------------------------------------------------------------------------------


def _iso(value) -> bool:
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def braze_server(api_key: str, fail_first: tuple[int, ...] = (), reset_in: int = 60):
    """Braze's REST API as documented. /users/track: Bearer REST API key (401 otherwise),
    JSON with at most 75 attributes, 75 events and 75 purchases; each object names one user
    by external_id or user_alias {alias_name, alias_label} (an alias-only user is created
    only with _update_existing_only false); an event has a name and an ISO 8601 time; a
    purchase a product_id, an ISO 4217 currency, a numeric price, a quantity of 1 to 100 and
    a time. The objects refused are named in errors {type, input_array, index}: 201 "success"
    when others were taken, 400 when none were. /users/delete: 1 to 50 external_ids. 429
    with X-RateLimit-Reset when throttled, or the given statuses first."""

    def user(obj) -> bool:
        named = [k for k in ("external_id", "user_alias", "braze_id") if k in obj]
        if len(named) != 1:
            return False
        alias = obj.get("user_alias")
        return alias is None or (isinstance(alias, dict) and bool(alias.get("alias_name"))
                                 and bool(alias.get("alias_label"))
                                 and obj.get("_update_existing_only") is False)  # fmt: skip

    def refused(array, obj) -> str | None:
        if not user(obj):
            return "must specify exactly one of external_id, user_alias or braze_id"
        if array == "events" and (not obj.get("name") or not _iso(obj.get("time"))):
            return "'name' and 'time' are required"
        if array == "purchases":
            price, quantity = obj.get("price"), obj.get("quantity", 1)
            if not isinstance(price, int | float) or isinstance(price, bool):
                return "'price' is not valid"
            if not isinstance(quantity, int) or not 1 <= quantity <= 100:
                return "'quantity' is not valid"
            if not obj.get("product_id") or not re.fullmatch(r"[A-Z]{3}", obj.get("currency", "")) \
                    or not _iso(obj.get("time")):  # fmt: skip
                return "'product_id', 'currency' and 'time' are required"
        return None

    def respond(n, request):
        if n < len(fail_first):
            reset = {"X-RateLimit-Reset": str(int(time.time()) + reset_in)}
            return fail_first[n], reset if fail_first[n] == 429 else {}, b'{"message": "busy"}'
        if request.headers.get("authorization") != f"Bearer {api_key}" \
                or request.headers.get("content-type") != "application/json":  # fmt: skip
            return 401, {}, b'{"message": "Invalid API key: wrong"}'
        body = request.json
        if request.path == "/users/delete":
            ids = body.get("external_ids")
            if not isinstance(ids, list) or not 1 <= len(ids) <= 50:
                return 400, {}, b'{"message": "1 to 50 external_ids"}'
            return 201, {}, orjson.dumps({"deleted": len(ids), "message": "success"})
        if request.path != "/users/track":
            return 404, {}, b'{"message": "not found"}'
        if any(len(body.get(a) or []) > 75 for a in ("attributes", "events", "purchases")):
            return 400, {}, b'{"message": "at most 75 of each of attributes, events, purchases"}'
        errors = [{"type": why, "input_array": array, "index": i}
                  for array in ("attributes", "events", "purchases")
                  for i, obj in enumerate(body.get(array) or [])
                  if (why := refused(array, obj))]  # fmt: skip
        total = sum(len(body.get(a) or []) for a in ("attributes", "events", "purchases"))
        if total == len(errors):
            return 400, {}, orjson.dumps({"message": "Valid data must be provided in the "
                                          "'attributes', 'events', or 'purchases' fields.",
                                          "errors": errors})  # fmt: skip
        answer = {f"{a}_processed": len(body[a]) for a in ("attributes", "events", "purchases")
                  if body.get(a)}  # fmt: skip
        return 201, {}, orjson.dumps({**answer, "message": "success",
                                      **({"errors": errors} if errors else {})})  # fmt: skip

    return respond


def braze(world, server, **settings) -> None:
    manage.put(world.repo, world.ws, {
        "key": "braze", "type": "braze", "backoff": 0.01, "max_backoff": 0.02,
        "settings": {"api_key": "braze-key", "endpoint": server.url.removesuffix("/hook"),
                     **settings},
    })  # fmt: skip


def taken(server, array: str) -> list[dict]:
    """The objects of an array in the requests Braze answered with 201."""
    return [o for r in server.requests if r.status == 201 and r.path == "/users/track"
            for o in r.json.get(array) or []]  # fmt: skip


def test_braze_gets_users_track_objects_and_refused_ones_become_dead_letters(world):
    at = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    with WebhookServer(braze_server("braze-key", fail_first=(429,))) as server:
        braze(world, server, app_id="app-1")
        sent = world.feed([
            {"type": "identify", "userId": "ann", "traits": {
                "firstName": "Ann", "lastName": "Lee", "email": "ann@shop.example",
                "birthday": "1990-04-01T00:00:00Z", "gender": "female", "plan": "pro",
                "address": {"city": "Paris", "country": "FR"}}},
            {"type": "track", "anonymousId": "anon-1", "event": "Viewed Pricing",
             "properties": {"plan": "pro", "currency": "EUR"}, "timestamp": at.isoformat()},
            {"type": "track", "userId": "ann", "event": "Order Completed",
             "properties": {"order_id": "o1", "currency": "eur", "products": [
                 {"product_id": "p1", "name": "Sock", "price": 10.5, "quantity": 2},
                 {"sku": "s2", "price": 3}]}},
            {"type": "track", "userId": "bob", "event": "Order Completed",  # refused by Braze
             "properties": {"products": [{"product_id": "p9", "price": "free"}]}},
            {"type": "page", "userId": "ann", "name": "Home"},
            {"type": "group", "userId": "ann", "groupId": "g1"},  # not a Braze type
        ])  # fmt: skip
        assert [r.status for r in server.requests] == [429]  # one request for the batch
        first = server.requests[0].json
        assert [len(first.get(a, [])) for a in ("attributes", "events", "purchases")] == [1, 2, 3]
        assert server.requests[0].headers["x-braze-batch"] == "true"
        retrying = manage.queued(world.store, world.repo, world.ws, "braze", "retrying")
        assert len(retrying) == 5  # until X-RateLimit-Reset, a minute on
        assert all(r["next_attempt_at"] >= now_ms() + 50_000 for r in retrying)
        later = Dispatcher(world.store, clock=lambda: now_ms() + 120_000)
        world.drain(later)
        (attributes,) = taken(server, "attributes")
        assert attributes == {"external_id": "ann", "first_name": "Ann", "last_name": "Lee",
                              "email": "ann@shop.example", "dob": "1990-04-01", "gender": "F",
                              "plan": "pro", "home_city": "Paris", "country": "FR"}  # fmt: skip
        events = {e["name"]: e for e in taken(server, "events")}
        assert set(events) == {"Viewed Pricing", "Viewed Home Page"}
        pricing = events["Viewed Pricing"]
        assert pricing["user_alias"] == {"alias_name": "anon-1", "alias_label": "anonymous_id"}
        assert pricing["_update_existing_only"] is False and "external_id" not in pricing
        assert pricing["properties"] == {"plan": "pro"}  # Braze's reserved currency left out
        assert datetime.fromisoformat(pricing["time"]) == at and pricing["app_id"] == "app-1"
        assert events["Viewed Home Page"]["external_id"] == "ann"
        purchases = {p["product_id"]: p for p in taken(server, "purchases")}
        assert set(purchases) == {"p1", "s2", "p9"}  # p9 sent, and refused by Braze
        p1 = purchases["p1"]
        assert (p1["external_id"], p1["price"], p1["quantity"], p1["currency"]) == (
            "ann",
            10.5,
            2,
            "EUR",
        )
        assert p1["properties"]["name"] == "Sock" and p1["properties"]["order_id"] == "o1"
        assert "products" not in p1["properties"] and "quantity" not in purchases["s2"]
        dead = manage.queued(world.store, world.repo, world.ws, "braze", "failed")
        assert [d["message_id"] for d in dead] == [sent[3]["messageId"]]
        assert dead[0]["last_status"] == 400
        assert "'price' is not valid (purchases[" in dead[0]["last_response"]
        status = manage.status(world.store, world.ws, "braze")
        assert status["delivered"] == 4 and status["filtered"] == 1
        assert status["queue"]["retrying"] == 0


def test_braze_requests_hold_at_most_75_of_each_array(world):
    with pytest.raises(Invalid, match="1 to 75"):
        settings = {"api_key": "k", "endpoint": "https://rest.iad-01.braze.com"}
        manage.put(world.repo, world.ws, {"key": "b", "type": "braze", "batch_size": 76,
                                          "settings": settings})  # fmt: skip
    with WebhookServer(braze_server("braze-key")) as server:
        braze(world, server)
        products = [{"product_id": f"p{i}", "price": 1} for i in range(80)]
        products[77]["price"] = None  # refused in the second request
        sent = world.feed([
            *[{"type": "track", "userId": "ann", "event": f"Step {i}"} for i in range(150)],
            {"type": "track", "userId": "cat", "event": "Order Completed",
             "properties": {"products": products}},
            {"type": "track", "userId": "cat", "event": "Reviewed"},
        ])  # fmt: skip
        for r in server.requests:
            assert all(len(r.json.get(a) or []) <= 75 for a in ("attributes", "events",
                                                                  "purchases"))  # fmt: skip
        assert len(taken(server, "events")) == 151
        assert len(taken(server, "purchases")) == 80  # 75 in one request, 5 in the next
        dead = manage.queued(world.store, world.repo, world.ws, "braze", "failed")
        assert [d["message_id"] for d in dead] == [sent[150]["messageId"]]  # the whole order
        assert "'price' is not valid (purchases[2])" in dead[0]["last_response"]


def test_braze_retries_server_errors_and_a_wrong_key_is_a_dead_letter(world):
    with WebhookServer(braze_server("braze-key", fail_first=(503, 500))) as server:
        braze(world, server)
        world.feed([{"type": "track", "userId": "ann", "event": "Signed Up"}])
        settle(world)
        assert [r.status for r in server.requests] == [503, 500, 201]
        assert manage.status(world.store, world.ws, "braze")["delivered"] == 1
    with WebhookServer(braze_server("other-key")) as server:
        braze(world, server)
        world.feed([{"type": "track", "userId": "bob", "event": "Signed Up"}])
        dead = manage.queued(world.store, world.repo, world.ws, "braze", "failed")
        assert [d["last_status"] for d in dead] == [401]
        assert "Invalid API key" in dead[0]["last_response"]


def test_a_privacy_deletion_reaches_braze_users_delete(world):
    with WebhookServer(braze_server("braze-key")) as server:
        braze(world, server)
        world.feed([{"type": "track", "userId": "ann", "event": "Signed Up"}])
        done = forget(world, "ann")
        assert done["receipt"]["forwarded_to"] == ["braze"]
        world.drain()
        (deleted,) = [r for r in server.requests if r.path == "/users/delete"]
        assert deleted.json == {"external_ids": ["ann"]} and deleted.status == 201
        assert deleted.headers["authorization"] == "Bearer braze-key"
        assert manage.queued(world.store, world.repo, world.ws, "braze") == []


@pytest.mark.parametrize(("settings", "path", "message"), [
    ({"api_key": "k"}, "endpoint", "REST endpoint"),
    ({"endpoint": "https://rest.iad-01.braze.com"}, "api_key", "REST API key"),
    ({"api_key": "k", "endpoint": "rest.iad-01.braze.com"}, "endpoint", "URL"),
    ({"api_key": "k", "endpoint": "https://rest.iad-01.braze.com/users/track"}, "endpoint",
     "without the /users"),
    ({"api_key": "k", "endpoint": "https://x", "alias_label": ""}, "alias_label", "non-empty"),
    ({"api_key": "k", "endpoint": "https://x", "instance": "US-01"}, "instance", "unknown"),
])  # fmt: skip
def test_braze_refuses_bad_settings_naming_the_setting(world, settings, path, message):
    with pytest.raises(Invalid, match=message) as info:
        manage.put(world.repo, world.ws, {"key": "b", "type": "braze", "settings": settings})
    assert info.value.field.endswith(f"settings.{path}")


# Customer.io ------------------------------------------------------------------------------

ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


def customerio_server(site_id: str, api_key: str, fail_first: tuple[int, ...] = ()):
    """Customer.io's Track API v2 batch as documented: POST /api/v2/batch, Basic auth with
    the site id and Track API key (401 otherwise), {"batch": [...]} smaller than 500 KB
    with each entry at most 32 KB: type person, identifiers (id, email, cio_id, or for
    events anonymous_id), an action (identify, event, page, screen, delete); an event,
    page or screen has a name (an event name at most 100 bytes) and may have an id, which
    must be a ULID; timestamps are Unix seconds. A 207 names the refused entries by
    batch_index; 429 after Retry-After when throttled, or the given statuses first."""

    def refused(entry) -> tuple[str, str] | None:
        if len(orjson.dumps(entry)) > 32_000:
            return "entry", "an entry must be at most 32kb"
        ids = entry.get("identifiers") or {}
        allowed = {"id", "email", "cio_id"} | ({"anonymous_id"} if entry.get("action") in (
            "event", "page", "screen") else set())  # fmt: skip
        if entry.get("type") != "person" or len(ids) != 1 or not set(ids) <= allowed:
            return "identifiers", "a person needs one identifier"
        action = entry.get("action")
        if action not in ("identify", "event", "page", "screen", "delete"):
            return "action", "unknown action"
        if not isinstance(entry.get("timestamp", 0), int):
            return "timestamp", "must be a Unix timestamp"
        if action in ("event", "page", "screen"):
            if not entry.get("name"):
                return "name", "event name must not be blank"
            if action == "event" and len(entry["name"].encode()) > 100:
                return "name", "event name cannot be longer than 100 bytes"
            if "id" in entry and not ULID.fullmatch(entry["id"]):
                return "id", "id must be a ULID"
        return None

    def respond(n, request):
        if n < len(fail_first):
            return fail_first[n], {"Retry-After": "0"}, b'{"meta": {"error": "busy"}}'
        expected = "Basic " + base64.b64encode(f"{site_id}:{api_key}".encode()).decode()
        if request.path != "/api/v2/batch":
            return 404, {}
        if request.headers.get("authorization") != expected:
            return 401, {}, b'{"meta": {"error": "Unauthorized request"}}'
        if len(request.body) >= 500_000:
            return 413, {}, b'{"meta": {"error": "request too large"}}'
        entries = request.json.get("batch")
        if not isinstance(entries, list) or not entries:
            return 400, {}, b'{"meta": {"error": "batch must be a non-empty array"}}'
        errors = [{"batch_index": i, "reason": "invalid", "field": field, "message": why}
                  for i, entry in enumerate(entries) if (found := refused(entry))
                  for field, why in [found]]  # fmt: skip
        return (207 if errors else 200), {}, orjson.dumps({"errors": errors})

    return respond


def customerio(world, server, **settings) -> None:
    manage.put(world.repo, world.ws, {
        "key": "cio", "type": "customerio", "backoff": 0.01, "max_backoff": 0.02,
        "settings": {"site_id": "site-1", "api_key": "cio-key",
                     "endpoint": server.url.removesuffix("/hook"), **settings},
    })  # fmt: skip


def entries(server, *statuses: int) -> list[dict]:
    return [e for r in server.requests if r.status in statuses for e in r.json["batch"]]


def test_customerio_gets_v2_batch_entries_and_refused_ones_become_dead_letters(world):
    at = (datetime.now(UTC) - timedelta(minutes=5)).replace(microsecond=0)
    with WebhookServer(customerio_server("site-1", "cio-key", fail_first=(429,))) as server:
        customerio(world, server)
        sent = world.feed([
            {"type": "identify", "userId": "ann", "anonymousId": "anon-9", "timestamp":
             at.isoformat(), "traits": {"email": "ann@shop.example", "first_name": "Ann",
                                        "created_at": "2024-01-02T03:04:05Z", "vip": True}},
            {"type": "identify", "anonymousId": "anon-2", "traits": {"email": "cat@shop.example"}},
            {"type": "identify", "anonymousId": "anon-3", "traits": {"plan": "free"}},  # no one
            {"type": "track", "anonymousId": "anon-1", "event": "Viewed Pricing",
             "properties": {"plan": "pro"}, "timestamp": at.isoformat()},
            {"type": "page", "userId": "ann", "name": "Home",
             "properties": {"url": "https://shop.example/"}},
            {"type": "screen", "userId": "ann", "name": "Cart"},
            {"type": "track", "userId": "ann", "event": "x" * 120},  # refused: name too long
            {"type": "alias", "userId": "ann", "previousId": "anon-9"},  # not a type it takes
        ])  # fmt: skip
        settle(world)
        statuses = [r.status for r in server.requests]
        assert statuses[0] == 429 and 207 in statuses and 401 not in statuses
        by_name = {
            (
                e["action"],
                e.get("name") or e["identifiers"].get("email") or e["identifiers"].get("id"),
            ): e
            for e in entries(server, 200, 207)
        }
        ann = by_name[("identify", "ann")]
        assert ann["type"] == "person" and ann["identifiers"] == {"id": "ann"}
        assert ann["attributes"] == {"email": "ann@shop.example", "first_name": "Ann",
                                     "created_at": 1704164645, "vip": True,
                                     "anonymous_id": "anon-9"}  # fmt: skip
        assert ann["timestamp"] == int(at.timestamp()) and "id" not in ann
        assert by_name[("identify", "cat@shop.example")]["identifiers"] == {
            "email": "cat@shop.example"
        }
        pricing = by_name[("event", "Viewed Pricing")]
        assert pricing["identifiers"] == {"anonymous_id": "anon-1"}
        assert pricing["attributes"] == {"plan": "pro"} and ULID.fullmatch(pricing["id"])
        assert by_name[("page", "https://shop.example/")]["identifiers"] == {"id": "ann"}
        assert ("screen", "Cart") in by_name
        # the dedup ids are the same on the retry after the 429
        first = {e.get("name"): e.get("id") for e in server.requests[0].json["batch"]}
        assert all(first[e["name"]] == e["id"] for e in entries(server, 200, 207) if "id" in e)
        dead = {d["message_id"]: d for d in manage.queued(world.store, world.repo, world.ws,
                                                          "cio", "failed")}  # fmt: skip
        assert set(dead) == {sent[2]["messageId"], sent[6]["messageId"]}
        too_long = dead[sent[6]["messageId"]]
        assert too_long["last_status"] == 400
        assert "event name cannot be longer than 100 bytes (name)" in too_long["last_response"]
        assert "identifies people by id or email" in dead[sent[2]["messageId"]]["last_response"]
        status = manage.status(world.store, world.ws, "cio")
        assert status["delivered"] == 5 and status["filtered"] == 1


def test_customerio_requests_stay_under_500_kb_and_an_entry_over_32_kb_is_never_sent(world):
    with WebhookServer(customerio_server("site-1", "cio-key")) as server:
        customerio(world, server)
        big = "y" * 32_200  # a message Plait takes, an entry Customer.io would not
        sent = world.feed([
            *[{"type": "track", "userId": "ann", "event": f"Step {i}",
               "properties": {"notes": "z" * 20_000}} for i in range(30)],
            {"type": "track", "userId": "bob", "event": "Huge", "properties": {"notes": big}},
        ])  # fmt: skip
        assert len(orjson.dumps(sent[-1])) <= MAX_MESSAGE_BYTES
        assert len(server.requests) >= 2 and all(r.status == 200 for r in server.requests)
        assert max(len(r.body) for r in server.requests) < 500_000
        assert sorted(e["name"] for e in entries(server, 200)) == sorted(
            f"Step {i}" for i in range(30)
        )
        dead = manage.queued(world.store, world.repo, world.ws, "cio", "failed")
        assert [d["message_id"] for d in dead] == [sent[-1]["messageId"]]
        assert (
            dead[0]["last_status"] is None
            and "over Customer.io's 32000 bytes" in (dead[0]["last_response"])
        )


def test_customerio_retries_server_errors_and_a_wrong_key_is_a_dead_letter(world):
    with WebhookServer(customerio_server("site-1", "cio-key", fail_first=(502, 503))) as server:
        customerio(world, server)
        world.feed([{"type": "track", "userId": "ann", "event": "Signed Up"}])
        settle(world)
        assert [r.status for r in server.requests] == [502, 503, 200]
        assert manage.status(world.store, world.ws, "cio")["delivered"] == 1
    with WebhookServer(customerio_server("site-1", "other-key")) as server:
        customerio(world, server)
        world.feed([{"type": "track", "userId": "bob", "event": "Signed Up"}])
        dead = manage.queued(world.store, world.repo, world.ws, "cio", "failed")
        assert [d["last_status"] for d in dead] == [401]


def test_a_privacy_deletion_reaches_customerio_as_a_delete_entry(world):
    with WebhookServer(customerio_server("site-1", "cio-key")) as server:
        customerio(world, server)
        world.feed([{"type": "track", "userId": "ann", "event": "Signed Up"}])
        done = forget(world, "ann")
        assert done["receipt"]["forwarded_to"] == ["cio"]
        world.drain()
        assert server.requests[-1].json == {
            "batch": [{"type": "person", "identifiers": {"id": "ann"}, "action": "delete"}]
        }
        assert server.requests[-1].status == 200
        assert manage.queued(world.store, world.repo, world.ws, "cio") == []


def test_customerio_region_picks_the_track_host(world):
    connector = CONNECTORS["customerio"]
    keys = {"site_id": 123, "api_key": "k"}
    assert connector.check(keys, "d")["endpoint"] == "https://track.customer.io"
    assert connector.check({**keys, "region": "eu"}, "d")["endpoint"] == (
        "https://track-eu.customer.io"
    )
    assert connector.check(keys, "d")["site_id"] == "123"


@pytest.mark.parametrize(("settings", "path", "message"), [
    ({"api_key": "k"}, "site_id", "site id"),
    ({"site_id": "s", "api_key": ""}, "api_key", "API key"),
    ({"site_id": "s", "api_key": "k", "region": "ap"}, "region", "us or eu"),
    ({"site_id": "s", "api_key": "k", "endpoint": "track.customer.io"}, "endpoint", "URL"),
    ({"site_id": "s", "api_key": "k", "workspace": "w"}, "workspace", "unknown"),
])  # fmt: skip
def test_customerio_refuses_bad_settings_naming_the_setting(world, settings, path, message):
    with pytest.raises(Invalid, match=message) as info:
        manage.put(world.repo, world.ws, {"key": "c", "type": "customerio",
                                          "settings": settings})  # fmt: skip
    assert info.value.field.endswith(f"settings.{path}")
