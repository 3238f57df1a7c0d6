"""The delivery engine and the webhook connector against a real local HTTP server, on both
backends: payloads and signatures, ordering per person, retries through an outage, dead
letters and replays, filters and consent, rate limits, and definitions refused whole."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from destination_world import DeliveryWorld
from webhook_server import WebhookServer

from plait.destinations import manage
from plait.destinations.dispatcher import Dispatcher
from plait.store.schema import deliveries
from plait.store.workspaces import Invalid


class World(DeliveryWorld):
    deliver_on_feed = False  # the tests deliver when they say

    def __init__(self, store):
        super().__init__(store)
        self.other = self.repo.create_source(self.ws, "Backend", "server")[0]["id"]

    def destination(self, url: str, **doc):
        doc = {"key": "hook", "type": "webhook", "settings": {"url": url}, "backoff": 0.01,
               "max_backoff": 0.05, **doc}  # fmt: skip
        manage.put(self.repo, self.ws, doc)
        return doc

    def queue(self, status=None):
        return manage.queued(self.store, self.repo, self.ws, "hook", status)


def track(user, event, i=0, **props):
    return {"type": "track", "userId": user, "event": event, "properties": {"i": i, **props}}


def wait_for(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
def world(store):
    return World(store)


def test_messages_arrive_signed_with_their_idempotency_keys(world):
    with WebhookServer() as server:
        world.destination(server.url, settings={"url": server.url, "secret": "s3cret",
                                                "headers": {"X-Team": "growth"}})  # fmt: skip
        sent = world.feed([track("ann", "Order Completed", 1), track("bob", "Signed Up", 2)])
        world.drain()
        assert len(server.requests) == 2
        for request in server.requests:
            expected = hmac.new(b"s3cret", request.body, hashlib.sha1).hexdigest()
            assert request.headers["x-signature"] == expected
            assert request.headers["x-team"] == "growth"
            assert request.headers["content-type"] == "application/json"
        got = {m["messageId"]: (k, m) for k, m in server.delivered()}
        assert set(got) == {m["messageId"] for m in sent}
        for msg in sent:  # the message as processed, in Segment's shape
            key, body = got[msg["messageId"]]
            assert body["event"] == msg["event"] and body["userId"] == msg["userId"]
            assert key.startswith("hook-")
        status = manage.status(world.store, world.ws, "hook")
        assert (status["delivered"], status["behind"], status["last_status"]) == (2, 0, 200)
        world.drain()  # nothing new: nothing sent again
        assert len(server.requests) == 2


def test_sha256_signatures_and_batches_as_json_arrays(world):
    with WebhookServer() as server:
        world.destination(
            server.url,
            batch_size=10,
            settings={"url": server.url, "secret": "k", "signature": "sha256"},
        )
        world.feed([track(f"u{i % 5}", "Viewed", i) for i in range(100)])
        world.drain()
        sizes = [len(r.messages) for r in server.requests]
        assert sum(sizes) == 100 and max(sizes) == 10 and len(sizes) <= 14
        for r in server.requests:
            assert r.headers["x-signature"] == hmac.new(b"k", r.body, hashlib.sha256).hexdigest()
            assert len(r.keys) == len(r.messages)
        for person in range(5):  # batches in parallel, each person's messages in order
            steps = [m["properties"]["i"] for _, m in server.delivered()
                     if m["userId"] == f"u{person}"]  # fmt: skip
            assert steps == list(range(person, 100, 5))


def test_an_outage_loses_nothing_keeps_each_persons_order_and_repeats_only_keys(world):
    """503s for a while, then recovery: every message arrives, each person's in log order,
    and what arrived twice came with the same idempotency key."""
    down = {"until": time.monotonic() + 1.0}

    def respond(n, request):
        if time.monotonic() < down["until"]:
            return 503, {}
        return 200, {}

    with WebhookServer(respond) as server:
        world.destination(server.url)
        dispatcher = Dispatcher(world.store, poll_seconds=0.01)
        dispatcher.start()
        try:
            sent = world.feed([track(f"p{i % 5}", "Step", i) for i in range(60)])
            wait_for(lambda: {m["messageId"] for _, m in server.delivered()}
                     >= {m["messageId"] for m in sent})  # fmt: skip
        finally:
            dispatcher.stop()
        assert any(r.status == 503 for r in server.requests)
        delivered = server.delivered()
        by_person: dict[str, list[int]] = {}
        first_seen: dict[str, str] = {}
        for key, msg in delivered:
            assert first_seen.setdefault(msg["messageId"], key) == key  # repeats: same key
            if msg["properties"]["i"] not in by_person.get(msg["userId"], []):
                by_person.setdefault(msg["userId"], []).append(msg["properties"]["i"])
        for person, steps in by_person.items():
            assert steps == sorted(steps), person
        assert sum(len(s) for s in by_person.values()) == 60
        assert world.queue() == []
        assert manage.status(world.store, world.ws, "hook")["retried"] > 0


def test_a_permanent_failure_becomes_a_dead_letter_that_can_be_replayed(world):
    answers = {"status": 400}
    with WebhookServer(lambda n, r: (answers["status"], {})) as server:
        world.destination(server.url)
        sent = world.feed([track("ann", "Order Completed", 1), track("ann", "Refunded", 2)])
        world.drain()
        dead = world.queue("failed")
        assert [d["message_id"] for d in dead] == [m["messageId"] for m in sent]
        assert dead[0]["last_status"] == 400 and "nope" in dead[0]["last_response"]
        assert manage.status(world.store, world.ws, "hook")["queue"]["failed"] == 2
        where = manage.message_status(world.store, world.repo, world.ws, sent[0]["messageId"])
        assert where["destinations"][0]["status"] == "failed"
        answers["status"] = 200
        assert manage.replay(world.store, world.repo, world.ws, "hook", dead_letters=True) == 2
        world.drain()
        assert world.queue() == []
        replayed = [m["messageId"] for k, m in server.delivered()]
        assert replayed == [m["messageId"] for m in sent]  # in the person's order
        where = manage.message_status(world.store, world.repo, world.ws, sent[0]["messageId"])
        assert where["destinations"][0]["status"] == "delivered"


def test_a_person_waits_behind_their_retrying_message_others_do_not(world):
    def respond(n, request):
        first = request.messages[0]
        return (503, {"Retry-After": "60"}) if first["userId"] == "ann" else (200, {})

    with WebhookServer(respond) as server:
        world.destination(server.url)
        world.feed([track("ann", "A", 1), track("bob", "B", 2), track("ann", "C", 3)])
        world.drain()
        assert [m["userId"] for _, m in server.delivered()] == ["bob"]
        queued = world.queue()
        assert [(q["status"], q["attempts"]) for q in queued] == [("retrying", 1), ("waiting", 0)]
        # Retry-After (60 s) is honoured: nothing is due yet
        assert queued[0]["next_attempt_at"] > int(time.time() * 1000) + 50_000
        world.drain()
        assert sum(1 for r in server.requests if r.messages[0]["userId"] == "ann") == 1


def test_retryable_failures_past_the_retry_period_become_dead_letters(world):
    with WebhookServer(lambda n, r: (500, {})) as server:
        world.destination(server.url, retry_period=0.3, backoff=0.05, max_backoff=0.1)
        world.feed([track("ann", "A", 1)])
        dispatcher = Dispatcher(world.store, poll_seconds=0.01)
        dispatcher.start()
        try:
            wait_for(lambda: world.queue("failed"))
        finally:
            dispatcher.stop()
        dead = world.queue("failed")[0]
        assert dead["attempts"] >= 2 and dead["last_status"] == 500
        assert len(server.requests) == dead["attempts"]


def test_an_unreachable_destination_is_retried_and_slows_no_other(world):
    with WebhookServer() as server:
        world.destination(server.url)
        manage.put(world.repo, world.ws, {"key": "down", "type": "webhook",
                                          "settings": {"url": "http://127.0.0.1:9/", "timeout": 1},
                                          "backoff": 60})  # fmt: skip
        world.feed([track("ann", "A", 1)])
        started = time.monotonic()
        world.drain()
        assert time.monotonic() - started < 5
        assert len(server.delivered()) == 1
        down = manage.queued(world.store, world.repo, world.ws, "down")
        assert down[0]["status"] == "retrying" and down[0]["last_status"] is None
        assert "ConnectError" in down[0]["last_response"]


def test_filters_types_sources_and_consent_choose_what_a_destination_gets(world):
    world.repo.put_setting(world.ws, "consent", {"destinations": {"Ads": ["advertising"]}})
    with WebhookServer() as server:
        world.destination(
            server.url,
            name="Ads",
            types=["track"],
            sources=["Website"],
            filter="event != 'Heartbeat'",
        )
        consented = {"context": {"consent": {"categoryPreferences": {"Advertising": True}}}}
        refused = {"context": {"consent": {"categoryPreferences": {"Advertising": False}}}}
        kept = world.feed(
            [
                {**track("ann", "Order Completed", 1), **consented},
                {**track("ann", "Heartbeat", 2), **consented},  # the filter
                {"type": "identify", "userId": "ann", "traits": {"a": 1}},  # the types
                {**track("bob", "Order Completed", 3), **refused},  # consent
                track("cat", "Order Completed", 4),  # no consent information: flows
            ]
        )
        world.feed([track("dan", "Order Completed", 5)], source=world.other)  # the sources
        world.drain()
        got = sorted(m["properties"]["i"] for _, m in server.delivered())  # persons in parallel
        assert got == [1, 4]
        assert manage.status(world.store, world.ws, "hook")["filtered"] == 4
        where = manage.message_status(world.store, world.repo, world.ws, kept[3]["messageId"])
        assert where["destinations"][0]["status"] == "filtered"


def test_a_time_range_is_replayed_in_order(world):
    with WebhookServer() as server:
        world.destination(server.url)
        now = datetime.now(UTC)
        at = [(now - timedelta(days=d)).isoformat() for d in (3, 2, 1)]
        world.feed([{**track("ann", "A", i), "timestamp": t} for i, t in enumerate(at)])
        world.drain()
        assert len(server.delivered()) == 3
        start, end = (now - timedelta(days=2, hours=1)).isoformat(), now.isoformat()
        assert manage.replay(world.store, world.repo, world.ws, "hook", start=start, end=end) == 2
        world.drain()
        assert [m["properties"]["i"] for _, m in server.delivered()] == [0, 1, 2, 1, 2]
        keys = [k for k, _ in server.delivered()]
        assert keys[3:] == keys[1:3]  # a replay repeats the same idempotency keys
        with pytest.raises(Invalid, match="dead_letters, or a time range"):
            manage.replay(world.store, world.repo, world.ws, "hook")
        with pytest.raises(Invalid, match="after start"):
            manage.replay(world.store, world.repo, world.ws, "hook", start=end, end=start)


def test_a_rate_limit_spaces_the_requests(world):
    with WebhookServer() as server:
        world.destination(server.url, rate_limit=20)
        world.feed([track(f"u{i}", "A", i) for i in range(40)])
        started = time.monotonic()
        world.drain()
        assert len(server.delivered()) == 40
        assert time.monotonic() - started >= 0.9  # 20 at once, then 20 a second


def test_a_removed_or_disabled_destination_stops_and_its_queue_goes(world):
    with WebhookServer(lambda n, r: (400, {})) as server:
        world.destination(server.url)
        world.feed([track("ann", "A", 1)])
        world.drain()
        assert len(world.queue("failed")) == 1
        manage.put(world.repo, world.ws, {"key": "hook", "type": "webhook", "enabled": False,
                                          "settings": {"url": server.url}})  # fmt: skip
        world.feed([track("ann", "B", 2)])
        world.drain()
        assert len(server.requests) == 1
        manage.delete(world.repo, world.store, world.ws, "hook")
        with world.store.engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(deliveries)) == 0


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        ({"key": "Bad Key", "type": "webhook"}, "destinations[0].key", "a-z"),
        ({"key": "x", "type": "fax"}, "destinations[0].type", "unknown connector"),
        ({"key": "x", "type": "webhook", "settings": {}}, "destinations[0].settings.url", "URL"),
        ({"key": "x", "type": "webhook", "settings": {"url": "ftp://a"}},
         "destinations[0].settings.url", "http"),
        ({"key": "x", "type": "webhook", "settings": {"url": "http://a", "signature": "md5"}},
         "destinations[0].settings.signature", "sha1 or sha256"),
        ({"key": "x", "type": "webhook", "settings": {"url": "http://a",
                                                      "headers": {"X-Signature": "1"}}},
         "destinations[0].settings.headers", "set by Plait"),
        ({"key": "x", "type": "webhook", "settings": {"url": "http://a"}, "filter": "event =="},
         "destinations[0].filter", "column"),
        ({"key": "x", "type": "webhook", "settings": {"url": "http://a"}, "batch_size": 5000},
         "destinations[0].batch_size", "1 to 1000"),
        ({"key": "x", "type": "webhook", "settings": {"url": "http://a"}, "types": ["click"]},
         "destinations[0].types", "unknown type"),
        ({"key": "x", "type": "webhook", "settings": {"url": "http://a"},
          "retry_period": "forever"}, "destinations[0].retry_period", "not a duration"),
        ({"key": "x", "type": "webhook", "settings": {"url": "http://a"}, "colour": 1},
         "destinations[0].colour", "unknown field"),
    ],
)  # fmt: skip
def test_definitions_are_refused_with_the_field_and_nothing_is_stored(world, doc, field, message):
    with pytest.raises(Invalid) as bad:
        manage.put(world.repo, world.ws, doc)
    assert bad.value.field == field and message in bad.value.message
    assert manage.documents(world.repo, world.ws) == []


def test_a_new_destination_gets_what_comes_after_it_and_the_workspace_file_keeps_secrets(world):
    from plait.api import workspace_file

    with WebhookServer() as server:
        world.feed([track("ann", "Before", 0)])  # before the destination: not sent
        world.destination(server.url, settings={"url": server.url, "secret": "s1"})
        world.feed([track("ann", "After", 1)])
        world.drain()
        assert [m["event"] for _, m in server.delivered()] == ["After"]
        text = workspace_file.export(world.repo, world.ws)
        assert "s1" not in text and "********" in text
        doc = workspace_file.parse(text)
        doc["destinations"][0]["settings"]["headers"] = {"X-Env": "prod"}
        result = workspace_file.apply(world.repo, doc)
        assert "destinations" in result.updated
        stored = manage.documents(world.repo, world.ws)[0]["settings"]
        assert stored["secret"] == "s1" and stored["headers"] == {"X-Env": "prod"}
        assert "destinations" not in workspace_file.apply(world.repo, doc).updated  # idempotent
        doc["destinations"][0]["settings"]["url"] = "mailto:x"
        with pytest.raises(Invalid, match="URL"):
            workspace_file.apply(world.repo, doc)


def test_a_privacy_deletion_drops_the_persons_queue_and_is_forwarded(world):
    import plait.destinations  # noqa: F401  (its steps in privacy deletions)
    from plait.govern import privacy

    up = {"ann": False}

    def respond(n, request):
        first = request.messages[0]
        return (200, {}) if first.get("userId") != "ann" or up["ann"] else (503, {})

    with WebhookServer(respond) as server:
        world.destination(server.url)
        world.feed([track("ann", "A", 1), track("ann", "B", 2), track("bob", "C", 3)])
        world.drain()
        assert [q["status"] for q in world.queue()] == ["retrying", "waiting"]
        created = privacy.create_request(world.store, world.ws, "DELETE_ONLY", "USER_ID",
                                         ["ann"], "tok_test")  # fmt: skip
        done = privacy.run_request(world.store, created["id"], ["ann"], settle_seconds=0)
        assert done["receipt"]["forwarded_to"] == ["hook"]
        assert done["receipt"]["rows_removed"]["deliveries"] == 2
        assert "pending_deliveries" not in done["receipt"]
        queued = world.queue()
        assert [(q["status"], q["message_id"]) for q in queued] == [("waiting", None)]
        up["ann"] = True
        world.drain()
        deletes = [m for _, m in server.delivered() if m.get("type") == "delete"]
        assert len(deletes) == 1 and deletes[0]["userId"] == "ann" and deletes[0]["timestamp"]
        assert not any(m.get("event") in ("A", "B") for _, m in server.delivered())
        assert world.queue() == []
        # deleting from Plait only forwards nothing
        created = privacy.create_request(world.store, world.ws, "DELETE_INTERNAL", "USER_ID",
                                         ["bob"], "tok_test")  # fmt: skip
        done = privacy.run_request(world.store, created["id"], ["bob"], settle_seconds=0)
        assert done["receipt"]["forwarded_to"] == [] and world.queue() == []


def test_transformations_for_a_destination_change_only_its_copy(world):
    world.repo.put_setting(world.ws, "transformations", [{
        "name": "for the warehouse", "destinations": ["Warehouse"],
        "rules": [{"drop_event": "properties.test == true"},
                  {"derive_property": {"name": "properties.cents",
                                       "expr": "round(properties.revenue * 100)"}}],
    }])  # fmt: skip
    with WebhookServer() as warehouse, WebhookServer() as other:
        world.destination(warehouse.url, name="Warehouse")
        manage.put(world.repo, world.ws, {"key": "other", "type": "webhook",
                                          "settings": {"url": other.url}})  # fmt: skip
        sent = world.feed(
            [
                track("ann", "Order Completed", 1, revenue=12.5),
                track("ann", "Order Completed", 2, revenue=3, test=True),
            ]
        )
        world.drain()
        got = [m["properties"] for _, m in warehouse.delivered()]
        assert got == [{"i": 1, "revenue": 12.5, "cents": 1250}]
        assert [m["properties"] for _, m in other.delivered()] == [
            {"i": 1, "revenue": 12.5},
            {"i": 2, "revenue": 3, "test": True},
        ]
        where = manage.message_status(world.store, world.repo, world.ws, sent[1]["messageId"])
        assert {d["destination"]: d["status"] for d in where["destinations"]} == {
            "hook": "filtered",
            "other": "delivered",
        }


def test_a_connected_audience_is_synced_whole_then_follows_entries_and_exits(world):
    from plait.audiences import manage as audience_docs

    at = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    audiences = [{"key": "buyers", "emit": "both", "definition":
                  'performed "Order Completed" at least 2 times in last 30 days'}]  # fmt: skip
    audience_docs.check(world.repo, world.ws, {"audiences": audiences})
    audience_docs.save(world.repo, world.ws, {"audiences": audiences})
    world.feed([{**track(u, "Order Completed", i), "timestamp": at}
                for i, u in enumerate(["ann", "ann", "bob", "bob", "cat"])])  # fmt: skip
    with WebhookServer() as server:
        with pytest.raises(Invalid, match="no audience 'nobody'"):
            world.destination(server.url, audiences=["nobody"])
        world.destination(server.url, audiences=["buyers"])
        world.drain()  # the full sync: the members so far, each as the audience emits
        synced = {(m["userId"], m["type"]) for _, m in server.delivered()}
        assert synced == {("ann", "identify"), ("ann", "track"), ("bob", "identify"),
                          ("bob", "track")}  # fmt: skip
        first = server.delivered()[0][1]
        assert first["context"]["personas"]["computation_key"] == "buyers"
        world.feed(
            [{**track("cat", "Order Completed", 9), "timestamp": at}, track("dan", "Signed Up")]
        )  # not an audience's message: filtered
        world.drain()
        later = [(m["userId"], m.get("event"), m.get("traits")) for _, m in server.delivered()[4:]]
        assert sorted(later, key=str) == sorted(
            [("cat", None, {"buyers": True}), ("cat", "Audience Entered", None)], key=str
        )
        assert world.queue() == []
