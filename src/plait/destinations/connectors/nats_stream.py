"""NATS JetStream: each message published to a stream, as JSON, on the subject
``<subject_prefix>.<workspace id>.<type>`` (``plait.ws_….track``), with its delivery key as
``Nats-Msg-Id``: JetStream drops a repeat within the stream's duplicate window, so a
message sent again after a crash is stored once. Each publish waits for the stream's ack.
The stream (``stream``, default ``PLAIT``, on ``<subject_prefix>.>``) is created when
missing unless ``create_stream: false``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import nats
from nats import errors as nats_errors
from nats.js import errors as js_errors

from plait.destinations.connectors.base import Connector, Item, Outcome, Setting, known_settings
from plait.store.workspaces import Invalid

SETTINGS = {
    "url": Setting(example="nats://127.0.0.1:4222"),
    "stream": Setting(example="PLAIT"),
    "subject_prefix": Setting(example="plait", about="subjects: <prefix>.<type>"),
    "create_stream": Setting("boolean", example=True),
    "timeout": Setting("number", example=5, about="seconds"),
}
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
RETRYABLE = (nats_errors.TimeoutError, nats_errors.ConnectionClosedError,
             nats_errors.NoServersError, nats_errors.OutboundBufferLimitError, OSError,
             asyncio.TimeoutError)  # fmt: skip


class NatsStream(Connector):
    name = "nats"
    max_batch = 5000
    default_batch = 200

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int], Any] = {}
        self._streams: set[tuple[str, int, str]] = set()

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        url = settings.get("url", "nats://127.0.0.1:4222")
        if not isinstance(url, str) or not url.startswith(("nats://", "tls://")):
            raise Invalid(f"{where}.url", "a nats:// or tls:// URL")
        stream = settings.get("stream", "PLAIT")
        prefix = settings.get("subject_prefix", "plait")
        for name, value in (("stream", stream), ("subject_prefix", prefix)):
            if not isinstance(value, str) or not _TOKEN.match(value):
                raise Invalid(f"{where}.{name}", "letters, digits, _ and - only")
        create = settings.get("create_stream", True)
        if not isinstance(create, bool):
            raise Invalid(f"{where}.create_stream", "must be true or false")
        timeout = settings.get("timeout", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise Invalid(f"{where}.timeout", "seconds, more than 0")
        return {"url": url, "stream": stream, "subject_prefix": prefix, "create_stream": create,
                "timeout": float(timeout)}  # fmt: skip

    async def _js(self, settings: dict[str, Any]):
        loop = id(asyncio.get_running_loop())  # a client belongs to its event loop
        at = (settings["url"], loop)
        nc = self._clients.get(at)
        if nc is None or nc.is_closed:
            nc = await nats.connect(settings["url"], connect_timeout=settings["timeout"],
                                    max_reconnect_attempts=2, allow_reconnect=True)  # fmt: skip
            self._clients[at] = nc
        js = nc.jetstream(timeout=settings["timeout"])
        stream = (settings["url"], loop, settings["stream"])
        if settings["create_stream"] and stream not in self._streams:
            try:
                await js.stream_info(settings["stream"])
            except js_errors.NotFoundError:
                await js.add_stream(name=settings["stream"],
                                    subjects=[f"{settings['subject_prefix']}.>"])  # fmt: skip
            self._streams.add(stream)
        return js

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        try:
            js = await self._js(settings)
        except RETRYABLE as exc:
            return [Outcome(False, retry=True, response=f"connect: {exc!r}"[:1000])] * len(items)
        except nats_errors.Error as exc:
            return [Outcome(False, response=f"{type(exc).__name__}: {exc}"[:1000])] * len(items)

        async def publish(item: Item) -> Outcome:
            kind = item.message.get("type") or "message"
            subject = f"{settings['subject_prefix']}.{workspace_id}.{kind}"
            try:
                ack = await js.publish(subject, item.raw, headers={"Nats-Msg-Id": item.key})
            except RETRYABLE as exc:
                return Outcome(False, retry=True, response=f"{type(exc).__name__}: {exc}"[:1000])
            except nats_errors.Error as exc:  # no stream for the subject, a refused message
                return Outcome(False, response=f"{type(exc).__name__}: {exc}"[:1000])
            repeat = " (a duplicate: stored before)" if ack.duplicate else ""
            return Outcome(True, response=f"{ack.stream} #{ack.seq}{repeat}")

        return list(await asyncio.gather(*(publish(item) for item in items)))
