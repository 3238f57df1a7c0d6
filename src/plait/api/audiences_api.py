"""Computed traits and audiences under /api/v1 (scopes ``audiences:read`` / ``audiences:write``):

    GET    /api/v1/audiences                       the audiences, with their sizes
    PUT    /api/v1/audiences/{key}                 {name, definition, emit}: create or replace
    GET    /api/v1/audiences/{key}                 definition (text and JSON), size, by day
    DELETE /api/v1/audiences/{key}
    GET    /api/v1/audiences/{key}/members?limit=&after=
    GET    /api/v1/audiences/{key}/history?limit=&profile_id=
    GET    /api/v1/audiences/vocabulary            events (with their properties) and traits seen
    POST   /api/v1/audiences/preview               {definition} -> size, sample, took_ms
    POST   /api/v1/audiences/parse                 {definition} -> JSON form and canonical text,
                                                   or 400 with line and column
    POST   /api/v1/audiences/reconcile             evaluate everything over the lake now
    GET    /api/v1/computed-traits, PUT/DELETE /api/v1/computed-traits/{key}
    GET    /api/v1/profiles/{ref}/audiences        a profile's audiences and computed traits

A definition is the audience language's text or its JSON form. A changed definition is
backfilled over the lake by the pipeline's scheduler within a second or so (or at once
with ``reconcile``).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import (
    ApiError,
    _audit,
    _json_body,
    _repo,
    endpoint,
    json_response,
    limit_query,
)
from plait.audiences import manage, scheduler
from plait.audiences.language import AudienceSyntaxError, from_json, parse, to_json, to_text
from plait.identity import graph_store
from plait.identity.explain import ProfileNotFound, find_profile
from plait.lake import LakeQueryError
from plait.store.workspaces import NotFound, TokenAuth


def _defs(request: Request, auth: TokenAuth):
    return manage.check(_repo(request), auth.workspace_id, {})


@endpoint("audiences:read")
async def list_audiences(request: Request, auth: TokenAuth) -> Response:
    store = request.app.state.store

    def run() -> list[dict[str, Any]]:
        defs = _defs(request, auth)
        with store.engine.connect() as conn:
            sizes = manage.sizes(conn, auth.workspace_id)
        return [
            {**manage.describe_audience(defs, key), "size": sizes.get(key, 0)}
            for key in defs.audiences
        ]

    return json_response({"audiences": await run_in_threadpool(run)})


@endpoint("audiences:read")
async def get_audience(request: Request, auth: TokenAuth) -> Response:
    store, key = request.app.state.store, request.path_params["key"]

    def run() -> dict[str, Any]:
        out = manage.describe_audience(_defs(request, auth), key)
        with store.engine.connect() as conn:
            out["size"] = manage.sizes(conn, auth.workspace_id).get(key, 0)
            out["by_day"] = manage.daily_counts(conn, auth.workspace_id, key)
        return out

    return json_response(await run_in_threadpool(run))


def _put(kind: str):
    async def put(request: Request, auth: TokenAuth) -> Response:
        body = await _json_body(request)
        key = request.path_params["key"]
        if body.get("key", key) != key:
            raise ApiError(400, "invalid_field", "differs from the key in the path", "key")
        doc = {**body, "key": key}
        changed = await run_in_threadpool(manage.put, _repo(request), auth.workspace_id, kind, doc)
        if changed:
            await _audit(request, auth, f"{kind}.put", key, {})
        return json_response({"key": key, "changed": changed})

    return endpoint("audiences:write")(put)


def _delete(kind: str):
    async def delete(request: Request, auth: TokenAuth) -> Response:
        key = request.path_params["key"]
        await run_in_threadpool(manage.delete, _repo(request), auth.workspace_id, kind, key)
        await _audit(request, auth, f"{kind}.delete", key, {})
        return json_response({"deleted": key})

    return endpoint("audiences:write")(delete)


@endpoint("audiences:read")
async def audience_members(request: Request, auth: TokenAuth) -> Response:
    store, key = request.app.state.store, request.path_params["key"]
    limit, after = limit_query(request), request.query_params.get("after", "")

    def run():
        if key not in _defs(request, auth).audiences:
            raise NotFound(f"no audience {key!r}")
        with store.engine.connect() as conn:
            return manage.members(conn, auth.workspace_id, key, limit, after)

    rows = await run_in_threadpool(run)
    return json_response({"members": rows, "next": rows[-1]["profile_id"] if len(rows) == limit
                          else None})  # fmt: skip


@endpoint("audiences:read")
async def audience_history(request: Request, auth: TokenAuth) -> Response:
    store, key = request.app.state.store, request.path_params["key"]
    limit, profile_id = limit_query(request), request.query_params.get("profile_id")

    def run():
        with store.engine.connect() as conn:
            return manage.history(conn, auth.workspace_id, key, limit, profile_id)

    return json_response({"history": await run_in_threadpool(run)})


def _definition(body: dict) -> Any:
    definition = body.get("definition")
    if not isinstance(definition, str | dict) or not definition:
        raise ApiError(400, "invalid_field", "the audience language's text or its JSON form",
                       "definition")  # fmt: skip
    return definition


@endpoint("audiences:read")
async def vocabulary(request: Request, auth: TokenAuth) -> Response:
    store = request.app.state.store

    def run():
        with store.engine.connect() as conn:
            found = manage.vocabulary(conn, auth.workspace_id)
        defs = _defs(request, auth)
        known = {"computed_traits": sorted(defs.traits), "audiences": sorted(defs.audiences)}
        return {**found, **known}

    return json_response(await run_in_threadpool(run))


@endpoint("audiences:read")
async def parse_definition(request: Request, auth: TokenAuth) -> Response:
    definition = _definition(await _json_body(request))
    try:
        tree = parse(definition) if isinstance(definition, str) else from_json(definition)
    except AudienceSyntaxError as exc:
        error = {"code": "invalid_definition", "message": exc.message, "field": "definition",
                 "line": exc.line, "column": exc.column}  # fmt: skip
        return json_response({"error": error}, 400)
    return json_response({"definition": to_text(tree), "definition_json": to_json(tree)})


@endpoint("audiences:read")
async def preview_audience(request: Request, auth: TokenAuth) -> Response:
    definition = _definition(await _json_body(request))
    settings, store = request.app.state.settings, request.app.state.store
    try:
        result = await run_in_threadpool(
            manage.preview, store, auth.workspace_id, settings.resolved_lake_dir(), definition,
            settings.lake_snapshot_seconds,
        )  # fmt: skip
    except LakeQueryError as exc:
        raise ApiError(400, "invalid_definition", str(exc), "definition") from None
    return json_response(result)


@endpoint("audiences:write")
async def reconcile_now(request: Request, auth: TokenAuth) -> Response:
    settings, store = request.app.state.settings, request.app.state.store
    report = await run_in_threadpool(
        scheduler.reconcile, store, auth.workspace_id, settings.resolved_lake_dir()
    )
    return json_response({"evaluated": report.evaluated, "entered": report.entered,
                          "exited": report.exited, "trait_changes": report.traits})  # fmt: skip


@endpoint("audiences:read")
async def list_traits(request: Request, auth: TokenAuth) -> Response:
    docs = await run_in_threadpool(manage.documents, _repo(request), auth.workspace_id)
    return json_response({"computed_traits": docs["computed_traits"]})


@endpoint("profiles:read")
async def profile_audiences(request: Request, auth: TokenAuth) -> Response:
    store = request.app.state.store

    def run():
        with store.engine.connect() as conn:
            rules = graph_store.load_rules(conn, auth.workspace_id)
            pid = find_profile(conn, auth.workspace_id, request.path_params["ref"], rules)
            return {"profile_id": pid, **manage.profile_audiences(conn, auth.workspace_id, pid)}

    try:
        return json_response(await run_in_threadpool(run))
    except ProfileNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None


routes = [
    Route("/api/v1/audiences", list_audiences, methods=["GET"]),
    Route("/api/v1/audiences/vocabulary", vocabulary, methods=["GET"]),
    Route("/api/v1/audiences/preview", preview_audience, methods=["POST"]),
    Route("/api/v1/audiences/parse", parse_definition, methods=["POST"]),
    Route("/api/v1/audiences/reconcile", reconcile_now, methods=["POST"]),
    Route("/api/v1/audiences/{key}", get_audience, methods=["GET"]),
    Route("/api/v1/audiences/{key}", _put("audience"), methods=["PUT"]),
    Route("/api/v1/audiences/{key}", _delete("audience"), methods=["DELETE"]),
    Route("/api/v1/audiences/{key}/members", audience_members, methods=["GET"]),
    Route("/api/v1/audiences/{key}/history", audience_history, methods=["GET"]),
    Route("/api/v1/computed-traits", list_traits, methods=["GET"]),
    Route("/api/v1/computed-traits/{key}", _put("computed_trait"), methods=["PUT"]),
    Route("/api/v1/computed-traits/{key}", _delete("computed_trait"), methods=["DELETE"]),
    Route("/api/v1/profiles/{ref:path}/audiences", profile_audiences, methods=["GET"]),
]
