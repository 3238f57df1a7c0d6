"""The Segment-compatible collection endpoints, as a plain ASGI app: this is the hot path,
so it skips a framework's routing and request objects."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import orjson

from plait.collect.bodies import BodyError, decompress, parse_json, read_body
from plait.collect.guard import SUPPRESSED, IngestGuards
from plait.collect.ingest import Prepared, prepare
from plait.collect.keys import WriteKeyCache
from plait.log import LogWriter, Overloaded
from plait.observability import MESSAGES_ACCEPTED, MESSAGES_REJECTED, REQUEST_SECONDS
from plait.spec import MAX_BATCH_MESSAGES, MESSAGE_TYPES, Enrichment
from plait.spec.timestamps import now_utc, parse_timestamp
from plait.store.workspaces import SourceAuth

logger = logging.getLogger("plait.collect")

_SHORT = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group", "a": "alias"}
ROUTES: dict[str, str] = {f"/v1/{t}": t for t in MESSAGE_TYPES}
ROUTES |= {f"/v1/{short}": t for short, t in _SHORT.items()}
ROUTES |= {"/v1/batch": "batch", "/v1/import": "batch", "/v1/b": "batch"}
_SETTINGS_PATH = re.compile(r"^/v1/projects/([^/]+)/settings/?$")
_PIXEL_PATH = re.compile(r"^/v1/pixel/([a-z]+)/?$")

# The smallest transparent GIF, answered to every pixel request, even a bad one.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_OK = orjson.dumps({"success": True})
# A single message's rejection: 400 unless said here (SDKs do not retry a 4xx).
_REJECTION_STATUS = {"message_too_large": 413, SUPPRESSED: 403}


class CollectError(Exception):
    def __init__(
        self, status: int, code: str, message: str, field: str | None = None,
        counted: bool = False, **extra,
    ):  # fmt: skip
        super().__init__(message)
        self.status = status
        self.code = code
        self.counted = counted  # already in the rejected-messages metric
        self.body = {"code": code, "message": message, **({"field": field} if field else {})}
        self.body.update(extra)


def _headers(scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def _cors(headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    origin = headers.get(b"origin")
    if not origin:
        return [(b"access-control-allow-origin", b"*")]
    # No allow-credentials: the SDKs send the write key in a header, never cookies.
    return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]


async def _send(send, status: int, body: bytes, headers: list, content_type=b"application/json"):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


# prometheus_client's labels() checks and locks on every call: the hot path keeps the
# children it was given (few: routes x statuses, sources x message types).
@lru_cache(maxsize=4096)
def _request_seconds(route: str, status: str):
    return REQUEST_SECONDS.labels(route, status)


@lru_cache(maxsize=4096)
def _messages_accepted(source_id: str, msg_type: str):
    return MESSAGES_ACCEPTED.labels(source_id, msg_type)


def _basic_username(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(b"authorization")
    return _basic_username_of(value) if value else None


@lru_cache(maxsize=1024)  # an SDK sends the same header with every request
def _basic_username_of(value: bytes) -> str | None:
    if not value[:6].lower() == b"basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def _client_ip(scope, headers: dict[bytes, bytes], trust_forwarded: bool) -> str | None:
    if trust_forwarded and (forwarded := headers.get(b"x-forwarded-for")):
        return forwarded.split(b",")[0].strip().decode("latin-1")
    client = scope.get("client")
    return client[0] if client else None


class CollectApp:
    def __init__(
        self,
        writer: LogWriter,
        keys: WriteKeyCache,
        public_url: str = "",
        trust_forwarded_for: bool = False,
        guards: IngestGuards | None = None,
    ):
        self.writer = writer
        self.keys = keys
        self.guards = guards
        self.public_url = public_url.rstrip("/")
        self.trust_forwarded_for = trust_forwarded_for

    async def __call__(self, scope, receive, send) -> None:
        path, method = scope["path"], scope["method"]
        headers = _headers(scope)
        cors = _cors(headers)
        if method == "OPTIONS":
            await self._preflight(send, headers, cors)
            return
        route = ROUTES.get(path.rstrip("/"))
        if route is not None and method == "POST":
            await self._post(scope, receive, send, route, headers, cors)
        elif (match := _PIXEL_PATH.match(path)) and method == "GET":
            await self._pixel(scope, send, match.group(1), headers, cors)
        elif (match := _SETTINGS_PATH.match(path)) and method == "GET":
            await self._settings(scope, send, match.group(1), headers, cors)
        else:
            body = {"code": "not_found", "message": f"no endpoint {method} {path}"}
            await _send(send, 404, orjson.dumps({"success": False, "error": body}), cors)

    async def _preflight(self, send, headers, cors) -> None:
        requested = headers.get(b"access-control-request-headers")
        allow = requested or b"Content-Type, Authorization, Content-Encoding"
        preflight = [
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", allow),
            (b"access-control-max-age", b"86400"),
        ]
        await _send(send, 204, b"", cors + preflight)

    # POST /v1/<type> and batches -------------------------------------------------------

    async def _post(self, scope, receive, send, route, headers, cors) -> None:
        started = time.perf_counter()
        source = "unknown"
        status = 200
        try:
            body = await read_body(receive)
            body = decompress(body, headers.get(b"content-encoding", b"").decode("latin-1"))
            payload = parse_json(body)
            if not isinstance(payload, dict):
                raise CollectError(400, "invalid_body", "body must be a JSON object")
            auth = self._authenticate(_basic_username(headers) or payload.get("writeKey"))
            source = auth.source_id
            prepared, received = self._prepare(scope, headers, route, payload, auth)
            # Drop the parsed messages before waiting for the commit, so they die young:
            # held across the wait they were promoted to the old GC generation, and full
            # collections over them cost the event loop more than parsing them did.
            del payload
            result = await self._commit(route, auth, prepared, received)
            response = _OK if result is None else orjson.dumps(result)
        except (BodyError, CollectError) as exc:
            status, response = self._refusal(exc, source)
        await _send(send, status, response, cors + self._retry_after(status))
        _request_seconds(route, str(status)).observe(time.perf_counter() - started)

    def _authenticate(self, write_key: Any) -> SourceAuth:
        if not isinstance(write_key, str) or not write_key:
            hint = "send the write key as the Basic-auth username or as writeKey"
            raise CollectError(401, "missing_write_key", hint)
        auth = self.keys.lookup(write_key)
        if auth is None:
            raise CollectError(401, "invalid_write_key", "unknown or revoked write key")
        if not auth.enabled:
            raise CollectError(401, "source_disabled", "this source is disabled")
        return auth

    async def _ingest(self, scope, headers, route, payload, auth) -> dict | None:
        """Commit the request's valid messages; returns the response body when some were
        rejected (None means plain success)."""
        prepared, received = self._prepare(scope, headers, route, payload, auth)
        return await self._commit(route, auth, prepared, received)

    def _prepare(self, scope, headers, route, payload, auth) -> tuple[Prepared, int]:
        """Validate and enrich the request's messages; returns them as log rows (and the
        rejected ones) with the number of messages received."""
        if route == "batch":
            messages = payload.get("batch")
            if not isinstance(messages, list):
                raise CollectError(400, "invalid_field", "must be an array of messages", "batch")
            if len(messages) > MAX_BATCH_MESSAGES:
                limit = f"a batch holds at most {MAX_BATCH_MESSAGES} messages"
                raise CollectError(413, "batch_too_large", limit)
            env = self._enrichment(scope, headers, auth, payload)
            msg_type = None
        else:
            messages = [payload]
            env = self._enrichment(scope, headers, auth, None)
            msg_type = route
        guard = self.guards.for_source(auth.workspace_id, auth.source_id) if self.guards else None
        prepared = prepare(messages, msg_type, env, guard)
        if prepared.rejected:
            for item in prepared.rejected:
                MESSAGES_REJECTED.labels(auth.source_id, item["code"]).inc()
            if route != "batch":
                err = prepared.rejected[0]
                status = _REJECTION_STATUS.get(err["code"], 400)
                raise CollectError(status, err["code"], err["message"], err["field"], True)
        return prepared, len(messages)

    async def _commit(self, route, auth, prepared: Prepared, received: int) -> dict | None:
        if prepared.rows:
            try:
                await self.writer.append(prepared.rows)
            except Overloaded:
                raise CollectError(
                    429, "overloaded", "too many messages in flight; retry"
                ) from None
            except Exception:
                logger.exception("log append failed")
                retry = "the log could not commit the messages; retry"
                raise CollectError(503, "log_unavailable", retry) from None
            for msg_type_name, count in prepared.types.items():
                _messages_accepted(auth.source_id, msg_type_name).inc(count)
        if not prepared.rejected:
            return None
        accepted = received - len(prepared.rejected)
        if accepted == 0:
            raise CollectError(400, "all_rejected", "every message in the batch was rejected",
                               counted=True, rejected=prepared.rejected)  # fmt: skip
        return {"success": True, "accepted": accepted, "rejected": prepared.rejected}

    def _enrichment(self, scope, headers, auth: SourceAuth, batch: dict | None) -> Enrichment:
        sent_at = context = integrations = None
        if batch is not None:
            if (raw := batch.get("sentAt")) is not None:
                try:
                    sent_at = parse_timestamp(raw)
                except ValueError:
                    raise CollectError(400, "invalid_field", "must be an ISO-8601 timestamp",
                                       "sentAt") from None  # fmt: skip
            context, integrations = batch.get("context"), batch.get("integrations")
            for name, value in (("context", context), ("integrations", integrations)):
                if value is not None and not isinstance(value, dict):
                    raise CollectError(400, "invalid_field", "must be an object", name)
        return Enrichment(
            received_at=now_utc(),
            workspace_id=auth.workspace_id,
            source_id=auth.source_id,
            ip=_client_ip(scope, headers, self.trust_forwarded_for),
            sent_at=sent_at,
            batch_context=context,
            batch_integrations=integrations,
        )

    def _refusal(self, exc: BodyError | CollectError, source: str) -> tuple[int, bytes]:
        if isinstance(exc, BodyError):
            error = {"code": exc.code, "message": exc.message}
        else:
            error = exc.body
        if not getattr(exc, "counted", False):
            MESSAGES_REJECTED.labels(source, exc.code).inc()
        # code and message also at the top level, where Segment's API puts them: the
        # Python SDKs read them there (rudder-sdk-python raised KeyError, and retried a
        # 4xx like a network error, when they were missing).
        body = {"success": False, "code": error["code"], "message": error["message"]}
        return exc.status, orjson.dumps({**body, "error": error})

    @staticmethod
    def _retry_after(status: int) -> list:
        return [(b"retry-after", b"1")] if status in (429, 503) else []

    # GET /v1/pixel/<type> ---------------------------------------------------------------

    async def _pixel(self, scope, send, msg_type, headers, cors) -> None:
        """Always a GIF (an email client shows nothing else); errors are counted."""
        started = time.perf_counter()
        source, code = "unknown", "ok"
        try:
            if msg_type not in MESSAGE_TYPES:
                raise CollectError(404, "unknown_type", f"no message type {msg_type!r}")
            message = pixel_message(scope.get("query_string", b"").decode("latin-1"))
            auth = self._authenticate(message.pop("writeKey", None))
            source = auth.source_id
            await self._ingest(scope, headers, msg_type, message, auth)
        except (BodyError, CollectError) as exc:
            code = exc.code
            if not getattr(exc, "counted", False):
                MESSAGES_REJECTED.labels(source, code).inc()
        await _send(send, 200, PIXEL_GIF,
                    [*cors, (b"cache-control", b"no-store, max-age=0")], b"image/gif")  # fmt: skip
        _request_seconds("pixel", code).observe(time.perf_counter() - started)

    # GET /v1/projects/<writeKey>/settings -----------------------------------------------

    async def _settings(self, scope, send, write_key, headers, cors) -> None:
        auth = self.keys.lookup(write_key)
        if auth is None or not auth.enabled:
            error = {
                "code": "invalid_write_key",
                "message": "unknown, revoked or disabled write key",
            }
            await _send(send, 404, orjson.dumps({"success": False, "error": error}), cors)
            return
        if self.public_url:
            scheme, _, host = self.public_url.partition("://")
        else:
            scheme = headers.get(
                b"x-forwarded-proto", scope.get("scheme", "http").encode()
            ).decode()
            host = headers.get(b"host", b"localhost").decode("latin-1")
        await _send(send, 200, orjson.dumps(settings_document(write_key, host, scheme)),
                    [*cors, (b"cache-control", b"public, max-age=60")])  # fmt: skip


def settings_document(write_key: str, host: str, scheme: str) -> dict[str, Any]:
    """What @segment/analytics-next loads from ``{cdnURL}/v1/projects/{writeKey}/settings``:
    the Segment.io integration pointed at this server, and no device-mode destinations."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def pixel_message(query: str) -> dict[str, Any]:
    """The pixel's message: ``data`` as base64 JSON, or flat parameters with dotted paths
    (``properties.subject=Hi`` becomes ``{"properties": {"subject": "Hi"}}``)."""
    params = parse_qsl(query, keep_blank_values=True)
    data = dict(params).get("data")
    if data is not None:
        try:
            # A space is a '+' pasted into a URL without encoding: base64 has no spaces.
            data = data.replace(" ", "-").replace("+", "-").replace("/", "_")
            raw = base64.urlsafe_b64decode(data + "==")
        except (binascii.Error, ValueError):
            raise CollectError(400, "invalid_data", "data is not base64") from None
        message = parse_json(raw)
        if not isinstance(message, dict):
            raise CollectError(400, "invalid_data", "data must encode a JSON object")
        return message
    message: dict[str, Any] = {}
    for key, value in params:
        *parents, leaf = key.split(".")
        node = message
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CollectError(
                    400, "invalid_field", f"{part} is both a value and an object", key
                )
            node = child
        node[leaf] = value
    return message
