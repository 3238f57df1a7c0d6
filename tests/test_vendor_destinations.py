"""Vendor connectors against local servers that check the vendors' documented request
formats, credentials, batch limits and error answers (their clouds cannot be reached
here): Amplitude's HTTP V2 API and Slack's incoming webhooks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from destination_world import DeliveryWorld
from webhook_server import WebhookServer

from plait.destinations import manage
from plait.destinations.templates import render
from plait.store.workspaces import Invalid


@pytest.fixture
def world(store):
    return DeliveryWorld(store)


def amplitude_server(api_key: str, throttle_first: int = 0):
    """Amplitude's HTTP V2 endpoint as documented: JSON body with api_key and events (at
    most 2,000), each with event_type, a user_id or device_id of 5 characters or more
    (unless options.min_id_length), time in ms and an insert_id; 400 naming the events
    with invalid fields; 429 when throttled."""

    def respond(n, request):
        if request.path != "/2/httpapi" or request.headers.get("content-type") != (
            "application/json"
        ):
            return 404, {}
        body = request.json
        if body.get("api_key") != api_key:
            return 400, {}
        events = body.get("events") or []
        if not 1 <= len(events) <= 2000:
            return 413 if events else 400, {}
        if n < throttle_first:
            return 429, {}
        shortest = (body.get("options") or {}).get("min_id_length", 5)
        invalid = [
            i
            for i, e in enumerate(events)
            if not e.get("event_type")
            or not isinstance(e.get("time"), int)
            or not e.get("insert_id")
            or not any(len(e.get(k) or "") >= shortest for k in ("user_id", "device_id"))
        ]
        if invalid:
            return (
                400,
                {},
                orjson.dumps(
                    {
                        "code": 400,
                        "error": "Invalid id length for user_id or device_id",
                        "events_with_invalid_fields": {"user_id": invalid},
                    }
                ),
            )
        return 200, {}, orjson.dumps({"code": 200, "events_ingested": len(events)})

    return respond


def test_amplitude_gets_its_event_format_and_refused_events_become_dead_letters(world):
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    with WebhookServer(amplitude_server("amp-key", throttle_first=1)) as server:
        base = server.url.removesuffix("/hook")
        manage.put(
            world.repo,
            world.ws,
            {
                "key": "amp",
                "type": "amplitude",
                "backoff": 0.01,
                "max_backoff": 0.02,
                "batch_size": 10,
                "settings": {"api_key": "amp-key", "endpoint": base},
            },
        )
        sent = world.feed([
            {"type": "track", "userId": "user-00001", "event": "Order Completed",
             "properties": {"revenue": 12.5}, "timestamp": at,
             "context": {"ip": "203.0.113.9", "os": {"name": "iOS"}}},
            {"type": "page", "userId": "user-00001", "name": "Home", "properties": {"path": "/"}},
            {"type": "identify", "userId": "user-00001", "traits": {"plan": "pro"}},
            {"type": "track", "userId": "ann", "event": "Too Short"},  # user_id < 5
            {"type": "group", "userId": "user-00001", "groupId": "g1"},  # not sent
        ])  # fmt: skip
        for _ in range(3):  # 429 first, then the 400 naming one event, then the rest
            world.drain()
            asyncio.run(asyncio.sleep(0.05))
        statuses = [r.status for r in server.requests]
        assert statuses[0] == 429 and 400 in statuses and statuses[-1] == 200
        delivered = [e for r in server.requests if r.status == 200 for e in r.json["events"]]
        by_type = {e["event_type"]: e for e in delivered}
        assert set(by_type) == {"Order Completed", "Viewed Home Page", "$identify"}
        order = by_type["Order Completed"]
        assert order["user_id"] == "user-00001" and order["event_properties"] == {"revenue": 12.5}
        assert order["time"] == int(datetime.fromisoformat(at).timestamp() * 1000)
        assert order["ip"] == "203.0.113.9" and order["os_name"] == "iOS"
        assert order["insert_id"].startswith("amp-")
        assert by_type["$identify"]["user_properties"] == {"$set": {"plan": "pro"}}
        dead = manage.queued(world.store, world.repo, world.ws, "amp", "failed")
        assert [d["message_id"] for d in dead] == [sent[3]["messageId"]]
        assert dead[0]["last_status"] == 400
        assert "events_with_invalid_fields" in dead[0]["last_response"]
        status = manage.status(world.store, world.ws, "amp")
        assert status["filtered"] == 1 and status["queue"]["retrying"] == 0  # the group call
    with pytest.raises(Invalid, match="unknown type 'group' for amplitude"):
        manage.put(
            world.repo,
            world.ws,
            {"key": "amp2", "type": "amplitude", "types": ["group"], "settings": {"api_key": "k"}},
        )


def test_slack_gets_a_text_from_the_template_and_a_refusal_is_a_dead_letter(world):
    answers = {"status": 200}
    with WebhookServer(lambda n, r: (answers["status"], {})) as server:
        manage.put(world.repo, world.ws, {"key": "alerts", "type": "slack", "settings": {
            "url": server.url, "channel": "#sales",
            "template": "{userId} ordered for {properties[revenue]} {properties[currency]}",
        }})  # fmt: skip
        world.feed([{"type": "track", "userId": "ann", "event": "Order Completed",
                     "properties": {"revenue": 99}}])  # fmt: skip
        assert server.requests[0].json == {"text": "ann ordered for 99 ", "channel": "#sales"}
        answers["status"] = 404  # no_service: the webhook was removed
        world.feed([{"type": "track", "userId": "bob", "event": "Order Completed"}])
        dead = manage.queued(world.store, world.repo, world.ws, "alerts", "failed")
        assert len(dead) == 1 and dead[0]["last_status"] == 404
    assert render("{missing} {event}", {"event": "A"}) == " A"
    with pytest.raises(Invalid, match="not a template"):
        manage.put(
            world.repo,
            world.ws,
            {"key": "s2", "type": "slack", "settings": {"url": "https://x", "template": "{oops"}},
        )


def test_amplitude_requests_never_exceed_its_batch_limit(world):
    with pytest.raises(Invalid, match="1 to 2000"):
        manage.put(
            world.repo,
            world.ws,
            {"key": "amp", "type": "amplitude", "batch_size": 2001, "settings": {"api_key": "k"}},
        )


def mixpanel_server(username: str, secret: str, project: str):
    """Mixpanel's Import API as documented: POST /import?strict=1&project_id=, Basic auth
    with the service account, a JSON array of at most 2,000 events, each with event and
    properties.time, distinct_id and $insert_id (at most 36 of [A-Za-z0-9-]); in strict mode
    a 400 lists the failed records by index, the others being imported; an event more
    than an hour in the future is refused."""
    import base64
    import re
    import time
    from urllib.parse import parse_qs, urlsplit

    def respond(n, request):
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if (
            url.path != "/import"
            or query.get("strict") != ["1"]
            or query.get("project_id") != [project]
        ):
            return 404, {}
        expected = "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return 401, {}, b'{"code": 401, "error": "Invalid credentials", "status": 0}'
        events = request.json
        if not isinstance(events, list) or not 1 <= len(events) <= 2000:
            return 413, {}
        failed = [
            {"index": i, "field": "properties.time", "message": "'properties.time' is invalid"}
            for i, e in enumerate(events)
            if not isinstance(e["properties"].get("time"), int)
            or e["properties"]["time"] > (time.time() + 3600) * 1000
            or not e["properties"].get("distinct_id")
            or not re.fullmatch(r"[A-Za-z0-9-]{1,36}", e["properties"].get("$insert_id", ""))
        ]  # fmt: skip
        if failed:
            return 400, {}, orjson.dumps({"code": 400, "failed_records": failed,
                                          "num_records_imported": len(events) - len(failed),
                                          "status": "Bad Request"})  # fmt: skip
        return 200, {}, orjson.dumps({"code": 200, "num_records_imported": len(events),
                                      "status": "OK"})  # fmt: skip

    return respond


def test_mixpanel_imports_events_and_strict_mode_refusals_become_dead_letters(world):
    at = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    with WebhookServer(mixpanel_server("svc.user", "s3cret", "12345")) as server:
        base = server.url.removesuffix("/hook")
        manage.put(
            world.repo,
            world.ws,
            {
                "key": "mix",
                "type": "mixpanel",
                "batch_size": 10,
                "settings": {
                    "project_id": 12345,
                    "username": "svc.user",
                    "secret": "s3cret",
                    "endpoint": base,
                },
            },
        )
        sent = world.feed([
            {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": at,
             "properties": {"revenue": 12.5}},
            {"type": "page", "anonymousId": "anon-1", "name": "Pricing"},
            {"type": "track", "userId": "cat", "event": "Later",  # refused: in the future
             "timestamp": (datetime.now(UTC) + timedelta(days=2)).isoformat()},
        ])  # fmt: skip
        events = [e for r in server.requests for e in r.json]
        assert {e["event"] for e in events} >= {"Order Completed", "Viewed Pricing Page"}
        order = next(e for e in events if e["event"] == "Order Completed")
        assert order["properties"]["distinct_id"] == "ann"
        assert order["properties"]["time"] == int(datetime.fromisoformat(at).timestamp() * 1000)
        assert len(order["properties"]["$insert_id"]) == 32
        dead = manage.queued(world.store, world.repo, world.ws, "mix", "failed")
        assert [d["message_id"] for d in dead] == [sent[2]["messageId"]]
        assert "failed_records" in dead[0]["last_response"]
        assert manage.status(world.store, world.ws, "mix")["delivered"] == 2
    with WebhookServer(mixpanel_server("svc.user", "other", "12345")) as server:
        manage.put(world.repo, world.ws, {"key": "mix", "type": "mixpanel", "settings": {
            "project_id": 12345, "username": "svc.user", "secret": "s3cret",
            "endpoint": server.url.removesuffix("/hook")}})  # fmt: skip
        world.feed([{"type": "track", "userId": "bob", "event": "A"}])
        dead = manage.queued(world.store, world.repo, world.ws, "mix", "failed")
        assert dead[-1]["last_status"] == 401  # wrong credentials: a dead letter


def test_an_audience_entry_sends_an_email_over_smtp_from_a_template(world):
    import email.policy
    from email import message_from_bytes

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import Envelope
    from conftest import free_port

    from plait.audiences import manage as audience_docs

    received: list[Envelope] = []

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
            if address.endswith("@refused.example"):
                return "550 5.1.1 mailbox unavailable"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            received.append(envelope)
            return "250 Message accepted"

    smtp = Controller(Handler(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        audiences = [{"key": "vip", "emit": "track", "definition":
                      'performed "Order Completed" at least 2 times in last 30 days'}]  # fmt: skip
        audience_docs.check(world.repo, world.ws, {"audiences": audiences})
        audience_docs.save(world.repo, world.ws, {"audiences": audiences})
        manage.put(world.repo, world.ws, {"key": "mail", "type": "email", "audiences": ["vip"],
                                          "filter": "event == 'Audience Entered'",
                                          "settings": {
            "host": "127.0.0.1", "port": smtp.port, "starttls": False,
            "from": "team@shop.example", "subject": "Welcome to {properties[audience_key]}",
            "body": "Hello {traits[first_name]}, you are now a VIP.",
        }})  # fmt: skip
        at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        world.feed([
            {"type": "identify", "userId": "ann",
             "traits": {"email": "ann@shop.example", "first_name": "Ann"}},
            {"type": "identify", "userId": "bob", "traits": {"email": "bob@refused.example"}},
            *[{"type": "track", "userId": u, "event": "Order Completed", "timestamp": at}
              for u in ("ann", "ann", "bob", "bob", "cat", "cat")],  # cat: no address
        ])  # fmt: skip
        assert len(received) == 1
        mail = message_from_bytes(received[0].content, policy=email.policy.default)
        assert received[0].mail_from == "team@shop.example"
        assert received[0].rcpt_tos == ["ann@shop.example"]
        assert mail["Subject"] == "Welcome to vip"
        assert mail.get_content().strip() == "Hello Ann, you are now a VIP."
        assert mail["Message-ID"].startswith("<mail-")
        dead = manage.queued(world.store, world.repo, world.ws, "mail", "failed")
        responses = sorted(d["last_response"] for d in dead)
        assert len(dead) == 2 and "mailbox unavailable" in responses[0]
        assert "no 'email' address" in responses[1]
    finally:
        smtp.stop()


def test_an_audience_full_sync_reaches_a_mapping_connector_in_its_format(world):
    from plait.audiences import manage as audience_docs

    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    audiences = [{"key": "buyers", "emit": "identify", "definition":
                  'performed "Order Completed" at least 1 times in last 30 days'}]  # fmt: skip
    audience_docs.save(world.repo, world.ws, {"audiences": audiences})
    world.feed([{"type": "track", "userId": "user-00001", "event": "Order Completed",
                 "timestamp": at}])  # fmt: skip
    with WebhookServer(amplitude_server("amp-key")) as server:
        manage.put(world.repo, world.ws, {"key": "amp", "type": "amplitude",
                                          "audiences": ["buyers"], "settings": {
            "api_key": "amp-key", "endpoint": server.url.removesuffix("/hook")}})  # fmt: skip
        world.drain()  # the full sync, mapped like any message
        assert [r.status for r in server.requests] == [200]
        (event,) = server.requests[0].json["events"]
        assert event["event_type"] == "$identify" and event["user_id"] == "user-00001"
        assert event["user_properties"] == {"$set": {"buyers": True}}
