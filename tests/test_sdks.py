"""Real SDKs end to end: Segment's and RudderStack's Python libraries from PyPI and
@segment/analytics-node from npm send the six calls to a running Plait, and every message
must land in the log exactly once, as the SDK built it.

What the SDKs do on the wire (read from their sources, asserted below):

- segment-analytics-python: POST {host}/v1/batch, Basic auth (write key as username) and
  ``writeKey`` in the body, gzip only with ``gzip=True``; messageId is a uuid4;
  ``context.library = {"name": "analytics-python", "version": ...}``. A refusal's
  ``code``/``message`` are read from the top level of the JSON body.
- rudder-sdk-python: POST {host}/v1/batch, Basic auth, always gzip by default; identify's
  traits go to ``context.traits`` (none at the top level), ``channel: "server"``,
  ``integrations: {"All": true}``, and it names itself ``analytics-python`` too. It counts
  only a 200 as success and reads ``code`` from the top level of a refusal's body (without
  it a 4xx turned into a KeyError that it retried like a network error).
- @segment/analytics-node: POST {host}/v1/batch, Basic auth and ``writeKey`` in the body, no
  gzip; messageId ``node-next-<ms>-<uuid>``; ``_metadata`` at the top level of each event.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import rudderstack.analytics.request as rudder_request
import segment.analytics.consumer as segment_consumer
import segment.analytics.request as segment_request
from conftest import require
from rudderstack.analytics import Client as RudderClient
from rudderstack.analytics.version import VERSION as RUDDER_VERSION
from segment.analytics import Client as SegmentClient
from segment.analytics.version import VERSION as SEGMENT_VERSION

from plait.log import backend_for

JS_DIR = Path(__file__).parent / "js"

USER, ANON, GROUP = "user-1", "anon-1", "org-1"
TRAITS = {"email": "ada@example.com", "plan": "pro", "seats": 3}
ORDER = {"total": 42.5, "currency": "EUR", "items": [{"sku": "A-1", "qty": 2}]}
PAGE_PROPS = {"path": "/pricing", "referrer": "https://example.org/"}
SCREEN_PROPS = {"variant": "b"}
GROUP_TRAITS = {"name": "Acme", "employees": 12}

# What each call must arrive with (beyond messageId and context.library).
EXPECTED: dict[str, dict[str, Any]] = {
    "identify": {"userId": USER, "traits": TRAITS},
    "track": {"userId": USER, "event": "Order Completed", "properties": ORDER},
    "page": {"anonymousId": ANON, "name": "Pricing", "properties": PAGE_PROPS},
    "screen": {"userId": USER, "name": "Home", "properties": SCREEN_PROPS},
    "group": {"userId": USER, "groupId": GROUP, "traits": GROUP_TRAITS},
    "alias": {"userId": USER, "previousId": ANON},
}


def send_six(client) -> list[dict]:
    """The six calls through a Python SDK client; returns the messages as the SDK built them
    (both Python SDKs return ``(queued, message)``)."""
    results = [
        client.identify(USER, TRAITS),
        client.track(USER, "Order Completed", ORDER),
        client.page(anonymous_id=ANON, name="Pricing", properties=PAGE_PROPS),
        client.screen(USER, name="Home", properties=SCREEN_PROPS),
        client.group(USER, GROUP, GROUP_TRAITS),
        client.alias(ANON, USER),
    ]
    assert all(queued for queued, _ in results)
    return [msg for _, msg in results]


def log_payloads(server) -> dict[str, dict]:
    """The log's messages by messageId, after checking none is there twice."""
    records = list(backend_for(server.store).iter_all())
    counts = Counter(r.message_id for r in records)
    assert not [m for m, n in counts.items() if n > 1], f"duplicated in the log: {counts}"
    for r in records:
        assert r.source_id == server.source_id and r.workspace_id == server.workspace_id
    return {r.message_id: {"_type": r.type, **json.loads(r.payload)} for r in records}


def assert_arrived(
    server, sent: list[dict], library: dict, expected: dict[str, dict] = EXPECTED
) -> dict[str, dict]:
    """Every SDK message is in the log exactly once, with the SDK's messageId, the right
    fields and the SDK's context.library; nothing else is."""
    assert [m["type"] for m in sent] == list(expected)
    logged = log_payloads(server)
    assert set(logged) == {m["messageId"] for m in sent}
    for msg in sent:
        got = logged[msg["messageId"]]
        assert got["_type"] == got["type"] == msg["type"]
        assert got["messageId"] == msg["messageId"]
        for name, value in expected[msg["type"]].items():
            assert got.get(name) == value, (msg["type"], name, got.get(name))
        for name in ("userId", "anonymousId", "event", "name", "groupId", "previousId"):
            assert got.get(name) == msg.get(name), (msg["type"], name)
        assert got["context"]["library"] == library
        assert got["sourceId"] == server.source_id and "receivedAt" in got and "timestamp" in got
        assert "writeKey" not in got
    return logged


class Recorder:
    """Wraps an SDK's requests session to keep each request as it went on the wire."""

    def __init__(self, monkeypatch, module):
        self.requests: list = []
        self.statuses: list[int] = []
        original = module._session.post

        def post(url, **kwargs):
            response = original(url, **kwargs)
            self.requests.append(response.request)
            self.statuses.append(response.status_code)
            return response

        monkeypatch.setattr(module._session, "post", post)

    def bodies(self) -> list[dict]:
        out = []
        for req in self.requests:
            body = req.body if isinstance(req.body, bytes) else req.body.encode()
            if req.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            out.append(json.loads(body))
        return out


def basic(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


# segment-analytics-python -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "batched-gzip"])
def test_segment_python_sdk(server, monkeypatch, mode):
    wire = Recorder(monkeypatch, segment_request)
    errors: list = []
    if mode == "sync":  # one blocking request per call
        client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    else:  # the default consumer thread, batching, with gzip on
        client = SegmentClient(
            server.write_key,
            host=server.url,
            gzip=True,
            upload_size=100,
            upload_interval=0.05,
            max_retries=2,
            on_error=lambda e, batch: errors.append(e),
        )
    sent = send_six(client)
    if mode != "sync":
        client.flush()
        client.join()
    assert errors == []
    assert_arrived(server, sent, {"name": "analytics-python", "version": SEGMENT_VERSION})

    assert set(wire.statuses) == {200}
    assert len(wire.requests) == (6 if mode == "sync" else 1)
    for req in wire.requests:
        assert req.url == f"{server.url}/v1/batch"
        assert req.headers["Authorization"] == basic(server.write_key)
        assert (req.headers.get("Content-Encoding") == "gzip") == (mode != "sync")
    bodies = wire.bodies()
    assert all(b["writeKey"] == server.write_key and "sentAt" in b for b in bodies)
    assert sum(len(b["batch"]) for b in bodies) == 6


def test_segment_python_sdk_resend_is_not_duplicated(server):
    """A retried batch (same messageIds) is acknowledged and stored once."""
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    sent = send_six(client)
    for msg in sent:
        segment_request.post(server.write_key, server.url, batch=[msg])
    assert_arrived(server, sent, {"name": "analytics-python", "version": SEGMENT_VERSION})


def test_segment_python_sdk_reads_refusals(server, monkeypatch):
    """A bad write key is a 401 the SDK understands (code and message at the top level)
    and, being a non-retryable 4xx, is not retried."""
    client = SegmentClient("not-a-key", host=server.url, sync_mode=True)
    with pytest.raises(segment_request.APIError) as caught:
        client.track(USER, "Order Completed")
    assert (caught.value.status, caught.value.code) == (401, "invalid_write_key")
    assert caught.value.message

    errors: list = []
    wire_calls: list[int] = []

    def counting_post(*args, **kwargs):
        wire_calls.append(1)
        return segment_request.post(*args, **kwargs)

    monkeypatch.setattr(segment_consumer, "post", counting_post)
    client = SegmentClient(
        "not-a-key",
        host=server.url,
        upload_interval=0.05,
        max_retries=3,
        on_error=lambda e, batch: errors.append(e),
    )
    client.track(USER, "Order Completed")
    client.flush()
    client.join()
    assert len(wire_calls) == 1 and len(errors) == 1
    assert (errors[0].status, errors[0].code) == (401, "invalid_write_key")
    assert list(backend_for(server.store).iter_all()) == []


# rudder-sdk-python ----------------------------------------------------------------------

RUDDER_EXPECTED = {
    **EXPECTED,
    # rudder-sdk-python puts identify's traits in context.traits and none at the top level
    "identify": {"userId": USER, "traits": None},
}


@pytest.mark.parametrize("sync_mode", [False, True], ids=["batched", "sync"])
def test_rudder_python_sdk(server, monkeypatch, sync_mode):
    wire = Recorder(monkeypatch, rudder_request)
    errors: list = []
    client = RudderClient(
        server.write_key,
        host=server.url,
        sync_mode=sync_mode,
        upload_interval=0.05,
        max_retries=2,
        on_error=lambda e, batch: errors.append(e),
    )
    sent = send_six(client)
    if not sync_mode:
        client.flush()
        client.join()
    assert errors == []
    logged = assert_arrived(
        server, sent, {"name": "analytics-python", "version": RUDDER_VERSION}, RUDDER_EXPECTED
    )
    by_type = {m["type"]: m for m in logged.values()}
    assert by_type["identify"]["context"]["traits"] == TRAITS
    assert all(m["channel"] == "server" for m in logged.values())
    assert all(m["integrations"] == {"All": True} for m in logged.values())

    assert set(wire.statuses) == {200}
    assert len(wire.requests) == (6 if sync_mode else 1)
    for req in wire.requests:
        assert req.url == f"{server.url}/v1/batch"
        assert req.headers["Authorization"] == basic(server.write_key)
        assert req.headers["Content-Encoding"] == "gzip"  # always, by default
    bodies = wire.bodies()
    assert all("writeKey" not in b and "sentAt" in b for b in bodies)
    assert sum(len(b["batch"]) for b in bodies) == 6


def test_rudder_python_sdk_reads_refusals(server, monkeypatch):
    """A bad write key must reach the SDK as an APIError with a 4xx status, which it gives
    up on at once; a body without a top-level ``code`` made it raise KeyError and retry."""
    with pytest.raises(rudder_request.APIError) as caught:
        RudderClient("not-a-key", host=server.url, sync_mode=True).track(USER, "Order Completed")
    assert (caught.value.status, caught.value.code) == (401, "invalid_write_key")

    wire = Recorder(monkeypatch, rudder_request)
    errors: list = []
    client = RudderClient(
        "not-a-key",
        host=server.url,
        upload_interval=0.05,
        max_retries=3,
        on_error=lambda e, batch: errors.append(e),
    )
    client.track(USER, "Order Completed")
    client.flush()
    client.join()
    assert wire.statuses == [401]  # not retried
    assert len(errors) == 1 and isinstance(errors[0], rudder_request.APIError)
    assert list(backend_for(server.store).iter_all()) == []


# @segment/analytics-node ----------------------------------------------------------------


def run_node_sdk(host: str, write_key: str) -> tuple[int, dict]:
    node = shutil.which("node")
    require(node is not None, "node is not installed")
    require(
        (JS_DIR / "node_modules" / "@segment" / "analytics-node").is_dir(),
        "tests/js/node_modules is missing: run `make install-test` (npm ci in tests/js)",
    )
    proc = subprocess.run(
        [node, str(JS_DIR / "send_events.mjs"), host, write_key],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from node (exit {proc.returncode}): {proc.stderr}"
    return proc.returncode, json.loads(lines[-1])


@pytest.mark.node
def test_segment_node_sdk(server):
    code, report = run_node_sdk(server.url, server.write_key)
    assert code == 0 and report["errors"] == [], report
    version = json.loads(
        (JS_DIR / "node_modules" / "@segment" / "analytics-node" / "package.json").read_text()
    )["version"]
    library = {"name": "@segment/analytics-node", "version": version}
    sent = sorted(report["events"], key=lambda e: list(EXPECTED).index(e["type"]))
    logged = assert_arrived(server, sent, library)
    assert all(m["messageId"].startswith("node-next-") for m in logged.values())

    assert [r["status"] for r in report["responses"]] == [200]
    (request,) = report["requests"]
    assert request["url"] == f"{server.url}/v1/batch"
    assert request["authorization"] == basic(server.write_key)
    assert request["contentEncoding"] is None


@pytest.mark.node
def test_segment_node_sdk_bad_write_key_is_refused(server):
    code, report = run_node_sdk(server.url, "not-a-key")
    assert code == 1
    assert [r["status"] for r in report["responses"]] == [401]  # 4xx: no retry
    assert len(report["errors"]) == 6
    assert list(backend_for(server.store).iter_all()) == []
