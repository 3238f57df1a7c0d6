"""The PostgreSQL warehouse destination against the local PostgreSQL, with either store:
Segment's warehouse schema (tables, snake_case, flattening, types), the schema evolving,
loads deduplicated on the message id, users upserted, and what cannot be loaded."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from conftest import require
from destination_world import DeliveryWorld
from log_messages import append

from plait.destinations import manage
from plait.destinations import warehouse_schema as ws
from plait.destinations.dispatcher import Dispatcher
from plait.pipeline.runner import Pipeline
from plait.store.workspaces import Invalid, Workspaces


@pytest.fixture
def warehouse(postgres_database):
    url, reason = postgres_database
    require(url is not None, reason or "PostgreSQL unavailable")
    return url.replace("postgresql+psycopg://", "postgresql://"), f"wh_{uuid.uuid4().hex[:8]}"


class World:
    def __init__(self, store, warehouse):
        self.store = store
        self.url, self.schema = warehouse
        self.repo = Workspaces(store)
        self.ws = self.repo.create_workspace("acme")["id"]
        self.src = self.repo.create_source(self.ws, "Website", "javascript")[0]["id"]
        self.pipeline = Pipeline(store)
        manage.put(
            self.repo,
            self.ws,
            {"key": "wh", "type": "postgres", "settings": {"url": self.url, "schema": self.schema}},
        )

    def feed(self, messages):
        stored = append(self.store, self.ws, messages, self.src)
        while self.pipeline.catch_up(self.ws):
            pass
        asyncio.run(Dispatcher(self.store).drain(self.ws))
        return stored

    def sql(self, query, params=()):
        with psycopg.connect(self.url) as conn:
            return conn.execute(query.replace("S.", f"{self.schema}."), params).fetchall()

    def columns(self, table):
        return dict(self.sql("SELECT column_name, data_type FROM information_schema.columns "
                             "WHERE table_schema = %s AND table_name = %s",
                             (self.schema, table)))  # fmt: skip


@pytest.fixture
def world(store, warehouse):
    return World(store, warehouse)


def test_snake_case_and_flattening_as_segment():
    assert ws.snake("Order Completed") == "order_completed"
    assert ws.snake("productId") == "product_id"
    assert ws.snake("HTTPStatus code") == "http_status_code"
    assert ws.snake("2fa-enabled") == "_2fa_enabled"
    flat = ws.flatten({"app": {"version": "1.2", "build": None}, "tags": ["a", 1], "n": 3})
    assert flat == {"app_version": "1.2", "tags": '["a",1]', "n": 3}
    assert ws.event_table("Tracks") == "tracks_event"


def test_messages_land_in_segments_warehouse_schema(world):
    at = datetime.now(UTC) - timedelta(hours=1)
    sent = world.feed([
        {"type": "identify", "userId": "ann", "anonymousId": "a-1", "timestamp": at.isoformat(),
         "traits": {"email": "ann@example.com", "address": {"city": "Lyon"}, "plan": "pro"}},
        {"type": "track", "userId": "ann", "event": "Order Completed",
         "context": {"app": {"version": "3.1"}},
         "properties": {"revenue": 12.5, "productId": "p1", "items": [{"sku": "x"}], "qty": 2}},
        {"type": "page", "userId": "ann", "name": "Home", "properties": {"path": "/"}},
        {"type": "screen", "userId": "ann", "name": "Cart"},
        {"type": "group", "userId": "ann", "groupId": "g1", "traits": {"employees": 40}},
        {"type": "alias", "userId": "ann", "previousId": "a-1"},
    ])  # fmt: skip
    tables = {t for (t,) in world.sql("SELECT table_name FROM information_schema.tables "
                                      "WHERE table_schema = %s", (world.schema,))}  # fmt: skip
    assert tables == {"identifies", "users", "tracks", "order_completed", "pages", "screens",
                      "groups", "aliases"}  # fmt: skip
    order = world.columns("order_completed")
    assert order["revenue"] == "double precision" and order["qty"] == "bigint"
    assert order["product_id"] == "text" and order["items"] == "text"
    assert order["context_app_version"] == "text"
    assert (
        order["timestamp"]
        == order["received_at"]
        == order["uuid_ts"]
        == ("timestamp with time zone")
    )
    row = world.sql("SELECT id, event, event_text, revenue, product_id, items, user_id "
                    "FROM S.order_completed")  # fmt: skip
    assert row == [(sent[1]["messageId"], "order_completed", "Order Completed", 12.5, "p1",
                    '[{"sku":"x"}]', "ann")]  # fmt: skip
    assert "revenue" not in world.columns("tracks")  # tracks: without the properties
    assert world.sql("SELECT event FROM S.tracks") == [("order_completed",)]
    identify = world.sql("SELECT email, address_city, plan, anonymous_id, timestamp "
                         "FROM S.identifies")  # fmt: skip
    assert identify[0][:4] == ("ann@example.com", "Lyon", "pro", "a-1")
    assert abs(identify[0][4] - at) < timedelta(seconds=1)
    assert world.sql("SELECT id, email FROM S.users") == [("ann", "ann@example.com")]
    assert world.sql("SELECT name, path FROM S.pages") == [("Home", "/")]
    assert world.sql("SELECT group_id, employees FROM S.groups") == [("g1", 40)]
    assert world.sql("SELECT previous_id, user_id FROM S.aliases") == [("a-1", "ann")]


def test_the_schema_evolves_loads_are_idempotent_and_users_are_upserted(world):
    first = world.feed([
        {"type": "track", "userId": "ann", "event": "Signed Up", "properties": {"plan": "pro"}},
        {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "city": "Lyon"}},
    ])  # fmt: skip
    world.feed([
        {"type": "track", "userId": "bob", "event": "Signed Up",
         "properties": {"plan": "free", "referrer": "ads", "score": "high"}},
        {"type": "identify", "userId": "ann", "traits": {"plan": "plus", "age": 40}},
        {"type": "identify", "userId": "ann", "traits": {"plan": "max"}},  # same batch
    ])  # fmt: skip
    assert world.columns("signed_up")["referrer"] == "text"  # added, the old row null
    assert world.sql("SELECT user_id, referrer FROM S.signed_up ORDER BY user_id") == [
        ("ann", None),
        ("bob", "ads"),
    ]
    # users: one row per user, the latest traits, one missing from a later identify kept
    assert world.sql("SELECT id, plan, city, age FROM S.users") == [("ann", "max", "Lyon", 40)]
    # a replay loads the same messages again: still one row each (deduplicated on id)
    start = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert manage.replay(world.store, world.repo, world.ws, "wh", start=start, end=end) == 5
    asyncio.run(Dispatcher(world.store).drain(world.ws))
    assert world.sql("SELECT count(*), count(DISTINCT id) FROM S.signed_up") == [(2, 2)]
    assert world.sql("SELECT count(*) FROM S.identifies") == [(3,)]
    assert world.sql("SELECT id FROM S.tracks ORDER BY received_at LIMIT 1") == [
        (first[0]["messageId"],)
    ]
    assert manage.status(world.store, world.ws, "wh")["queue"]["failed"] == 0


def test_values_of_another_type_are_converted_or_left_null(world):
    world.feed(
        [
            {
                "type": "track",
                "userId": "ann",
                "event": "Scored",
                "properties": {"points": 10, "ratio": 0.5, "label": "a", "ok": True},
            }
        ]
    )
    world.feed([{"type": "track", "userId": "bob", "event": "Scored",
                 "properties": {"points": 3.0, "ratio": 2, "label": 7, "ok": "yes"}},
                {"type": "track", "userId": "cat", "event": "Scored",
                 "properties": {"points": 2.5, "ratio": "x"}}])  # fmt: skip
    rows = world.sql("SELECT user_id, points, ratio, label, ok FROM S.scored ORDER BY user_id")
    assert rows == [("ann", 10, 0.5, "a", True), ("bob", 3, 2.0, "7", None),
                    ("cat", None, None, None, None)]  # fmt: skip


def test_an_unreachable_warehouse_is_retried(store):
    repo = Workspaces(store)
    ws_id = repo.create_workspace("acme")["id"]
    src = repo.create_source(ws_id, "Website", "javascript")[0]["id"]
    manage.put(
        repo,
        ws_id,
        {
            "key": "wh",
            "type": "postgres",
            "backoff": 60,
            "settings": {"url": "postgresql://nobody@127.0.0.1:9/none"},
        },
    )
    append(store, ws_id, [{"type": "track", "userId": "ann", "event": "A"}], src)
    Pipeline(store).catch_up(ws_id)
    asyncio.run(Dispatcher(store).drain(ws_id))
    queued = manage.queued(store, repo, ws_id, "wh")
    assert [q["status"] for q in queued] == ["retrying"] and "connect" in queued[0]["last_response"]
    assert manage.describe(store, repo, ws_id, "wh")["settings"]["url"] == "********"


def test_a_duckdb_file_gets_the_same_schema_deduplicated_and_evolving(store, tmp_path):
    import duckdb

    from plait.destinations.connectors import CONNECTORS
    from plait.destinations.dispatcher import Dispatcher

    world = DeliveryWorld(store)
    repo, ws_id, feed = world.repo, world.ws, world.feed
    path = tmp_path / "events.duckdb"
    manage.put(repo, ws_id, {"key": "file", "type": "duckdb", "settings": {"path": str(path)}})

    feed(
        [
            {
                "type": "track",
                "userId": "ann",
                "event": "Order Completed",
                "properties": {"revenue": 12.5, "productId": "p1", "tags": ["a"]},
            },
            {"type": "identify", "userId": "ann", "traits": {"plan": "pro", "city": "Lyon"}},
        ]
    )
    feed([{"type": "track", "userId": "bob", "event": "Order Completed",
           "properties": {"revenue": 3, "coupon": "X"}},
          {"type": "identify", "userId": "ann", "traits": {"plan": "max"}}])  # fmt: skip
    start = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert manage.replay(store, repo, ws_id, "file", start=start, end=end) == 4
    asyncio.run(Dispatcher(store).drain(ws_id))
    CONNECTORS["duckdb"].close(str(path))  # let go of the file to read it
    con = duckdb.connect(str(path), read_only=True)
    try:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_schema = 'plait' AND table_name = 'order_completed'"
                                 ).fetchall())  # fmt: skip
        assert types["revenue"] == "DOUBLE" and types["product_id"] == "VARCHAR"
        assert types["coupon"] == "VARCHAR" and types["timestamp"] == "TIMESTAMP WITH TIME ZONE"
        rows = con.execute("SELECT user_id, revenue, product_id, tags, coupon "
                           "FROM plait.order_completed ORDER BY user_id").fetchall()  # fmt: skip
        assert rows == [("ann", 12.5, "p1", '["a"]', None), ("bob", 3.0, None, None, "X")]
        assert con.execute("SELECT count(*) FROM plait.tracks").fetchone() == (2,)
        assert con.execute("SELECT id, plan, city FROM plait.users").fetchall() == [
            ("ann", "max", "Lyon")
        ]
    finally:
        con.close()


def test_parquet_files_get_the_same_schema_with_stable_types_and_retries_rewrite_their_file(
    store, tmp_path
):
    import duckdb

    from plait.destinations.connectors import CONNECTORS
    from plait.destinations.connectors.base import Item

    world = DeliveryWorld(store)
    repo, ws_id, feed = world.repo, world.ws, world.feed
    lake = tmp_path / "export"
    manage.put(repo, ws_id, {"key": "files", "type": "parquet", "settings": {"path": str(lake)}})

    feed([{"type": "track", "userId": "ann", "event": "Order Completed",
           "properties": {"revenue": 12.5, "productId": "p1", "tags": ["a"]},
           "context": {"app": {"version": "3.2"}}},
          {"type": "identify", "userId": "ann", "traits": {"plan": "pro"}}])  # fmt: skip
    feed([{"type": "track", "userId": "bob", "event": "Order Completed",
           "properties": {"revenue": "oops", "coupon": "X"}}])  # fmt: skip
    con = duckdb.connect()
    read = f"read_parquet('{lake}/order_completed/*.parquet', union_by_name = true)"
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {read})"
                             ).fetchall())  # fmt: skip
    assert types["revenue"] == "DOUBLE" and types["product_id"] == "VARCHAR"
    assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE" and types["coupon"] == "VARCHAR"
    rows = con.execute(f"SELECT user_id, revenue, product_id, tags, coupon, context_app_version "
                       f"FROM {read} ORDER BY user_id").fetchall()  # fmt: skip
    assert rows == [("ann", 12.5, "p1", '["a"]', None, "3.2"), ("bob", None, None, None, "X", None)]
    assert con.execute(f"SELECT count(*) FROM '{lake}/tracks/*.parquet'").fetchone() == (2,)
    assert con.execute(f"SELECT id, plan FROM '{lake}/users/*.parquet'").fetchall() == [
        ("ann", "pro")]  # fmt: skip
    files = sorted((lake / "tracks").glob("*.parquet"))
    parquet = CONNECTORS["parquet"]
    settings = parquet.check({"path": str(lake)}, "s")
    item = Item("files-1", message={"type": "track", "messageId": "m1", "userId": "cat",
                                    "event": "Signed Up"})  # fmt: skip
    assert parquet.write(settings, [item])[0].ok
    assert parquet.write(settings, [item])[0].ok  # a retry: the same file again
    assert len(sorted((lake / "tracks").glob("*.parquet"))) == len(files) + 1
    assert not list(lake.rglob("*.tmp"))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory should be")
    outcome = parquet.write(parquet.check({"path": str(blocked)}, "s"), [item])[0]
    assert not outcome.ok and outcome.retry and "Error" in outcome.response
    with pytest.raises(Invalid, match="compression"):
        manage.put(repo, ws_id, {"key": "f2", "type": "parquet", "settings": {
            "path": str(lake), "compression": "lz5"}})  # fmt: skip
