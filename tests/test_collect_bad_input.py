"""What the collection API refuses, and how: validation errors that name the field (and
the index in a batch), size limits, bad keys, hostile bodies. After every refusal the log
holds exactly the messages accepted before it."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import httpx
import orjson
import pytest
import sqlalchemy as sa

from plait.log import backend_for
from plait.spec import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES
from plait.store.schema import metadata

http = httpx.Client(timeout=30.0)
TRACK = {"userId": "u1", "event": "Signed Up"}


def records(server):
    return backend_for(server.store).read(0, 10_000)


def stored(server) -> list[dict]:
    return [orjson.loads(r.payload) for r in records(server)]


def post(server, path, body, key=None, **kwargs) -> httpx.Response:
    return http.post(f"{server.url}{path}", json=body, auth=(key or server.write_key, ""), **kwargs)


def post_raw(server, path, content: bytes, **headers) -> httpx.Response:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return http.post(
        f"{server.url}{path}", content=content, headers=headers, auth=(server.write_key, "")
    )


def error(response: httpx.Response) -> dict:
    body = response.json()
    assert body["success"] is False
    return body["error"]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Validation -------------------------------------------------------------------------

CASES = [
    # path, body, status, code, field
    ("/v1/identify", {}, 400, "missing_identity", "userId"),
    ("/v1/identify", {"userId": None, "anonymousId": None}, 400, "missing_identity", "userId"),
    ("/v1/identify", {"userId": ""}, 400, "invalid_field", "userId"),
    ("/v1/identify", {"userId": True}, 400, "invalid_field", "userId"),
    ("/v1/identify", {"anonymousId": ["a"]}, 400, "invalid_field", "anonymousId"),
    ("/v1/identify", {"userId": "u", "traits": "vip"}, 400, "invalid_field", "traits"),
    ("/v1/identify", {"userId": "u", "traits": ["vip"]}, 400, "invalid_field", "traits"),
    ("/v1/track", {"userId": "u"}, 400, "invalid_field", "event"),
    ("/v1/track", {"userId": "u", "event": 5}, 400, "invalid_field", "event"),
    ("/v1/track", {"userId": "u", "event": ""}, 400, "invalid_field", "event"),
    ("/v1/t", {"userId": "u", "event": "E", "properties": 5}, 400, "invalid_field", "properties"),
    ("/v1/track", {**TRACK, "context": "web"}, 400, "invalid_field", "context"),
    ("/v1/track", {**TRACK, "integrations": []}, 400, "invalid_field", "integrations"),
    ("/v1/track", {"type": "identify", "userId": "u"}, 400, "invalid_field", "type"),
    ("/v1/track", {**TRACK, "messageId": "m" * 101}, 400, "invalid_field", "messageId"),
    ("/v1/track", {**TRACK, "messageId": 12}, 400, "invalid_field", "messageId"),
    ("/v1/track", {**TRACK, "messageId": "a\u0000b"}, 400, "invalid_field", "messageId"),
    ("/v1/track", {**TRACK, "timestamp": "yesterday"}, 400, "invalid_field", "timestamp"),
    ("/v1/track", {**TRACK, "timestamp": 1700000000}, 400, "invalid_field", "timestamp"),
    (
        "/v1/track",
        {**TRACK, "timestamp": "0001-01-01T00:00:00+01:00"},
        400,
        "invalid_field",
        "timestamp",
    ),
    ("/v1/track", {**TRACK, "sentAt": "tomorrow"}, 400, "invalid_field", "sentAt"),
    ("/v1/page", {"userId": "u", "name": 5}, 400, "invalid_field", "name"),
    ("/v1/s", {"userId": "u", "name": {"a": 1}}, 400, "invalid_field", "name"),
    ("/v1/group", {"userId": "u"}, 400, "invalid_field", "groupId"),
    ("/v1/g", {"userId": "u", "groupId": ""}, 400, "invalid_field", "groupId"),
    ("/v1/alias", {"userId": "u"}, 400, "invalid_field", "previousId"),
    ("/v1/a", {"anonymousId": "a", "previousId": "p"}, 400, "invalid_field", "userId"),
    ("/v1/batch", {}, 400, "invalid_field", "batch"),
    ("/v1/batch", {"batch": {"type": "track"}}, 400, "invalid_field", "batch"),
    ("/v1/batch", {"batch": [], "sentAt": "soon"}, 400, "invalid_field", "sentAt"),
    ("/v1/batch", {"batch": [], "context": ["x"]}, 400, "invalid_field", "context"),
    ("/v1/batch", {"batch": [], "integrations": "all"}, 400, "invalid_field", "integrations"),
    ("/v1/track", [TRACK], 400, "invalid_body", None),
    ("/v1/batch", "batch", 400, "invalid_body", None),
]


def test_invalid_messages_are_400_and_name_the_field(server):
    assert post(server, "/v1/track", {**TRACK, "messageId": "good"}).status_code == 200
    for path, body, status, code, field in CASES:
        response = post(server, path, body)
        assert response.status_code == status, (path, body, response.text)
        err = error(response)
        assert (err["code"], err.get("field")) == (code, field), (path, body, err)
        assert err["message"]
        assert [r.message_id for r in records(server)] == ["good"], (path, body)


def test_an_empty_batch_is_accepted_and_stores_nothing(server):
    response = post(server, "/v1/batch", {"batch": []})
    assert response.status_code == 200
    assert records(server) == []


def test_write_key_refusals_are_401(server):
    repo = server.repo
    cases = []
    cases.append(("unknown", post(server, "/v1/track", TRACK, key="no-such-key")))
    cases.append(
        ("not a string", http.post(f"{server.url}/v1/track", json={**TRACK, "writeKey": 12345}))
    )
    cases.append(("empty", http.post(f"{server.url}/v1/track", json={**TRACK, "writeKey": ""})))
    repo.update_source(server.workspace_id, server.source_id, enabled=False)
    cases.append(("disabled", post(server, "/v1/track", TRACK)))
    cases.append(
        ("disabled batch", post(server, "/v1/batch", {"batch": [{**TRACK, "type": "track"}]}))
    )
    repo.update_source(server.workspace_id, server.source_id, enabled=True)
    assert post(server, "/v1/track", {**TRACK, "messageId": "while-enabled"}).status_code == 200
    (key,) = repo.list_write_keys(server.workspace_id, server.source_id)
    repo.revoke_write_key(server.workspace_id, server.source_id, key["id"])
    cases.append(("revoked", post(server, "/v1/track", TRACK)))
    expected = {
        "unknown": "invalid_write_key",
        "not a string": "missing_write_key",
        "empty": "missing_write_key",
        "disabled": "source_disabled",
        "disabled batch": "source_disabled",
        "revoked": "invalid_write_key",
    }
    for name, response in cases:
        assert response.status_code == 401, name
        assert error(response)["code"] == expected[name], name
    assert [r.message_id for r in records(server)] == ["while-enabled"]


# Batches ----------------------------------------------------------------------------


def test_a_partial_batch_keeps_the_valid_messages_and_reports_the_others(server):
    batch = [
        {**TRACK, "type": "track", "messageId": "ok-0"},
        {"type": "track", "userId": "u1", "messageId": "no-event"},
        {"type": "identify", "userId": "u2", "messageId": "ok-2"},
        "not an object",
        {"type": "unknown", "userId": "u"},
        {"type": ["track"], "userId": "u"},
        {"type": "alias", "userId": "u"},
        {"type": "group", "userId": "u", "groupId": "g", "messageId": "ok-7"},
        {"type": "identify", "userId": "u", "traits": [1, 2]},
        {"type": "identify", "anonymousId": "a", "timestamp": "0001-01-01T00:00:00+05:00"},
    ]
    response = post(server, "/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["accepted"] == 3
    rejected = {(r["index"], r["field"], r["code"]) for r in body["rejected"]}
    assert rejected == {
        (1, "event", "invalid_field"),
        (3, "message", "invalid_message"),
        (4, "type", "invalid_field"),
        (5, "type", "invalid_field"),
        (6, "previousId", "invalid_field"),
        (8, "traits", "invalid_field"),
        (9, "timestamp", "invalid_field"),
    }
    assert all(r["message"] for r in body["rejected"])
    assert [r.message_id for r in records(server)] == ["ok-0", "ok-2", "ok-7"]


def test_an_all_invalid_batch_is_400_and_stores_nothing(server):
    batch = [{"type": "track", "userId": "u"}, {"type": "identify"}, 5]
    response = post(server, "/v1/batch", {"batch": batch})
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "all_rejected"
    assert [(r["index"], r["field"]) for r in err["rejected"]] == [
        (0, "event"),
        (1, "userId"),
        (2, "message"),
    ]
    assert records(server) == []


def test_message_size_limit_single_and_in_a_batch(server):
    def message_of_size(size: int, message_id: str) -> dict:
        msg = {**TRACK, "messageId": message_id, "properties": {"pad": ""}}
        msg["properties"]["pad"] = "x" * (size - len(orjson.dumps(msg)))
        assert len(orjson.dumps(msg)) == size
        return msg

    assert post(server, "/v1/track", message_of_size(MAX_MESSAGE_BYTES, "at-limit")).is_success
    too_big = post(server, "/v1/track", message_of_size(MAX_MESSAGE_BYTES + 1, "over"))
    assert too_big.status_code == 413
    assert error(too_big)["code"] == "message_too_large"
    assert error(too_big)["field"] == "message"

    batch = [
        {**TRACK, "type": "track", "messageId": "small-0"},
        {**message_of_size(MAX_MESSAGE_BYTES + 100, "big-1"), "type": "track"},
        {**TRACK, "type": "track", "messageId": "small-2"},
    ]
    response = post(server, "/v1/batch", {"batch": batch})
    assert response.status_code == 200
    assert [(r["index"], r["code"]) for r in response.json()["rejected"]] == [
        (1, "message_too_large")
    ]
    assert [r.message_id for r in records(server)] == ["at-limit", "small-0", "small-2"]


def test_batch_message_count_limit(server):
    msg = {"type": "track", "userId": "u", "event": "E"}
    over = post(server, "/v1/batch", {"batch": [msg] * (MAX_BATCH_MESSAGES + 1)})
    assert over.status_code == 413
    assert error(over)["code"] == "batch_too_large"
    assert records(server) == []
    batch = [{**msg, "messageId": f"m{i}"} for i in range(MAX_BATCH_MESSAGES)]
    assert post(server, "/v1/batch", {"batch": batch}).json() == {"success": True}
    assert backend_for(server.store).count() == MAX_BATCH_MESSAGES


def test_body_size_limit(server):
    def body_of_size(size: int, message_id: str) -> bytes:
        body = orjson.dumps({"batch": [{**TRACK, "type": "track", "messageId": message_id}]})
        return body + b" " * (size - len(body))  # JSON allows trailing whitespace

    assert post_raw(server, "/v1/batch", body_of_size(MAX_BATCH_BYTES, "at-limit")).is_success
    over = post_raw(server, "/v1/batch", body_of_size(MAX_BATCH_BYTES + 1, "over"))
    assert over.status_code == 413
    assert error(over)["code"] == "body_too_large"

    def chunks():  # no Content-Length: the server must count as it reads
        yield body_of_size(MAX_BATCH_BYTES, "chunked")[:-10]
        yield b" " * 100

    chunked = http.post(f"{server.url}/v1/batch", content=chunks(), auth=(server.write_key, ""))
    assert chunked.status_code == 413
    assert [r.message_id for r in records(server)] == ["at-limit"]


# Hostile bodies ----------------------------------------------------------------------


def test_hostile_bodies_are_refused_and_leave_the_log_as_it_was(server):
    assert post(server, "/v1/track", {**TRACK, "messageId": "good"}).status_code == 200
    good = records(server)

    def check(response: httpx.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        assert error(response)["code"] == code
        assert records(server) == good

    # a gzip bomb: 50 MB of zeros in ~50 KB, refused without inflating it all
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < MAX_BATCH_BYTES
    tracemalloc.start()
    started = time.perf_counter()
    try:
        response = post_raw(server, "/v1/batch", bomb, content_encoding="gzip")
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check(response, 413, "body_too_large")
    assert elapsed < 5.0
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while refusing a gzip bomb"
    deflate_bomb = zlib.compress(b"{" + b" " * (20 * 1024 * 1024))
    check(
        post_raw(server, "/v1/track", deflate_bomb, content_encoding="deflate"),
        413,
        "body_too_large",
    )

    valid_gzip = gzip.compress(orjson.dumps(TRACK))
    check(
        post_raw(server, "/v1/track", valid_gzip[:-12], content_encoding="gzip"),
        400,
        "invalid_gzip",
    )
    check(
        post_raw(server, "/v1/track", valid_gzip[:10], content_encoding="gzip"), 400, "invalid_gzip"
    )
    check(
        post_raw(server, "/v1/track", orjson.dumps(TRACK), content_encoding="gzip"),
        400,
        "invalid_gzip",
    )
    check(
        post_raw(server, "/v1/track", valid_gzip, content_encoding="br"),
        415,
        "unsupported_encoding",
    )

    check(post_raw(server, "/v1/track", b""), 400, "invalid_json")
    check(post_raw(server, "/v1/track", b'{"userId": "u1", "event": '), 400, "invalid_json")
    check(post_raw(server, "/v1/track", b"{'userId': 'u1'}"), 400, "invalid_json")
    check(post_raw(server, "/v1/track", b'{"userId": NaN, "event": "E"}'), 400, "invalid_json")
    # not UTF-8: Latin-1 and raw garbage, plain and gzipped
    latin1 = '{"userId": "Zoë", "event": "E"}'.encode("latin-1")
    check(post_raw(server, "/v1/track", latin1), 400, "invalid_json")
    check(
        post_raw(server, "/v1/track", b'{"userId": "\xff\xfe\xfd", "event": "E"}'),
        400,
        "invalid_json",
    )
    check(
        post_raw(server, "/v1/track", gzip.compress(latin1), content_encoding="gzip"),
        400,
        "invalid_json",
    )
    check(
        post_raw(server, "/v1/track", b'{"userId": "\\ud800", "event": "E"}'), 400, "invalid_json"
    )
    check(
        post_raw(server, "/v1/track", '{"userId": "u1", "event": "E"}'.encode("utf-16")),
        400,
        "invalid_json",
    )

    # deep nesting: past the parser's limit, and deep enough to break re-serialization
    for depth in (5000, 1000, 300):
        body = b'{"userId": "u1", "event": "E", "properties": {"x": ' + nested(depth) + b"}}"
        response = post_raw(server, "/v1/track", body)
        assert response.status_code == 400, (depth, response.text)
        assert records(server) == good
        batch = b'{"batch": [{"type": "track", "userId": "u", "event": "E", "properties": ' + (
            b'{"x": ' + nested(depth) + b"}}]}"
        )
        response = post_raw(server, "/v1/batch", batch)
        assert response.status_code == 400, (depth, response.text)
        assert records(server) == good
    deep_context = b'{"batch": [{"type": "track", "userId": "u", "event": "E"}], "context": '
    response = post_raw(server, "/v1/batch", deep_context + b'{"x": ' + nested(300) + b"}}")
    assert response.status_code == 400, response.text
    assert records(server) == good
    assert http.get(f"{server.url}/health").status_code == 200


def test_a_bad_message_never_fails_the_good_ones_committed_with_it(server):
    # A NUL in a messageId cannot be stored by PostgreSQL; deep nesting cannot be
    # re-serialized. Either must be rejected on its own, not fail the whole commit.
    batch = [
        {**TRACK, "type": "track", "messageId": "before"},
        {**TRACK, "type": "track", "messageId": "nul\u0000id"},
        {**TRACK, "type": "track", "messageId": "after"},
    ]
    response = post(server, "/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(1, "messageId")]
    deep = (
        b'{"type": "track", "userId": "u", "event": "E", "properties": {"x": ' + nested(400) + b"}}"
    )
    body = b'{"batch": [' + deep + b', {"type": "identify", "userId": "u", "messageId": "ok"}]}'
    response = post_raw(server, "/v1/batch", body)
    assert response.status_code == 200, response.text
    assert [r["index"] for r in response.json()["rejected"]] == [0]
    assert [r.message_id for r in records(server)] == ["before", "after", "ok"]


HOSTILE = [
    "'; DROP TABLE log_messages; --",
    "Robert'); DROP TABLE workspaces;--",
    "../../etc/passwd",
    "..\\..\\windows\\system32",
    "$where",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "%00%27",
    "\u202etxt.exe",
    "名前",
]


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_hostile_names_and_values_are_stored_verbatim_and_tables_stay_intact(server, path):
    properties = {name: name for name in HOSTILE} | {"nested": {HOSTILE[0]: [HOSTILE[2]]}}
    msg = {
        "userId": HOSTILE[2],
        "event": HOSTILE[1],
        "messageId": HOSTILE[0],
        "properties": properties,
        "traits": {"\u0000nul": "a\u0000b"},  # a NUL inside the JSON payload is fine
        "context": {"page": {"path": HOSTILE[2]}},
    }
    body = {"batch": [{**msg, "type": "track"}]} if path == "/v1/batch" else msg
    response = post(server, path, body)
    assert response.status_code == 200, response.text

    (payload,) = stored(server)
    assert payload["messageId"] == HOSTILE[0]
    assert payload["userId"] == HOSTILE[2]
    assert payload["event"] == HOSTILE[1]
    assert payload["properties"] == properties
    assert payload["traits"] == {"\u0000nul": "a\u0000b"}
    assert records(server)[0].message_id == HOSTILE[0]

    inspector = sa.inspect(server.store.engine)
    assert {t.name for t in metadata.sorted_tables} <= set(inspector.get_table_names())
    with server.store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workspaces")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM log_messages")).scalar_one() == 1
    # still fully working afterwards
    assert post(server, "/v1/identify", {"userId": HOSTILE[2]}).status_code == 200
    assert backend_for(server.store).count() == 2
    traversal = http.get(f"{server.url}/v1/projects/..%2F..%2Fetc%2Fpasswd/settings")
    assert traversal.status_code == 404


def test_multi_member_gzip_bodies_are_read_whole_and_still_bounded(server):
    first = gzip.compress(b'{"batch": [{"type": "track", "userId": "u1", "event": "A"},')
    second = gzip.compress(b'{"type": "track", "userId": "u2", "event": "B"}]}')
    response = httpx.post(f"{server.url}/v1/batch", content=first + second,
                          auth=(server.write_key, ""),
                          headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert [r.type for r in backend_for(server.store).read(0, 10)] == ["track", "track"]
    bomb = gzip.compress(b" " * 300_000) * 2  # each member small, together over 500 KB
    response = httpx.post(f"{server.url}/v1/batch", content=bomb, auth=(server.write_key, ""),
                          headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert response.status_code == 413
