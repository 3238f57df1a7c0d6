"""Reverse ETL syncs under /api/v1 (scopes ``syncs:read`` / ``syncs:write``):

GET    /api/v1/syncs               every sync with its last run
PUT    /api/v1/syncs/{key}         create or replace (checked whole)
GET    /api/v1/syncs/{key}         definition (the database password masked) and last run
DELETE /api/v1/syncs/{key}         it and its cursor
POST   /api/v1/syncs/{key}/run     run it now ({"full": true}: from the first row)
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait import reverse_etl
from plait.api.admin import ApiError, _audit, _json_body, _repo, endpoint, json_response
from plait.store.workspaces import NotFound, TokenAuth


def describe(repo, workspace_id: str, key: str) -> dict:
    doc = next((d for d in reverse_etl.documents(repo, workspace_id) if d.get("key") == key),
               None)  # fmt: skip
    if doc is None:
        raise NotFound(f"no sync {key!r}")
    return {**reverse_etl.masked(doc), "status": reverse_etl.status(repo.store, workspace_id, key)}


@endpoint("syncs:read")
async def list_syncs(request: Request, auth: TokenAuth) -> Response:
    repo = _repo(request)

    def run():
        return [describe(repo, auth.workspace_id, d["key"])
                for d in reverse_etl.documents(repo, auth.workspace_id)]  # fmt: skip

    return json_response({"syncs": await run_in_threadpool(run)})


@endpoint("syncs:read")
async def get_sync(request: Request, auth: TokenAuth) -> Response:
    found = await run_in_threadpool(describe, _repo(request), auth.workspace_id,
                                    request.path_params["key"])  # fmt: skip
    return json_response(found)


@endpoint("syncs:write")
async def put_sync(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    key = request.path_params["key"]
    if body.get("key", key) != key:
        raise ApiError(400, "invalid_field", "differs from the key in the path", "key")
    changed = await run_in_threadpool(reverse_etl.put, _repo(request), auth.workspace_id,
                                      {**body, "key": key})  # fmt: skip
    if changed:
        await _audit(request, auth, "sync.put", key, {})
    return json_response({"key": key, "changed": changed})


@endpoint("syncs:write")
async def delete_sync(request: Request, auth: TokenAuth) -> Response:
    key = request.path_params["key"]
    await run_in_threadpool(reverse_etl.delete, _repo(request), auth.workspace_id, key)
    await _audit(request, auth, "sync.delete", key, {})
    return json_response({"deleted": key})


@endpoint("syncs:write")
async def run_sync(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request) if await request.body() else {}
    full = body.get("full", False)
    if not isinstance(full, bool):
        raise ApiError(400, "invalid_field", "must be true or false", "full")
    key = request.path_params["key"]
    lake_dir = request.app.state.settings.resolved_lake_dir()
    try:
        result = await run_in_threadpool(reverse_etl.run, request.app.state.store,
                                         auth.workspace_id, key, lake_dir, full)  # fmt: skip
    except reverse_etl.SyncError as exc:
        raise ApiError(409 if "running already" in str(exc) else 422, "sync_failed",
                       str(exc)) from None  # fmt: skip
    await _audit(request, auth, "sync.run", key, {"rows": result.rows, "full": full})
    return json_response({"key": key, "rows": result.rows, "sent": result.sent,
                          "repeats": result.repeats, "rejected": result.rejected,
                          "rejections": result.rejections})  # fmt: skip


routes = [
    Route("/api/v1/syncs", list_syncs, methods=["GET"]),
    Route("/api/v1/syncs/{key}", get_sync, methods=["GET"]),
    Route("/api/v1/syncs/{key}", put_sync, methods=["PUT"]),
    Route("/api/v1/syncs/{key}", delete_sync, methods=["DELETE"]),
    Route("/api/v1/syncs/{key}/run", run_sync, methods=["POST"]),
]
