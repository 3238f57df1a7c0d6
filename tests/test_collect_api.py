"""The Segment HTTP Tracking API over a real server: every endpoint, auth, encodings,
enrichment, dedup, CORS, settings, overload, health and metrics."""

from __future__ import annotations

import base64
import gzip
import zlib
from datetime import timedelta

import httpx
import orjson
import pytest
from conftest import start_server
from prometheus_client.parser import text_string_to_metric_families

from plait.log import backend_for
from plait.spec.timestamps import now_utc, parse_timestamp
from plait.store.workspaces import Workspaces

# path -> (stored type, a valid message for it)
SINGLE = {
    "identify": {"userId": "u1", "traits": {"email": "u1@example.com", "plan": "pro"}},
    "track": {"userId": "u1", "event": "Order Completed", "properties": {"total": 9.5}},
    "page": {"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}},
    "screen": {"userId": "u1", "name": "Settings", "properties": {"tab": 2}},
    "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
    "alias": {"userId": "u1", "previousId": "a1"},
}
# One client for the module: creating an httpx client costs ~0.1 s (its TLS context).
http = httpx.Client(timeout=30.0)
SHORT = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias"}


def records(server):
    return backend_for(server.store).read(0, 10_000)


def stored(server) -> list[dict]:
    return [orjson.loads(r.payload) for r in records(server)]


def post(server, path: str, body, key: str | None = None, **kwargs) -> httpx.Response:
    key = server.write_key if key is None else key
    return http.post(f"{server.url}{path}", json=body, auth=(key, ""), **kwargs)


def metric(url: str, name: str, **labels) -> float:
    text = http.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


# Endpoints ----------------------------------------------------------------------------


def test_every_endpoint_and_short_path_stores_its_type_and_fields(server):
    sent = []
    paths = [(f"/v1/{t}", t) for t in SINGLE] + [(f"/v1/{s}", t) for s, t in SHORT.items()]
    for n, (path, msg_type) in enumerate(paths):
        body = {**SINGLE[msg_type], "messageId": f"m-{n}"}
        response = post(server, path, body)
        assert response.status_code == 200, (path, response.text)
        assert response.json() == {"success": True}
        assert response.headers["content-type"] == "application/json"
        sent.append((f"m-{n}", msg_type, body))
    for n, path in enumerate(("/v1/batch", "/v1/import", "/v1/b")):
        batch = [{**SINGLE[t], "type": t, "messageId": f"b-{n}-{t}"} for t in ("track", "identify")]
        response = post(server, path, {"batch": batch})
        assert response.status_code == 200, (path, response.text)
        assert response.json() == {"success": True}
        sent += [(m["messageId"], m["type"], m) for m in batch]

    got = records(server)
    assert [(r.message_id, r.type) for r in got] == [(mid, t) for mid, t, _ in sent]
    for record, (_, msg_type, body) in zip(got, sent, strict=True):
        payload = orjson.loads(record.payload)
        assert (record.workspace_id, record.source_id) == (server.workspace_id, server.source_id)
        assert payload["type"] == msg_type
        for field, value in body.items():
            assert payload[field] == value, (msg_type, field)


def test_a_trailing_slash_is_accepted_and_unknown_routes_are_404(server):
    assert post(server, "/v1/track/", SINGLE["track"]).status_code == 200
    assert post(server, "/v1/trak", SINGLE["track"]).status_code == 404
    assert http.get(f"{server.url}/v1/track").status_code == 404
    assert post(server, "/v1/pixel/track", SINGLE["track"]).status_code == 404
    assert len(records(server)) == 1


def test_write_key_as_basic_auth_username_or_in_the_body(server):
    url = f"{server.url}/v1/track"
    by_basic = http.post(
        url, json={**SINGLE["track"], "messageId": "basic"}, auth=(server.write_key, "")
    )
    with_password = http.post(
        url, json={**SINGLE["track"], "messageId": "password"}, auth=(server.write_key, "ignored")
    )
    in_body = http.post(
        url, json={**SINGLE["track"], "messageId": "body", "writeKey": server.write_key}
    )
    batch_body = http.post(
        f"{server.url}/v1/batch",
        json={
            "writeKey": server.write_key,
            "batch": [{**SINGLE["track"], "type": "track", "messageId": "batch"}],
        },
    )
    for response in (by_basic, with_password, in_body, batch_body):
        assert response.status_code == 200, response.text
    missing = http.post(url, json=SINGLE["track"])
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_write_key"
    payloads = stored(server)
    assert [p["messageId"] for p in payloads] == ["basic", "password", "body", "batch"]
    assert all("writeKey" not in p for p in payloads)
    assert server.write_key not in "".join(r.payload for r in records(server))


def test_text_plain_and_missing_content_types_are_accepted(server):
    # analytics.js sends text/plain to avoid a CORS preflight
    for n, content_type in enumerate(["text/plain", "text/plain;charset=UTF-8", None]):
        headers = {"content-type": content_type} if content_type else {}
        body = orjson.dumps({**SINGLE["track"], "messageId": f"ct-{n}"})
        response = http.post(
            f"{server.url}/v1/t", content=body, headers=headers, auth=(server.write_key, "")
        )
        assert response.status_code == 200, response.text
    assert [r.message_id for r in records(server)] == ["ct-0", "ct-1", "ct-2"]


def test_gzip_and_deflate_bodies(server):
    single = orjson.dumps({**SINGLE["identify"], "messageId": "gz-single"})
    batch = orjson.dumps(
        {"batch": [{**SINGLE["track"], "type": "track", "messageId": f"gz-{i}"} for i in range(3)]}
    )
    auth = (server.write_key, "")
    deflated = zlib.compress(orjson.dumps({**SINGLE["track"], "messageId": "deflated"}))
    for path, encoding, data in (
        ("/v1/identify", "gzip", gzip.compress(single)),
        ("/v1/batch", "gzip", gzip.compress(batch)),
        ("/v1/track", "deflate", deflated),
    ):
        response = http.post(
            f"{server.url}{path}", content=data, auth=auth, headers={"content-encoding": encoding}
        )
        assert response.status_code == 200, response.text
    payloads = stored(server)
    assert [p["messageId"] for p in payloads] == ["gz-single", "gz-0", "gz-1", "gz-2", "deflated"]
    assert payloads[0]["traits"] == SINGLE["identify"]["traits"]


def test_batch_context_and_integrations_are_merged_into_each_message(server):
    body = {
        "context": {"library": {"name": "analytics-python", "version": "2.3.0"}, "locale": "en"},
        "integrations": {"All": True, "Mixpanel": False},
        "batch": [
            {"type": "track", "userId": "u1", "event": "A", "messageId": "plain"},
            {
                "type": "track",
                "userId": "u1",
                "event": "B",
                "messageId": "own",
                "context": {"locale": "de", "app": {"name": "x"}},
                "integrations": {"Mixpanel": True},
            },
        ],
    }
    assert post(server, "/v1/batch", body).status_code == 200
    plain, own = stored(server)
    assert plain["context"] == {**body["context"], "ip": "127.0.0.1"}
    assert plain["integrations"] == {"All": True, "Mixpanel": False}
    assert own["context"] == {
        "library": {"name": "analytics-python", "version": "2.3.0"},
        "locale": "de",
        "app": {"name": "x"},
        "ip": "127.0.0.1",
    }
    assert own["integrations"] == {"All": True, "Mixpanel": True}


# Enrichment ---------------------------------------------------------------------------


def test_enrichment_fields(server):
    before = now_utc() - timedelta(milliseconds=1)
    body = {
        "userId": "u1",
        "event": "Skewed",
        "messageId": "skewed",
        "writeKey": "not-used-when-basic-auth-is-present",
        # the client's clock is 3 days off; the call waited 10 s in its queue
        "timestamp": "2020-01-01T00:00:00.000Z",
        "sentAt": "2020-01-01T00:00:10.000Z",
    }
    assert post(server, "/v1/track", body).status_code == 200
    assert post(server, "/v1/identify", {"userId": "u2"}).status_code == 200
    assert post(server, "/v1/identify", {"userId": "u3"}).status_code == 200
    after = now_utc()
    skewed, generated, generated_too = stored(server)
    received = parse_timestamp(skewed["receivedAt"])
    assert before <= received <= after
    assert parse_timestamp(skewed["timestamp"]) == received - timedelta(seconds=10)
    assert skewed["originalTimestamp"] == "2020-01-01T00:00:00.000Z"
    assert skewed["sentAt"] == "2020-01-01T00:00:10.000Z"
    assert skewed["context"]["ip"] == "127.0.0.1"
    assert skewed["sourceId"] == server.source_id
    assert skewed["workspaceId"] == server.workspace_id
    assert "writeKey" not in skewed
    # no client time at all: the timestamp is the arrival
    assert generated["timestamp"] == generated["receivedAt"]
    assert generated["messageId"].startswith("api-")
    assert generated["messageId"] != generated_too["messageId"]
    record = records(server)[0]
    assert abs(record.received_at / 1e6 - received.timestamp()) < 0.001


def test_batch_sent_at_corrects_every_message_and_a_message_sent_at_wins(server):
    body = {
        "sentAt": "2020-01-01T00:01:00Z",
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "timestamp": "2020-01-01T00:00:00Z"},
            {
                "type": "track",
                "userId": "u",
                "event": "E",
                "originalTimestamp": "2020-01-01T00:00:30Z",
            },
            {
                "type": "track",
                "userId": "u",
                "event": "E",
                "timestamp": "2020-01-01T00:00:00Z",
                "sentAt": "2020-01-01T00:00:05Z",
            },
        ],
    }
    assert post(server, "/v1/batch", body).status_code == 200
    delays = []
    for payload in stored(server):
        received = parse_timestamp(payload["receivedAt"])
        delays.append(received - parse_timestamp(payload["timestamp"]))
    assert delays == [timedelta(seconds=60), timedelta(seconds=30), timedelta(seconds=5)]


def test_x_forwarded_for_gives_the_client_ip_when_trusted(server, store):
    # (Untrusted, the peer address stands; uvicorn itself honours the header from
    # 127.0.0.1, where the test client runs, so only the trusted case is checked here.)
    thread, url = start_server(store, trust_forwarded_for=True)
    try:
        response = http.post(
            f"{url}/v1/identify",
            json={"userId": "v"},
            auth=(server.write_key, ""),
            headers={"x-forwarded-for": "203.0.113.7, 10.0.0.1"},
        )
        assert response.status_code == 200
    finally:
        thread.stop()
    assert stored(server)[0]["context"]["ip"] == "203.0.113.7"


# Dedup --------------------------------------------------------------------------------


def test_the_same_message_id_is_stored_once_per_workspace(server):
    msg = {**SINGLE["track"], "type": "track", "messageId": "dup-1"}
    assert post(server, "/v1/batch", {"batch": [msg, msg, {**msg, "event": "Other"}]}).json() == {
        "success": True
    }
    assert post(server, "/v1/track", msg).status_code == 200
    assert post(server, "/v1/t", {**msg, "event": "Retried"}).status_code == 200
    got = records(server)
    assert [r.message_id for r in got] == ["dup-1"]
    assert orjson.loads(got[0].payload)["event"] == "Order Completed"  # the first one stays

    other = server.repo.create_workspace("other-co")
    _, other_key = server.repo.create_source(other["id"], "Web", "javascript")
    assert post(server, "/v1/track", msg, key=other_key).status_code == 200
    assert post(server, "/v1/track", msg, key=other_key).status_code == 200
    got = records(server)
    assert [(r.workspace_id, r.message_id) for r in got] == [
        (server.workspace_id, "dup-1"),
        (other["id"], "dup-1"),
    ]


# CORS ---------------------------------------------------------------------------------


def test_cors_preflight_and_response_headers(server):
    for path in ("/v1/batch", "/v1/t", "/v1/pixel/track", "/v1/projects/x/settings"):
        preflight = http.options(
            f"{server.url}{path}",
            headers={
                "origin": "https://shop.example.com",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "content-type" in allowed and "authorization" in allowed
    bare = http.options(f"{server.url}/v1/track")
    assert bare.status_code == 204
    assert bare.headers["access-control-allow-origin"] == "*"
    assert "content-type" in bare.headers["access-control-allow-headers"].lower()

    with_origin = post(
        server, "/v1/track", SINGLE["track"], headers={"origin": "https://shop.example.com"}
    )
    assert with_origin.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "Origin" in with_origin.headers["vary"]
    assert post(server, "/v1/track", SINGLE["track"]).headers["access-control-allow-origin"] == "*"
    refused = post(
        server,
        "/v1/track",
        SINGLE["track"],
        key="nope",
        headers={"origin": "https://shop.example.com"},
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert len(records(server)) == 2


# Settings -----------------------------------------------------------------------------


def test_settings_document_points_analytics_js_at_this_server(server):
    response = http.get(f"{server.url}/v1/projects/{server.write_key}/settings")
    assert response.status_code == 200
    segment = response.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == server.write_key
    assert segment["apiHost"] == f"{server.url.removeprefix('http://')}/v1"
    assert segment["protocol"] == "http"
    custom = http.get(
        f"{server.url}/v1/projects/{server.write_key}/settings/",
        headers={"host": "cdp.example.com"},
    )
    assert custom.json()["integrations"]["Segment.io"]["apiHost"] == "cdp.example.com/v1"
    assert custom.headers["access-control-allow-origin"] == "*"

    unknown = http.get(f"{server.url}/v1/projects/unknown-key/settings")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "invalid_write_key"
    server.repo.update_source(server.workspace_id, server.source_id, enabled=False)
    disabled = http.get(f"{server.url}/v1/projects/{server.write_key}/settings")
    assert disabled.status_code == 404


def test_settings_use_the_configured_public_url(store):
    repo = Workspaces(store)
    workspace = repo.create_workspace("pub")
    _, key = repo.create_source(workspace["id"], "Web", "javascript")
    thread, url = start_server(store, public_url="https://cdp.example.com/")
    try:
        segment = http.get(f"{url}/v1/projects/{key}/settings").json()["integrations"]
    finally:
        thread.stop()
    assert segment["Segment.io"]["apiHost"] == "cdp.example.com/v1"
    assert segment["Segment.io"]["protocol"] == "https"


# Overload -----------------------------------------------------------------------------


def test_overload_answers_429_with_retry_after_and_stores_nothing(store):
    repo = Workspaces(store)
    workspace = repo.create_workspace("busy")
    _, key = repo.create_source(workspace["id"], "Web", "javascript")
    thread, url = start_server(store, max_pending_messages=1)
    try:
        batch = [{"type": "track", "userId": "u", "event": "E"} for _ in range(5)]
        response = http.post(f"{url}/v1/batch", json={"batch": batch}, auth=(key, ""))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "overloaded"
        assert backend_for(store).count() == 0
        # a request that fits goes through: the server is not broken, only full
        single = http.post(f"{url}/v1/track", json=batch[0], auth=(key, ""))
        assert single.status_code == 200
    finally:
        thread.stop()
    assert backend_for(store).count() == 1


# Health and metrics ------------------------------------------------------------------


def test_health_and_ready(server, monkeypatch):
    assert http.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = http.get(f"{server.url}/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "store": server.store.kind}

    def unreachable():
        raise ConnectionError("database is down")

    monkeypatch.setattr(server.store, "ping", unreachable)
    down = http.get(f"{server.url}/ready")
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"
    assert http.get(f"{server.url}/health").status_code == 200


def test_metrics_count_accepted_and_rejected_messages_and_latency(server):
    url, source = server.url, server.source_id
    latency_before = metric(
        url, "plait_http_request_duration_seconds_count", route="track", status="200"
    )
    bad_key_before = metric(url, "plait_messages_rejected_total", reason="invalid_write_key")
    batch = [
        {"type": "track", "userId": "u", "event": "E"},
        {"type": "track", "userId": "u", "event": "F"},
        {"type": "identify", "userId": "u"},
        {"type": "track", "userId": "u"},  # no event
        {"type": "group", "userId": "u"},  # no groupId
    ]
    assert post(server, "/v1/batch", {"batch": batch}).status_code == 200
    assert post(server, "/v1/track", SINGLE["track"]).status_code == 200
    assert post(server, "/v1/track", {"event": "E"}).status_code == 400
    assert post(server, "/v1/track", SINGLE["track"], key="bogus").status_code == 401

    assert metric(url, "plait_messages_accepted_total", source=source, type="track") == 3
    assert metric(url, "plait_messages_accepted_total", source=source, type="identify") == 1
    assert metric(url, "plait_messages_rejected_total", source=source, reason="invalid_field") == 2
    assert (
        metric(url, "plait_messages_rejected_total", source=source, reason="missing_identity") == 1
    )
    assert (
        metric(url, "plait_messages_rejected_total", reason="invalid_write_key")
        == bad_key_before + 1
    )
    assert (
        metric(url, "plait_http_request_duration_seconds_count", route="track", status="200")
        == latency_before + 1
    )
    assert (
        metric(url, "plait_http_request_duration_seconds_count", route="batch", status="200") >= 1
    )
    assert (
        metric(
            url,
            "plait_http_request_duration_seconds_bucket",
            route="track",
            status="200",
            le="+Inf",
        )
        == latency_before + 1
    )
    assert metric(url, "plait_log_last_offset") == backend_for(server.store).last_offset() > 0


def test_write_key_in_basic_auth_must_be_valid_base64(server):
    url = f"{server.url}/v1/track"
    garbage = http.post(url, json=SINGLE["track"], headers={"authorization": "Basic !!!"})
    assert garbage.status_code == 401
    # a broken header falls back to the body's writeKey
    fallback = http.post(
        url,
        json={**SINGLE["track"], "writeKey": server.write_key},
        headers={"authorization": "Basic %%%"},
    )
    assert fallback.status_code == 200
    token = base64.b64encode(f"{server.write_key}:".encode()).decode()
    explicit = http.post(url, json=SINGLE["track"], headers={"authorization": f"basic {token}"})
    assert explicit.status_code == 200
    assert len(records(server)) == 2


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/batch"])
def test_concurrent_requests_are_all_committed(server, path):
    import concurrent.futures

    def send(n: int) -> int:
        if path == "/v1/batch":
            body = {
                "batch": [
                    {"type": "identify", "userId": f"u{n}", "messageId": f"c{n}-{i}"}
                    for i in range(10)
                ]
            }
        else:
            body = {"userId": f"u{n}", "messageId": f"c{n}"}
        return post(server, path, body).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, range(40)))
    assert statuses == [200] * 40
    assert len(records(server)) == (400 if path == "/v1/batch" else 40)
