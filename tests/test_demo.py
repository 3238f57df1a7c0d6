"""plait demo: the journey generator and the sender, against a real server."""

import asyncio
import copy
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from plait import demo
from plait.cli import app
from plait.collect import querystring
from plait.log import backend_for
from plait.settings import get_settings
from plait.spec import MAX_BATCH_BYTES, validate
from plait.spec.timestamps import parse_timestamp

END = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def cast():
    return demo.Cast(300, seed=7, days=30, end=END)


@pytest.fixture(scope="module")
def messages(cast):
    return list(cast.messages())


def with_derived(messages):
    """The messages and what the server derives from their ajs_ URLs."""
    out = []
    for msg in messages:
        out.append(msg)
        if querystring.applies_to(msg):
            out += querystring.derive(msg)
    return out


def test_the_generator_is_deterministic_for_a_seed(messages):
    again = list(demo.generate(300, seed=7, days=30, end=END))
    assert again == messages
    other = list(demo.generate(300, seed=8, days=30, end=END))
    assert {m["messageId"] for m in other}.isdisjoint(m["messageId"] for m in messages)
    # The end moves the timestamps, not the people or their messageIds.
    later = list(demo.generate(20, seed=7, days=30, end=END + timedelta(days=1)))
    first = list(demo.generate(20, seed=7, days=30, end=END))
    assert {m["messageId"] for m in first} <= {m["messageId"] for m in later}
    assert list(demo.generate(0)) == []


def test_every_message_is_valid_unique_and_in_time_order(messages):
    for msg in messages:
        validate(copy.deepcopy(msg))
    for msg in with_derived(messages):
        validate(copy.deepcopy(msg))
    stamps = [parse_timestamp(m["timestamp"]) for m in messages]
    assert stamps == sorted(stamps)
    assert END - timedelta(days=30) <= stamps[0] and stamps[-1] <= END
    assert all(m["originalTimestamp"] == m["timestamp"] for m in messages)
    assert len({m["messageId"] for m in messages}) == len(messages)
    assert max(len(orjson.dumps(m)) for m in messages) < 8_000


def test_journeys_span_every_channel(messages):
    kinds = Counter((m["type"], m.get("event")) for m in with_derived(messages))
    for kind in [("page", None), ("identify", None), ("group", None), ("alias", None),
                 ("track", "Product Viewed"), ("track", "Product Added"),
                 ("track", "Signed Up"), ("track", "Signed In"), ("track", "Order Completed"),
                 ("track", "Email Clicked"), ("track", "Call Completed")]:  # fmt: skip
        assert kinds[kind] > 0, kind
    browser = [m for m in messages if m["context"]["library"]["name"] == "analytics.js"]
    assert len(browser) > len(messages) / 2
    for msg in browser:
        context = msg["context"]
        assert context["userAgent"].startswith("Mozilla/5.0")
        assert set(context["page"]) == {"url", "path", "title", "referrer", "search"}
        assert not querystring.applies_to(msg)  # analytics.js handles ajs_ itself
    clicks = [m for m in messages if querystring.applies_to(m)]
    assert clicks and all("ajs_event=Email%20Clicked" in m["context"]["page"]["url"]
                          for m in clicks)  # fmt: skip
    orders = [m for m in messages if m.get("event") == "Order Completed"]
    for order in orders:
        props = order["properties"]
        assert props["order_id"] and props["currency"] == "USD" and props["products"]
        assert props["revenue"] == pytest.approx(props["subtotal"] - props["discount"])
    assert any(m["anonymousId"].startswith("pos-") for m in orders)
    # Several devices per person: desktops and phones.
    agents = {m["context"]["userAgent"] for m in browser}
    assert any("iPhone" in a or "Android" in a for a in agents)
    assert any("Windows" in a or "Macintosh" in a for a in agents)


def test_journeys_link_each_persons_anonymous_ids_to_their_user_id(cast, messages):
    linked = defaultdict(set)  # userId -> anonymousIds seen with it in one message
    seen_anonymous = set()
    for msg in with_derived(messages):
        if msg.get("anonymousId"):
            seen_anonymous.add(msg["anonymousId"])
            if msg.get("userId"):
                linked[msg["userId"]].add(msg["anonymousId"])
        if msg["type"] == "alias":
            linked[msg["userId"]].add(msg["previousId"])
    by_email = {p.email: p.user_id for p in cast.people()}
    by_phone = {p.phone: p.user_id for p in cast.people()}
    assert len(by_email) == len(by_phone) == cast.count  # unique within a seed

    known = multi_device = 0
    for person in cast.people():
        devices = [a for a in person.anonymous_ids if a in seen_anonymous]
        if person.user_id not in linked:
            assert len(devices) <= 1  # never identified: nothing could link a second device
            continue
        known += 1
        multi_device += len(devices) > 1
        assert set(devices) <= linked[person.user_id], person
    assert known > cast.count / 3 and multi_device > 10
    # Email clicks: the derived identify links the click to the person.
    for msg in messages:
        if querystring.applies_to(msg):
            identify = querystring.derive(msg)[0]
            assert identify["type"] == "identify" and identify["userId"] in linked
    # Stores and the call center know people by email and phone only.
    pos = [m for m in messages if m["anonymousId"].startswith("pos-")]
    calls = [m for m in messages if m["anonymousId"].startswith("call-")]
    assert pos and calls
    for msg in pos:
        assert "userId" not in msg and msg["context"]["traits"]["email"] in by_email
    for msg in calls:
        assert msg["event"] == "Call Completed" and "userId" not in msg
        assert msg["context"]["traits"]["phone"] in by_phone
    groups = [m for m in messages if m["type"] == "group"]
    assert len({g["groupId"] for g in groups}) < len(groups)  # accounts have several people


def test_batches_respect_the_count_and_the_body_size():
    big = [{"type": "track", "userId": "u", "event": "E", "properties": {"x": "y" * 20_000}}] * 60
    sized = list(demo.batches(big, size=100))
    assert sum(len(b) for b in sized) == 60
    assert all(len(demo._body(b)) < MAX_BATCH_BYTES for b in sized)
    assert [len(b) for b in demo.batches(big[:10], size=4)] == [4, 4, 2]


def test_token_bucket_paces_from_an_empty_bucket():
    now = [100.0]
    bucket = demo.TokenBucket(400, clock=lambda: now[0])
    assert bucket.delay(100) == pytest.approx(0.25)
    assert bucket.delay(100) == pytest.approx(0.5)
    now[0] += 0.6  # a little late (building the batch): that batch goes at once
    assert bucket.delay(100) == pytest.approx(0.15)
    now[0] += 10  # a sender that fell far behind makes up one batch, no more
    assert bucket.delay(100) == pytest.approx(0.0)
    assert bucket.delay(100) == pytest.approx(0.25)
    assert demo.TokenBucket(None).delay(10**6) == 0


def send(messages, server, **options):
    return asyncio.run(demo.send(messages, server.url, server.write_key, **options))


def test_sending_stores_exactly_the_expected_messages(server):
    messages = list(demo.generate(40, seed=3, days=10))
    stats = send(messages, server, batch_size=37, concurrency=3)
    assert (stats.sent, stats.accepted, stats.rejected, stats.failed) == (len(messages),) * 2 + (
        0, 0,
    )  # fmt: skip
    assert stats.batches == -(-len(messages) // 37)
    log = backend_for(server.store)
    expected = with_derived(messages)
    assert log.count(server.workspace_id) == len(expected)
    stored = {r.message_id: orjson.loads(r.payload) for r in log.iter_all()}
    assert set(stored) == {m["messageId"] for m in expected}
    # The timestamps survive the server's clock-skew correction (sentAt is the send time).
    for msg in messages[:50]:
        corrected = parse_timestamp(stored[msg["messageId"]]["timestamp"])
        assert abs(corrected - parse_timestamp(msg["timestamp"])) < timedelta(seconds=30)
    # Re-sending the same seed is deduplicated by the log.
    again = send(messages, server, batch_size=100)
    assert again.accepted == len(messages)
    assert log.count(server.workspace_id) == len(expected)


def test_rate_limiting_holds(server):
    messages = list(demo.generate(30, seed=5))[:200]
    assert len(messages) == 200
    started = time.monotonic()
    stats = send(messages, server, rate=400, batch_size=50, concurrency=4)
    elapsed = time.monotonic() - started
    assert stats.accepted == 200
    assert elapsed >= 0.45
    assert stats.rate <= 400 * 1.05


def test_rejected_messages_are_counted(server):
    good = {"type": "track", "userId": "u1", "event": "Ok"}
    bad = {"type": "track", "userId": "u1"}  # no event
    stats = send([good, bad, good, bad], server, batch_size=4)
    assert (stats.accepted, stats.rejected) == (2, 2)
    stats = send([bad, bad], server)  # a batch with nothing valid is a 400
    assert (stats.accepted, stats.rejected) == (0, 2)
    assert stats.reasons == {"invalid_field": 2}
    stats = send([good] * 3, server, batch_size=3000)  # capped at the server's 2,500
    assert stats.accepted == 3


def test_a_wrong_write_key_stops_the_run(server):
    with pytest.raises(demo.SendError, match="401"):
        asyncio.run(demo.send([{"type": "track", "userId": "u", "event": "E"}] * 5, server.url,
                              "not-a-key"))  # fmt: skip


def test_retries_on_429_and_5xx_honouring_retry_after():
    answers = [
        httpx.Response(429, headers={"retry-after": "0.3"}, json={"success": False}),
        httpx.Response(503, json={"success": False, "error": {"code": "log_unavailable"}}),
        httpx.Response(200, json={"success": True}),
    ]
    times = []

    def handler(request):
        times.append(time.monotonic())
        assert request.headers["authorization"].startswith("Basic ")
        assert "sentAt" in orjson.loads(request.content)
        return answers.pop(0)

    stats = asyncio.run(demo.send([{"type": "track", "userId": "u", "event": "E"}] * 3,
                                  "http://plait.test", "key", backoff=0.01,
                                  transport=httpx.MockTransport(handler)))  # fmt: skip
    assert (stats.accepted, stats.retries, stats.failed) == (3, 2, 0)
    assert times[1] - times[0] >= 0.29  # Retry-After

    def unavailable(request):
        return httpx.Response(503, headers={"retry-after": "0"})

    stats = demo.SendStats()
    with pytest.raises(demo.SendError, match="gave up"):
        asyncio.run(demo.send([{"type": "track", "userId": "u", "event": "E"}] * 3,
                              "http://plait.test", "key", max_retries=2, stats=stats,
                              transport=httpx.MockTransport(unavailable)))  # fmt: skip
    assert (stats.failed, stats.retries) == (3, 2)


@pytest.fixture
def plait(store_url, monkeypatch):
    monkeypatch.setenv("PLAIT_DATABASE_URL", store_url)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_sends_with_the_write_key_from_the_environment(plait, server, monkeypatch):
    monkeypatch.setenv("PLAIT_WRITE_KEY", server.write_key)
    result = plait.invoke(app, ["demo", "--url", server.url, "--people", "8", "--seed", "4",
                                "--rate", "5000", "--concurrency", "2", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output and "events/s" in result.output
    assert backend_for(server.store).count(server.workspace_id) > 8


def test_cli_dry_run_writes_jsonl(plait, tmp_path):
    out = tmp_path / "demo.jsonl"
    result = plait.invoke(app, ["demo", "--people", "6", "--dry-run", "--output", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert lines and f"{len(lines):,} messages" in result.output
    for line in lines:
        validate(orjson.loads(line))
    stdout = plait.invoke(app, ["demo", "--people", "2", "--dry-run"]).stdout
    assert orjson.loads(stdout.splitlines()[0])["type"] == "page"
    result = plait.invoke(app, ["demo", "--people", "2"], env={"PLAIT_WRITE_KEY": ""})
    assert result.exit_code == 1 and "write key" in result.output
