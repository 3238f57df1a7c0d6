"""The Redis and NATS JetStream destinations against the local Redis and NATS servers,
with either store: profiles and audience memberships in Redis under the documented keys;
messages in a JetStream stream, a repeat stored once (Nats-Msg-Id)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import UTC, datetime, timedelta

import nats
import orjson
import pytest
import redis
from conftest import require
from destination_world import DeliveryWorld

from plait.audiences import manage as audience_docs
from plait.destinations import manage
from plait.destinations.connectors.redis_profiles import keys
from plait.destinations.dispatcher import Dispatcher
from plait.store.workspaces import Invalid


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def world(store):
    return DeliveryWorld(store)


def order(user, revenue):
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    return {"type": "track", "userId": user, "event": "Order Completed", "timestamp": at,
            "properties": {"revenue": revenue}}  # fmt: skip


def test_redis_keeps_traits_and_audience_memberships_for_personalization(world):
    require(reachable(6379), "Redis unreachable at 127.0.0.1:6379")
    prefix = f"t{uuid.uuid4().hex[:8]}"
    r = redis.Redis(host="127.0.0.1", port=6379)
    try:
        audiences = [{"key": "buyers", "definition":
                      'performed "Order Completed" at least 2 times in last 30 days'}]  # fmt: skip
        audience_docs.check(world.repo, world.ws, {"audiences": audiences})
        audience_docs.save(world.repo, world.ws, {"audiences": audiences})
        manage.put(
            world.repo,
            world.ws,
            {"key": "cache", "type": "redis", "settings": {"prefix": prefix, "ttl_days": 30}},
        )
        world.feed([{"type": "identify", "userId": "ann",
                     "traits": {"email": "ann@example.com", "plan": "pro", "seats": 3}},
                    order("ann", 20), order("ann", 30), order("bob", 5)])  # fmt: skip
        k = keys(prefix, world.ws)
        ann = r.get(k["user"].format("ann")).decode()
        assert ann.startswith("prf_")
        profile = {f.decode(): v for f, v in r.hgetall(k["profile"].format(ann)).items()}
        assert orjson.loads(profile["email"]) == "ann@example.com"
        assert orjson.loads(profile["seats"]) == 3
        assert orjson.loads(profile["buyers"]) is True  # the audience step's identify
        assert r.smembers(k["audiences"].format(ann)) == {b"buyers"}
        assert r.smembers(k["audience"].format("buyers")) == {ann.encode()}
        assert 0 < r.ttl(k["profile"].format(ann)) <= 30 * 86400
        bob = r.get(k["user"].format("bob")).decode()
        assert r.smembers(k["audiences"].format(bob)) == set()
        # a null trait removes it; applying the same messages again changes nothing
        world.feed([{"type": "identify", "userId": "ann", "traits": {"plan": None}}])
        fields = {f.decode() for f in r.hkeys(k["profile"].format(ann))}
        assert "plan" not in fields and {"email", "seats", "buyers"} <= fields
        start = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert manage.replay(world.store, world.repo, world.ws, "cache", start=start, end=end)
        asyncio.run(Dispatcher(world.store).drain(world.ws))
        assert r.smembers(k["audience"].format("buyers")) == {ann.encode()}
        assert "plan" not in {f.decode() for f in r.hkeys(k["profile"].format(ann))}
    finally:
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)
        r.close()


def test_nats_jetstream_stores_each_message_once(world):
    require(reachable(4222), "NATS unreachable at 127.0.0.1:4222")
    stream, subjects = f"T{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    manage.put(
        world.repo,
        world.ws,
        {"key": "bus", "type": "nats", "settings": {"stream": stream, "subject_prefix": subjects}},
    )
    sent = world.feed([order("ann", 20), {"type": "identify", "userId": "ann",
                                          "traits": {"plan": "pro"}}, order("bob", 5)])  # fmt: skip

    async def stored():
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        info = await js.stream_info(stream)
        found = [await js.get_msg(stream, seq) for seq in range(1, info.state.messages + 1)]
        await nc.close()
        return [(m.subject, orjson.loads(m.data)["messageId"], m.headers["Nats-Msg-Id"])
                for m in found]  # fmt: skip

    async def drop():
        nc = await nats.connect("nats://127.0.0.1:4222")
        await nc.jetstream().delete_stream(stream)
        await nc.close()

    try:
        got = asyncio.run(stored())
        assert [g[1] for g in got] == [m["messageId"] for m in sent]
        assert got[0][0] == f"{subjects}.{world.ws}.track"
        assert got[1][0] == f"{subjects}.{world.ws}.identify"
        assert got[0][2].startswith("bus-")
        start = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert manage.replay(world.store, world.repo, world.ws, "bus", start=start, end=end) == 3
        asyncio.run(Dispatcher(world.store).drain(world.ws))
        assert len(asyncio.run(stored())) == 3  # the repeats were dropped by JetStream
        status = manage.status(world.store, world.ws, "bus")
        assert status["delivered"] == 6 and "duplicate" in status["last_response"]
    finally:
        asyncio.run(drop())


def test_an_unreachable_redis_or_nats_is_retried(world):
    manage.put(
        world.repo,
        world.ws,
        {
            "key": "cache",
            "type": "redis",
            "backoff": 60,
            "settings": {"url": "redis://127.0.0.1:9/0"},
        },
    )
    manage.put(
        world.repo,
        world.ws,
        {
            "key": "bus",
            "type": "nats",
            "backoff": 60,
            "settings": {"url": "nats://127.0.0.1:9", "timeout": 1},
        },
    )
    world.feed([order("ann", 20)])
    for key in ("cache", "bus"):
        queued = manage.queued(world.store, world.repo, world.ws, key)
        assert [q["status"] for q in queued] == ["retrying"], key


@pytest.mark.parametrize(("doc", "field"), [
    ({"type": "redis", "settings": {"url": "http://x"}}, "settings.url"),
    ({"type": "redis", "settings": {"prefix": "a:b"}}, "settings.prefix"),
    ({"type": "nats", "settings": {"stream": "a.b"}}, "settings.stream"),
    ({"type": "nats", "settings": {"url": "redis://x"}}, "settings.url"),
])  # fmt: skip
def test_bad_settings_are_refused(world, doc, field):
    with pytest.raises(Invalid) as bad:
        manage.put(world.repo, world.ws, {"key": "x", **doc})
    assert bad.value.field == f"destinations[0].{field}"
