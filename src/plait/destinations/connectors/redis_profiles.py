"""Redis: each person's traits and audience memberships kept in Redis, for real-time
personalization (a page reads them in a millisecond, without calling Plait).

Keys (``prefix`` defaults to ``plait``; ``<ws>`` is the workspace id):

    <prefix>:<ws>:profile:<profile id>     hash: trait -> its value as JSON text
                                           (identify traits, computed traits, audiences'
                                           flags); field ``_updated_at``: the last change (ms)
    <prefix>:<ws>:user:<user id>           string: the profile id of a user id
    <prefix>:<ws>:audiences:<profile id>   set: the audience keys the profile is in
    <prefix>:<ws>:audience:<audience key>  set: the audience's profile ids

Identify calls set traits (a null removes one); the audience step's messages (an identify
with ``context.personas.computation_class: audience``, or "Audience Entered" / "Audience
Exited") add and remove memberships; other messages only map their user id. A batch is
one pipelined transaction (MULTI/EXEC); ``ttl_days`` lets a profile's keys expire after
that long without a change. Writes are idempotent: a message applied twice leaves the same
state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from plait.destinations.connectors.base import (
    Connector,
    Item,
    Outcome,
    Setting,
    known_settings,
    memberships,
)
from plait.store.workspaces import Invalid

SETTINGS = {
    "url": Setting(example="redis://127.0.0.1:6379/0"),
    "prefix": Setting(example="plait"),
    "ttl_days": Setting("number", example=30, about="days a profile's keys live"),
}


def keys(prefix: str, workspace_id: str) -> dict[str, str]:
    """The key patterns (``{}`` is the profile id, user id or audience key)."""
    base = f"{prefix}:{workspace_id}"
    return {"profile": f"{base}:profile:{{}}", "user": f"{base}:user:{{}}",
            "audiences": f"{base}:audiences:{{}}", "audience": f"{base}:audience:{{}}"}  # fmt: skip


def changes(msg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bool]]:
    """(traits to set, None to remove; audience key -> inside) a message carries."""
    traits = msg.get("traits") if msg.get("type") == "identify" else None
    return (dict(traits) if isinstance(traits, dict) else {}), memberships(msg)


class RedisProfiles(Connector):
    name = "redis"
    max_batch = 5000
    default_batch = 500
    secrets = ("url",)

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int], aioredis.Redis] = {}

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        url = settings.get("url", "redis://127.0.0.1:6379/0")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise Invalid(f"{where}.url", "a redis://, rediss:// or unix:// URL")
        prefix = settings.get("prefix", "plait")
        if not isinstance(prefix, str) or not prefix or any(c in prefix for c in " :"):
            raise Invalid(f"{where}.prefix", "a non-empty name without spaces or ':'")
        ttl = settings.get("ttl_days")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or ttl <= 0):  # fmt: skip
            raise Invalid(f"{where}.ttl_days", "a number of days, more than 0")
        return {"url": url, "prefix": prefix, "ttl_days": ttl}

    def _client(self, url: str) -> aioredis.Redis:
        # A client belongs to the event loop it was made in.
        at = (url, id(asyncio.get_running_loop()))
        if at not in self._clients:
            self._clients[at] = aioredis.Redis.from_url(url, socket_timeout=5,
                                                        socket_connect_timeout=5)  # fmt: skip
        return self._clients[at]

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        db = self._client(settings["url"])
        k = keys(settings["prefix"], workspace_id)
        now = str(int(time.time() * 1000))
        ttl = int(settings["ttl_days"] * 86400) if settings["ttl_days"] else None
        pipe = db.pipeline(transaction=True)
        for item in items:
            msg = item.message
            pid = item.profile_id
            if pid is None:
                continue
            if msg.get("userId") is not None:
                pipe.set(k["user"].format(msg["userId"]), pid, ex=ttl)
            traits, audiences = changes(msg)
            profile = k["profile"].format(pid)
            gone = [t for t, v in traits.items() if v is None]
            kept = {t: orjson.dumps(v) for t, v in traits.items() if v is not None}
            if gone:
                pipe.hdel(profile, *gone)
            if kept or gone or audiences:
                pipe.hset(profile, mapping={**kept, "_updated_at": now})
            for key, inside in audiences.items():
                if inside:
                    pipe.sadd(k["audiences"].format(pid), key)
                    pipe.sadd(k["audience"].format(key), pid)
                else:
                    pipe.srem(k["audiences"].format(pid), key)
                    pipe.srem(k["audience"].format(key), pid)
            if ttl:
                pipe.expire(profile, ttl)
                pipe.expire(k["audiences"].format(pid), ttl)
        try:
            await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            return [Outcome(False, retry=True, response=f"{type(exc).__name__}: {exc}"[:1000])
                    ] * len(items)  # fmt: skip
        except RedisError as exc:
            return [Outcome(False, response=f"{type(exc).__name__}: {exc}"[:1000])] * len(items)
        return [Outcome(True)] * len(items)
