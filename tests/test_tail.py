"""plait tail: filters, the follow loop, and the command's output."""

import threading
import time

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from plait.cli import app
from plait.log import backend_for
from plait.log.tail import Tail, TailFilter, describe, event_name, tail
from plait.settings import get_settings
from plait.store.workspaces import Workspaces

MESSAGES = [
    {"type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1"},
    {"type": "track", "event": "Order Refunded", "userId": "u2"},
    {"type": "track", "event": "Product Viewed", "anonymousId": "a1"},
    {"type": "page", "name": "Order Confirmation", "anonymousId": "a3",
     "context": {"page": {"path": "/checkout/done"}}},
    {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}},
    {"type": "group", "userId": "u2", "groupId": "g1", "traits": {"name": "Acme"}},
    {"type": "alias", "userId": "u3", "previousId": "a3"},
]  # fmt: skip


def append(log, messages, workspace="ws_a", source="src_web", prefix="m"):
    rows = []
    for i, msg in enumerate(messages):
        msg = {**msg, "messageId": f"{prefix}{i}", "timestamp": "2024-05-01T10:00:00.000Z"}
        rows.append((workspace, source, msg["messageId"], msg["type"], 1_000,
                     orjson.dumps(msg).decode()))  # fmt: skip
    log.append(rows)


def ids(events):
    return [e.message["messageId"] for e in events]


def read_all(log, flt, workspace="ws_a"):
    return list(tail(log, workspace, flt, after=0, follow=False))


def test_filters_by_type_event_glob_user_and_source(store):
    log = backend_for(store)
    append(log, MESSAGES)
    append(log, MESSAGES[:2], source="src_pos", prefix="pos")
    append(log, MESSAGES, workspace="ws_other", prefix="other")

    assert len(read_all(log, TailFilter())) == len(MESSAGES) + 2  # one workspace only
    assert ids(read_all(log, TailFilter.of(types=["track"]))) == ["m0", "m1", "m2", "pos0", "pos1"]
    assert ids(read_all(log, TailFilter.of(types=["group", "ALIAS"]))) == ["m5", "m6"]
    # Globs match a track's event or a page's name, case-insensitively; not other types.
    assert ids(read_all(log, TailFilter.of(events=["Order*"]))) == ["m0", "m1", "m3", "pos0",
                                                                     "pos1"]  # fmt: skip
    assert ids(read_all(log, TailFilter.of(events=["order c*"]))) == ["m0", "m3", "pos0"]
    assert ids(read_all(log, TailFilter.of(events=["*Viewed", "*Refunded"]))) == [
        "m1", "m2", "pos1",
    ]  # fmt: skip
    # --user matches userId or anonymousId.
    assert ids(read_all(log, TailFilter.of(users=["a1"]))) == ["m0", "m2", "pos0"]
    assert ids(read_all(log, TailFilter.of(users=["u1"]))) == ["m0", "m4", "pos0"]
    assert ids(read_all(log, TailFilter.of(source_ids=["src_pos"]))) == ["pos0", "pos1"]
    # Criteria combine with AND.
    combined = TailFilter.of(types=["track"], events=["Order*"], users=["u2"],
                             source_ids=["src_web"])  # fmt: skip
    assert ids(read_all(log, combined)) == ["m1"]
    assert read_all(log, TailFilter.of(types=["screen"])) == []


def test_describe_summarises_each_type():
    assert [describe(m) for m in MESSAGES] == [
        "Order Completed", "Order Refunded", "Product Viewed",
        "Order Confirmation /checkout/done", "email=u1@example.com", "g1 (Acme)", "a3 → u3",
    ]  # fmt: skip
    assert event_name(MESSAGES[4]) is None


def test_position_starts_at_the_end_an_offset_or_the_start(store):
    log = backend_for(store)
    append(log, MESSAGES[:3])
    offsets = [r.offset for r in log.read(0, 10)]
    from_end = Tail(log, "ws_a")
    assert from_end.position == offsets[-1]
    assert list(from_end.events(follow=False)) == []
    assert ids(Tail(log, "ws_a", after=offsets[0]).events(follow=False)) == ["m1", "m2"]
    assert ids(Tail(log, "ws_a", after=0).events(limit=2, follow=False)) == ["m0", "m1"]
    append(log, MESSAGES[3:5], prefix="later")
    assert ids(from_end.events(follow=False)) == ["later0", "later1"]


def test_reads_page_after_page(store):
    log = backend_for(store)
    append(log, [MESSAGES[0]] * 25)
    t = Tail(log, "ws_a", TailFilter.of(users=["u1"]), after=0, page_size=4)
    assert len(list(t.events(follow=False))) == 25
    assert t.position == log.last_offset()


def test_follow_picks_up_events_sent_after_it_started(server):
    log = backend_for(server.store)

    def post(*messages):
        response = httpx.post(f"{server.url}/v1/batch", auth=(server.write_key, ""),
                              json={"batch": list(messages)})  # fmt: skip
        assert response.status_code == 200, response.text

    post({"type": "track", "event": "Order Completed", "userId": "before"})
    follower = Tail(log, server.workspace_id, TailFilter.of(types=["track"], events=["Order*"]),
                    poll_interval=0.05)  # fmt: skip
    seen = []
    thread = threading.Thread(target=lambda: seen.extend(follower.events(limit=3)), daemon=True)
    thread.start()
    time.sleep(0.2)  # the follower polls an empty tail a few times first
    assert seen == []
    post({"type": "track", "event": "Order Completed", "userId": "u1"},
         {"type": "page", "name": "Order Status", "userId": "u1"},
         {"type": "track", "event": "Product Viewed", "userId": "u1"})  # fmt: skip
    time.sleep(0.2)
    post({"type": "track", "event": "Order Refunded", "userId": "u2"})
    post({"type": "track", "event": "Order Completed", "userId": "u3"},
         {"type": "track", "event": "Order Completed", "userId": "u4"})  # fmt: skip
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [(e.message["event"], e.message["userId"]) for e in seen] == [
        ("Order Completed", "u1"), ("Order Refunded", "u2"), ("Order Completed", "u3"),
    ]  # fmt: skip
    assert all(e.record.source_id == server.source_id for e in seen)


def test_stop_ends_the_follow_loop(store):
    follower = Tail(backend_for(store), "ws_a", poll_interval=0.05)
    thread = threading.Thread(target=lambda: list(follower.events()), daemon=True)
    thread.start()
    time.sleep(0.15)
    follower.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.fixture
def plait(store_url, monkeypatch):
    monkeypatch.setenv("PLAIT_DATABASE_URL", store_url)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(app, ["tail", *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    yield run
    get_settings.cache_clear()


@pytest.fixture
def workspace(store):
    repo = Workspaces(store)
    ws = repo.create_workspace("acme")
    web, _ = repo.create_source(ws["id"], "Website", "javascript")
    pos, _ = repo.create_source(ws["id"], "Stores", "python")
    log = backend_for(store)
    append(log, MESSAGES, ws["id"], web["id"])
    append(log, MESSAGES[:2], ws["id"], pos["id"], prefix="pos")
    return ws, web, pos


def test_cli_json_prints_one_compact_message_a_line(plait, workspace):
    out = plait("-w", "acme", "--from-start", "--json", "--type", "track", "--no-follow").stdout
    lines = out.splitlines()
    assert [orjson.loads(line)["messageId"] for line in lines] == ["m0", "m1", "m2", "pos0", "pos1"]
    assert all(line == orjson.dumps(orjson.loads(line)).decode() for line in lines)

    # By source name, with a limit (follow mode returns once the limit is reached).
    out = plait("-w", "acme", "--from-start", "--json", "-s", "Stores", "-n", "1").stdout
    assert [orjson.loads(line)["messageId"] for line in out.splitlines()] == ["pos0"]
    out = plait("-w", workspace[0]["id"], "--from-start", "--json", "--no-follow",
                "--user", "a1", "--event", "Order*").stdout  # fmt: skip
    assert [orjson.loads(line)["messageId"] for line in out.splitlines()] == ["m0", "pos0"]
    # From the end of the log there is nothing yet.
    assert plait("-w", "acme", "--json", "--no-follow").stdout == ""


def test_cli_pretty_output_and_errors(plait, workspace):
    result = plait("-w", "acme", "--from-start", "--no-follow", "-t", "track", "-t", "group")
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert "Order Completed" in lines[0] and "u1" in lines[0] and "Website" in lines[0]
    assert "2024-05-01 10:00:00" in lines[0] and "track" in lines[0]
    assert "g1 (Acme)" in lines[3]
    assert "Stores" in lines[-1]

    full = plait("-w", "acme", "--from-start", "--no-follow", "--full", "-u", "u2", "-t", "group")
    assert '"groupId": "g1"' in full.stdout  # the whole message, pretty-printed

    assert "not found" in plait("-w", "nope", code=1).output
    assert "not found" in plait("-w", "acme", "-s", "Nope", code=1).output
    assert "choose from" in plait("-w", "acme", "-t", "click", code=1).output
    assert "not both" in plait("-w", "acme", "--from-start", "--after", "3", code=1).output
