"""prepare()'s fast path (plait.collect.fastpath) against the general path, validate() and
enrich(): for any batch, valid or not, the same rows and the same rejections."""

from __future__ import annotations

import hashlib
import random
import re
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.collect.fastpath import FastPath
from plait.collect.ingest import Prepared, prepare, prepare_message, received_us
from plait.spec import MAX_MESSAGE_BYTES, MESSAGE_TYPES, Enrichment
from plait.spec.timestamps import ClockSkew, format_timestamp, parse_timestamp

RECEIVED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
# Random ids: api- for a missing messageId, ajs- for calls derived from such a page.
GENERATED_ID = re.compile(r"^(api|ajs-identify|ajs-track)-[0-9a-f]{32}$")


def reference(messages: list, msg_type: str | None, env: Enrichment) -> Prepared:
    """prepare() without its fast path: every message through validate() and enrich()."""
    out = Prepared()
    received = received_us(env)
    for index, msg in enumerate(messages):
        prepare_message(out, index, msg, msg_type, env, received)
    return out


def comparable(prepared: Prepared) -> tuple:
    """Rows with payloads parsed and random ids replaced by their kind."""
    rows = []
    for workspace_id, source_id, message_id, msg_type, received, payload in prepared.rows:
        data = orjson.loads(payload)
        assert data["messageId"] == message_id
        if match := GENERATED_ID.match(message_id):
            message_id = data["messageId"] = match.group(1)
        rows.append((workspace_id, source_id, message_id, msg_type, received, data))
    return rows, prepared.rejected, dict(prepared.types)


def enrichment(sent_at, context, integrations, ip) -> Enrichment:
    return Enrichment(
        received_at=RECEIVED,
        workspace_id="ws_1",
        source_id="src_1",
        ip=ip,
        sent_at=sent_at,
        batch_context=context,
        batch_integrations=integrations,
    )


def assert_same(body: bytes, msg_type: str | None, batch: dict) -> Prepared:
    """prepare() and reference() on the messages of ``body``, each parsing it afresh."""
    fast = prepare(orjson.loads(body)["batch"], msg_type, enrichment(**batch))
    general = reference(orjson.loads(body)["batch"], msg_type, enrichment(**batch))
    assert comparable(fast) == comparable(general)
    return fast


# Raw JSON, written by hand so that a body can hold what orjson.dumps never writes:
# duplicate keys (the last one wins), \u escapes, spaces.


def to_json(value, rng: random.Random) -> str:
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if rng.random() < 0.1:  # a duplicate key, overridden by the one after it
                items.append(f"{to_json(key, rng)}:{to_json(rng.choice([None, 1, 'x']), rng)}")
            items.append(f"{to_json(key, rng)}{rng.choice([':', ' : '])}{to_json(item, rng)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item, rng) for item in value) + "]"
    if isinstance(value, str) and rng.random() < 0.2:
        return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in value) + '"'
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # past 64 bits too, which orjson reads as a float
    return orjson.dumps(value).decode()


def nested(depth: int):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def choose(*values):
    return st.sampled_from(values)


instants = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
    timezones=st.just(UTC),
)  # fmt: skip
recent = st.datetimes(
    min_value=datetime(2024, 4, 1), max_value=datetime(2024, 6, 1), timezones=st.just(UTC)
)
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.one_of(
    recent.map(format_timestamp),  # as analytics.js writes them, most of the time
    recent.map(format_timestamp),
    instants.map(format_timestamp),
    recent.map(datetime.isoformat),  # as analytics-python writes them
    st.tuples(recent, offsets).map(lambda p: p[0].astimezone(p[1]).isoformat()),
    recent.map(lambda d: d.replace(tzinfo=None).isoformat()),
    choose("yesterday", "", "2024-05-01", "2024-05-01 12:00:00.123Z", "2024-05-01T12:00:00.123z",
           "2024-05-01T24:00:00.000Z", "2024-02-30T00:00:00.000Z", "0001-01-01T00:00:00.000Z",
           "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59.999Z", "9999-12-31T23:00:00-02:00",
           "2024-05-01T12:00:00.1234567Z", "\uff12024-05-01T12:00:00.000Z", "x" * 70),
    st.integers(0, 2_000_000_000),
    st.none(),
)  # fmt: skip
identifiers = st.one_of(
    choose("u1", "user-000001", "00000000-0000-0000-0000-000000000001", " padded ", "é"),
    choose("", "  ", "\u3000", "\t", "a" * 101),
    st.text(max_size=4),
    st.integers(-2, 2),
    choose(1.5, True, False, ["u"], {"id": 1}),
    st.none(),
)
message_ids = st.one_of(
    choose("m-1", "ajs-next-5e2b", "x" * 100, "x" * 101, "", " ", "a\x00b", 12),
    st.text(max_size=6),
    st.none(),
)
urls = choose("https://x.test/?ajs_uid=u9&ajs_event=Clicked&ajs_prop_plan=pro&ajs_trait_n=N",
              "https://x.test/?ajs_aid=a9&ajs_event=%20", "https://x.test/p", "http://[::1/?ajs_uid=u",
              5, None)  # fmt: skip
contexts = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "ip": choose("9.9.9.9", None, 5),
            "library": st.fixed_dictionaries(
                {"name": choose("analytics.js", "analytics-next", "analytics-python", 5)}
            ),
            "page": st.fixed_dictionaries({}, optional={"url": urls, "path": choose("/p")}),
            "userAgent": choose("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"),
            "traits": st.dictionaries(choose("plan", "ip"), st.text(max_size=3), max_size=2),
        },
    ),
    st.none(),
    choose("web", [], 5),
)
objects = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "url": urls,
            "price": st.floats(allow_nan=False, allow_infinity=False),
            "n": st.integers(),
            "s": st.text(max_size=8),
            "deep": choose(nested(3), nested(300)),  # orjson writes at most 254 levels
        },
    ),
    st.none(),
    choose("x", [1], 0),
)
fields = {
    "type": st.one_of(st.sampled_from(sorted(MESSAGE_TYPES)), choose("Track", "", 5, None)),
    "userId": identifiers,
    "anonymousId": identifiers,
    "event": st.one_of(choose("Signed Up", "", "  "), identifiers),
    "name": st.one_of(choose("Home"), identifiers),
    "groupId": identifiers,
    "previousId": identifiers,
    "messageId": message_ids,
    "timestamp": timestamps,
    "originalTimestamp": timestamps,
    "sentAt": timestamps,
    "context": contexts,
    "integrations": st.one_of(st.dictionaries(choose("All", "Mixpanel"), st.booleans()), objects),
    "properties": objects,
    "traits": objects,
    "writeKey": st.one_of(choose("wk_1", "w" * 65, 5), st.none()),
    "receivedAt": choose("2020-01-01T00:00:00.000Z", None),
    "sourceId": choose("src_other", None),
    "workspaceId": choose("ws_other"),
    "channel": choose("server", 1),
    "_metadata": st.fixed_dictionaries({"bundled": st.just(["Segment.io"])}),
}
# Mostly messages the fast path takes, so that it is the one tested; the rest anything.
valid_timestamps = st.one_of(
    recent.map(format_timestamp), recent.map(datetime.isoformat), instants.map(format_timestamp)
)
plain_messages = st.builds(
    lambda msg_type, ids, extra: {"type": msg_type, **ids, "event": "E", "groupId": "g",
                                  "previousId": "p", **extra},
    st.sampled_from(sorted(MESSAGE_TYPES)),
    choose({"userId": "u1"}, {"anonymousId": "a1"}, {"userId": "u1", "anonymousId": "a1"}),
    st.fixed_dictionaries({}, optional={
        "messageId": choose("m-1", "ajs-next-5e2b"), "timestamp": valid_timestamps,
        "originalTimestamp": valid_timestamps, "sentAt": st.one_of(valid_timestamps, st.none()),
        "context": contexts.filter(lambda c: isinstance(c, dict)), "writeKey": choose("wk_1"),
        "properties": objects.filter(lambda o: isinstance(o, dict)), "name": choose("Home"),
        "integrations": st.dictionaries(choose("All", "Mixpanel"), st.booleans()),
    }),
)  # fmt: skip
any_messages = st.fixed_dictionaries({}, optional=fields)
messages = st.one_of(plain_messages, plain_messages, any_messages, choose("not an object", 5))
batches = st.fixed_dictionaries(
    {
        "sent_at": st.one_of(st.none(), recent, instants),
        "context": st.one_of(st.none(), contexts.filter(lambda c: isinstance(c, dict))),
        "integrations": st.one_of(st.none(), st.dictionaries(choose("All"), st.booleans())),
        "ip": choose("203.0.113.9", None, ""),
    }
)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    batch=batches,
    batch_messages=st.lists(messages, max_size=6),
    rng=st.randoms(use_true_random=False),
)
def test_a_batch_gives_the_general_paths_rows_and_rejections(batch, batch_messages, rng):
    body = ('{"batch":' + to_json(batch_messages, rng) + "}").encode()
    assert_same(body, None, batch)


@SETTINGS
@given(
    batch=batches,
    msg=messages,
    msg_type=st.sampled_from(sorted(MESSAGE_TYPES)),
    rng=st.randoms(use_true_random=False),
)
def test_a_single_message_endpoint_gives_the_general_paths_row_or_rejection(
    batch, msg, msg_type, rng
):
    body = ('{"batch":[' + to_json(msg, rng) + "]}").encode()
    assert_same(body, msg_type, batch)


@pytest.mark.parametrize("delta", [-1, 0, 1])
@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"context": None, "writeKey": "wk_1"},
        {"originalTimestamp": "2024-05-01T12:00:00.000Z", "timestamp": "t" * 64},
        {"sentAt": "2024-05-01T12:00:01+00:00", "messageId": "m-1"},
    ],
)
def test_the_size_limit_is_the_message_as_sent_to_the_byte(shape, delta):
    msg = {"type": "track", "userId": "u", "event": "E", **shape, "properties": {"s": ""}}
    filler = MAX_MESSAGE_BYTES + delta - len(orjson.dumps(msg))
    msg["properties"]["s"] = "x" * filler
    assert len(orjson.dumps(msg)) == MAX_MESSAGE_BYTES + delta
    body = orjson.dumps({"batch": [msg]})
    batch = {"sent_at": RECEIVED, "context": None, "integrations": None, "ip": "203.0.113.9"}
    fast = assert_same(body, None, batch)
    assert len(fast.rows) == (delta <= 0)


def test_plain_messages_take_the_fast_path():
    """The fast path is what makes ingestion cheap: a change that makes it decline the
    messages SDKs send would pass every equivalence test and quietly lose that."""
    env = enrichment(parse_timestamp("2024-05-06T07:08:00.000Z"), None, None, "203.0.113.9")
    fast = FastPath(env, received_us(env))
    sent = [  # analytics-python, analytics.js (batched) and analytics-node shapes
        {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m-1",
         "timestamp": "2024-05-06T07:07:59.123456+00:00", "properties": {"total": 9.5},
         "context": {"library": {"name": "analytics-python", "version": "2.3.2"}}},
        {"type": "page", "anonymousId": "a1", "messageId": "ajs-next-1", "writeKey": "wk_1",
         "timestamp": "2024-05-06T07:07:59.123Z", "properties": {"url": "https://x.test/"},
         "context": {"page": {"url": "https://x.test/"}, "library": {"name": "analytics.js"}},
         "integrations": {}, "_metadata": {"bundled": ["Segment.io"]}},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "m-2",
         "timestamp": "2024-05-06T07:07:59.123Z", "context": {"library": {"name": "node"}}},
    ]  # fmt: skip
    for msg in sent:
        assert fast.row(msg, None) is not None, msg


# ClockSkew: enrich()'s correction, on canonical timestamps only -----------------------


@given(original=instants, sent=instants, received=instants)
def test_clock_skew_corrects_as_enrich_does(original, sent, received):
    text = format_timestamp(original)
    try:
        expected = format_timestamp(received - (sent - parse_timestamp(text)))
    except OverflowError:
        expected = None  # enrich() rejects the message; the fast path leaves it to it
    assert ClockSkew(received, sent).correct(text) == expected


@given(text=st.one_of(timestamps.filter(lambda t: isinstance(t, str)), st.text(max_size=30)))
def test_clock_skew_takes_only_format_timestamps_own_form(text):
    try:
        canonical = format_timestamp(parse_timestamp(text)) == text
    except ValueError:
        canonical = False
    corrected = ClockSkew(RECEIVED, RECEIVED).correct(text)  # no skew: as sent
    assert corrected == (text if canonical else None)


def test_a_guard_gives_both_paths_the_same_rows_and_never_touches_shared_objects():
    """The fast path applies the guard (PII policy) before serializing; the general path
    after. Same rows either way, and a batch context shared by the messages is governed
    once per message, never twice through a shared object."""
    from plait.govern.pii import compile_policy

    policy = compile_policy({"actions": {"email": "hash", "ip": "mask"}})

    def guard(msg):
        policy.apply(msg, None, "ws_1")
        return "suppressed" if msg.get("userId") == "u-9" else None

    context = {"traits": {"email": "Jo@X.com"}, "library": {"name": "x"}}
    body = orjson.dumps({"batch": [
        {"type": "track", "userId": "u-1", "event": "A", "properties": {"mail": "a@b.io"}},
        {"type": "identify", "userId": "u-2", "traits": {"email": "Two@X.com"}},
        {"type": "track", "userId": "u-9", "event": "B"},
        {"type": "track", "userId": 7, "event": "C"},  # not plain: the general path
    ]})  # fmt: skip
    env = enrichment(None, context, None, "203.0.113.9")
    fast = prepare(orjson.loads(body)["batch"], None, env, guard)
    env = enrichment(None, orjson.loads(orjson.dumps(context)), None, "203.0.113.9")
    general = Prepared()
    for index, msg in enumerate(orjson.loads(body)["batch"]):
        start = len(general.rows)
        prepare_message(general, index, msg, None, env, received_us(env))
        if len(general.rows) > start:
            from plait.collect.ingest import _guard_rows

            _guard_rows(general, start, index, guard)
    assert comparable(fast) == comparable(general)
    assert [r["index"] for r in fast.rejected] == [2]
    hashed = hashlib.sha256(b"jo@x.com").hexdigest()
    for row in fast.rows:
        data = orjson.loads(row[5])
        assert data["context"]["traits"]["email"] == hashed  # hashed once, not twice
        assert data["context"]["ip"] == "203.0.113.0"
    assert context["traits"]["email"] == "Jo@X.com"  # the batch's own object is untouched
