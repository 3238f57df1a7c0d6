"""The admin API under /api/v1: bearer tokens carrying a workspace and scopes."""

from __future__ import annotations

import functools
from collections.abc import Callable

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api import workspace_file
from plait.govern import audit
from plait.log import LogBackend
from plait.log.tail import Tail, TailFilter
from plait.store.workspaces import Invalid, NotFound, TokenAuth, Workspaces


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def json_response(data, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    error = {"code": code, "message": message, **({"field": field} if field else {})}
    return json_response({"error": error}, status)


def limit_query(request: Request, default: int = 100, most: int = 1000) -> int:
    """The ``limit`` query parameter, 1 to ``most``."""
    text = request.query_params.get("limit", str(default))
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise ApiError(400, "invalid_field", f"must be between 1 and {most}", "limit")
    return int(text)


def endpoint(scope: str | None):
    """Authenticate the bearer token, check ``scope`` (None: any valid token), map domain
    errors to 4xx."""

    def wrap(handler: Callable):
        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            async def call() -> Response:
                return await handler(request, await _authenticate(request, scope))

            return await answer(call)

        return run

    return wrap


async def answer(call: Callable) -> Response:
    """``call``'s response, or the 4xx a domain error means (what every endpoint answers;
    a handler without a token, such as signing in, uses it alone)."""
    try:
        return await call()
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except Invalid as exc:
        return error_response(400, "invalid_field", exc.message, exc.field)
    except NotFound as exc:
        return error_response(404, "not_found", str(exc))


async def _authenticate(request: Request, scope: str | None) -> TokenAuth:
    header = request.headers.get("authorization", "")
    kind, _, secret = header.partition(" ")
    if kind.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "authentication_error", "send a token as 'Authorization: Bearer ...'")
    repo: Workspaces = request.app.state.workspaces
    auth = await run_in_threadpool(repo.authenticate_token, secret.strip())
    if auth is None:
        raise ApiError(401, "authentication_error", "unknown or revoked token")
    if scope is not None and not auth.allows(scope):
        raise ApiError(403, "forbidden", f"this token lacks the {scope!r} scope")
    return auth


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if len(body) > 1_000_000:
        raise ApiError(413, "body_too_large", "admin request bodies are limited to 1 MB")
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "body must be a JSON object")
    return data


def _repo(request: Request) -> Workspaces:
    return request.app.state.workspaces


async def _audit(request: Request, auth: TokenAuth, action: str, target: str, details: dict):
    def write() -> None:
        with _repo(request).engine.begin() as conn:
            audit.record(conn, auth.workspace_id, auth.actor, action, target, details)

    await run_in_threadpool(write)


def _opt_bool(data: dict, name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, "invalid_field", "must be true or false", name)
    return value


@endpoint("sources:read")
async def get_workspace(request: Request, auth: TokenAuth) -> Response:
    return json_response(await run_in_threadpool(_repo(request).get_workspace, auth.workspace_id))


@endpoint("sources:read")
async def list_sources(request: Request, auth: TokenAuth) -> Response:
    sources = await run_in_threadpool(_repo(request).list_sources, auth.workspace_id)
    return json_response({"sources": sources})


@endpoint("sources:write")
async def create_source(request: Request, auth: TokenAuth) -> Response:
    data = await _json_body(request)
    enabled = _opt_bool(data, "enabled")
    source, key = await run_in_threadpool(
        _repo(request).create_source,
        auth.workspace_id,
        data.get("name"),
        data.get("type", "http"),
        True if enabled is None else enabled,
    )
    return json_response({"source": source, "write_key": key}, 201)


@endpoint("sources:read")
async def get_source(request: Request, auth: TokenAuth) -> Response:
    repo, ref = _repo(request), request.path_params["ref"]
    source = await run_in_threadpool(repo.get_source, auth.workspace_id, ref)
    keys = await run_in_threadpool(repo.list_write_keys, auth.workspace_id, source["id"])
    return json_response({**source, "write_keys": keys})


@endpoint("sources:write")
async def update_source(request: Request, auth: TokenAuth) -> Response:
    data = await _json_body(request)
    unknown = set(data) - {"name", "type", "enabled"}
    if unknown:
        raise ApiError(
            400, "invalid_field", "only name, type and enabled change", sorted(unknown)[0]
        )
    _opt_bool(data, "enabled")
    source = await run_in_threadpool(
        functools.partial(
            _repo(request).update_source, auth.workspace_id, request.path_params["ref"], **data
        )  # fmt: skip
    )
    return json_response(source)


@endpoint("sources:write")
async def create_write_key(request: Request, auth: TokenAuth) -> Response:
    data = await _json_body(request)
    repo, ref = _repo(request), request.path_params["ref"]
    if _opt_bool(data, "rotate"):
        key, revoked = await run_in_threadpool(repo.rotate_write_key, auth.workspace_id, ref)
    else:
        key, revoked = await run_in_threadpool(repo.create_write_key, auth.workspace_id, ref), []
    return json_response({"write_key": key, "revoked": revoked}, 201)


@endpoint("sources:write")
async def revoke_write_key(request: Request, auth: TokenAuth) -> Response:
    params = request.path_params
    await run_in_threadpool(
        _repo(request).revoke_write_key, auth.workspace_id, params["ref"], params["key_id"]
    )
    return Response(status_code=204)


@endpoint("tokens:write")
async def list_tokens(request: Request, auth: TokenAuth) -> Response:
    tokens = await run_in_threadpool(_repo(request).list_tokens, auth.workspace_id)
    return json_response({"tokens": tokens})


@endpoint("tokens:write")
async def create_token(request: Request, auth: TokenAuth) -> Response:
    data = await _json_body(request)
    scopes = data.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ApiError(400, "invalid_field", "must be a list of scope names", "scopes")
    if not all(auth.allows(scope) for scope in scopes):  # no escalation: grant what you hold
        raise ApiError(403, "forbidden", "a token can only grant scopes it holds itself")
    name = data.get("name") or "token"
    record, secret = await run_in_threadpool(
        _repo(request).create_token, auth.workspace_id, str(name), scopes
    )
    await _audit(request, auth, "token.create", record["id"], {"scopes": record["scopes"]})
    return json_response({"token": record, "secret": secret}, 201)


@endpoint("tokens:write")
async def revoke_token(request: Request, auth: TokenAuth) -> Response:
    token_id = request.path_params["token_id"]
    await run_in_threadpool(_repo(request).revoke_token, auth.workspace_id, token_id)
    await _audit(request, auth, "token.revoke", token_id, {})
    return Response(status_code=204)


@endpoint("sources:read")
async def export_config(request: Request, auth: TokenAuth) -> Response:
    text = await run_in_threadpool(workspace_file.export, _repo(request), auth.workspace_id)
    return Response(text, media_type="application/yaml")


@endpoint("config:write")
async def apply_config(request: Request, auth: TokenAuth) -> Response:
    body = await request.body()
    if len(body) > 1_000_000:
        raise ApiError(413, "body_too_large", "a workspace file is limited to 1 MB")
    doc = workspace_file.parse(body.decode("utf-8", errors="replace"))
    repo = _repo(request)
    workspace = await run_in_threadpool(repo.get_workspace, auth.workspace_id)
    if doc["workspace"].get("slug") != workspace["slug"]:
        raise ApiError(403, "forbidden", "the file names another workspace than the token's",
                       "workspace.slug")  # fmt: skip
    prune = request.query_params.get("prune") in ("1", "true")

    result = await run_in_threadpool(
        workspace_file.apply, repo, doc, prune, request.app.state.keyring
    )
    if result.changed:
        details = {"created": result.created, "updated": result.updated,
                   "disabled": result.disabled}  # fmt: skip
        await _audit(request, auth, "config.apply", "workspace", details)
    return json_response(result.__dict__)


@endpoint("events:read")
async def read_events(request: Request, auth: TokenAuth) -> Response:
    """The workspace's log from an offset (``after=end``: from now on), filtered like
    ``plait tail`` (``type``, ``event`` globs, ``user``, ``source``; each may repeat): what
    `plait tail` and the console's live debugger read."""
    query = request.query_params
    log: LogBackend = request.app.state.log
    try:
        after = None if query.get("after") == "end" else int(query.get("after", 0))
        limit = min(int(query.get("limit", 100)), 1000)
    except ValueError:
        raise ApiError(400, "invalid_field", "after is an offset or 'end'; limit an integer",
                       "after") from None  # fmt: skip
    if limit < 1:  # a negative LIMIT is "no limit" to SQLite and an error to PostgreSQL
        raise ApiError(400, "invalid_field", "must be a positive integer", "limit")
    match = TailFilter.of(query.getlist("source"), query.getlist("type"),
                          query.getlist("event"), query.getlist("user"))  # fmt: skip
    tail = Tail(log, auth.workspace_id, match, after, page_size=limit)
    found, _ = await run_in_threadpool(tail.poll)
    events = [
        {"offset": e.record.offset, "source_id": e.record.source_id,
         "received_at": e.record.received_at, "message": e.message}
        for e in found
    ]  # fmt: skip
    return json_response({"events": events, "next_after": tail.position})


routes = [
    Route("/api/v1/workspace", get_workspace),
    Route("/api/v1/sources", list_sources, methods=["GET"]),
    Route("/api/v1/sources", create_source, methods=["POST"]),
    Route("/api/v1/sources/{ref}", get_source, methods=["GET"]),
    Route("/api/v1/sources/{ref}", update_source, methods=["PATCH"]),
    Route("/api/v1/sources/{ref}/keys", create_write_key, methods=["POST"]),
    Route("/api/v1/sources/{ref}/keys/{key_id}", revoke_write_key, methods=["DELETE"]),
    Route("/api/v1/tokens", list_tokens, methods=["GET"]),
    Route("/api/v1/tokens", create_token, methods=["POST"]),
    Route("/api/v1/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    Route("/api/v1/config", export_config, methods=["GET"]),
    Route("/api/v1/config", apply_config, methods=["PUT"]),
    Route("/api/v1/events", read_events, methods=["GET"]),
]
