"""Destinations under /api/v1 (scopes ``destinations:read`` / ``destinations:write``):

GET    /api/v1/destinations                          every destination, with its status
PUT    /api/v1/destinations/{key}                    create or replace (checked whole)
GET    /api/v1/destinations/{key}                    definition (secrets masked), status
DELETE /api/v1/destinations/{key}                    it, its queue and its counters
GET    /api/v1/destinations/{key}/deliveries?status=retrying|waiting|failed&limit=&after=
POST   /api/v1/destinations/{key}/replay             {"dead_letters": true} or
                                                     {"start": ISO, "end": ISO}
POST   /api/v1/destinations/{key}/discard            forget the dead letters
GET    /api/v1/destinations/{key}/mapping            its own transformations (and shared ones)
PUT    /api/v1/destinations/{key}/mapping            {"mapping": [...]} replaces its own ones
                                                     (governance:read / governance:write)
POST   /api/v1/destinations/preview                  {destination, log_offset?, mapping?}: what
                                                     it would receive of a recent message
                                                     (nothing sent; mapping: unsaved ones)
GET    /api/v1/destination-types                     the connectors: type, secrets, batching
GET    /api/v1/deliveries/{message_id}               a message's status at each destination
"""

from __future__ import annotations

import sys

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
from plait.api.governance_api import change_governance
from plait.destinations import manage
from plait.destinations.connectors import CONNECTORS
from plait.destinations.preview import preview
from plait.store.workspaces import TokenAuth


@endpoint("destinations:read")
async def list_destinations(request: Request, auth: TokenAuth) -> Response:
    store, repo = request.app.state.store, _repo(request)

    def run():
        return [manage.describe(store, repo, auth.workspace_id, d["key"])
                for d in manage.documents(repo, auth.workspace_id)]  # fmt: skip

    return json_response({"destinations": await run_in_threadpool(run)})


@endpoint("destinations:read")
async def get_destination(request: Request, auth: TokenAuth) -> Response:
    key = request.path_params["key"]
    found = await run_in_threadpool(manage.describe, request.app.state.store, _repo(request),
                                    auth.workspace_id, key)  # fmt: skip
    return json_response(found)


@endpoint("destinations:write")
async def put_destination(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    key = request.path_params["key"]
    if body.get("key", key) != key:
        raise ApiError(400, "invalid_field", "differs from the key in the path", "key")
    changed = await run_in_threadpool(manage.put, _repo(request), auth.workspace_id,
                                      {**body, "key": key})  # fmt: skip
    if changed:
        await _audit(request, auth, "destination.put", key, {})
    return json_response({"key": key, "changed": changed})


@endpoint("destinations:write")
async def delete_destination(request: Request, auth: TokenAuth) -> Response:
    key = request.path_params["key"]
    await run_in_threadpool(manage.delete, _repo(request), request.app.state.store,
                            auth.workspace_id, key)  # fmt: skip
    await _audit(request, auth, "destination.delete", key, {})
    return json_response({"deleted": key})


@endpoint("destinations:read")
async def list_deliveries(request: Request, auth: TokenAuth) -> Response:
    key = request.path_params["key"]
    limit = limit_query(request)
    after = request.query_params.get("after", "0")
    if not after.isdigit():
        raise ApiError(400, "invalid_field", "the id of the last delivery of a page", "after")
    rows = await run_in_threadpool(
        manage.queued, request.app.state.store, _repo(request), auth.workspace_id, key,
        request.query_params.get("status"), limit, int(after),
    )  # fmt: skip
    return json_response({"deliveries": rows,
                          "next": rows[-1]["id"] if len(rows) == limit else None})  # fmt: skip


@endpoint("destinations:write")
async def replay(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    key = request.path_params["key"]
    dead = body.get("dead_letters", False)
    if not isinstance(dead, bool):
        raise ApiError(400, "invalid_field", "must be true or false", "dead_letters")
    queued = await run_in_threadpool(
        lambda: manage.replay(request.app.state.store, _repo(request), auth.workspace_id, key,
                              dead_letters=dead, start=body.get("start"), end=body.get("end"))
    )  # fmt: skip
    await _audit(request, auth, "destination.replay", key, {"queued": queued})
    return json_response({"queued": queued})


@endpoint("destinations:write")
async def discard(request: Request, auth: TokenAuth) -> Response:
    key = request.path_params["key"]
    gone = await run_in_threadpool(manage.discard, request.app.state.store, _repo(request),
                                   auth.workspace_id, key)  # fmt: skip
    await _audit(request, auth, "destination.discard", key, {"discarded": gone})
    return json_response({"discarded": gone})


@endpoint("destinations:read")
async def message_deliveries(request: Request, auth: TokenAuth) -> Response:
    found = await run_in_threadpool(manage.message_status, request.app.state.store,
                                    _repo(request), auth.workspace_id,
                                    request.path_params["message_id"])  # fmt: skip
    return json_response(found)


def _first_paragraph(text: str | None) -> list[str]:
    return (text or "").strip().split("\n\n")[0].replace("``", "").split()


@endpoint("destinations:read")
async def destination_types(request: Request, auth: TokenAuth) -> Response:
    def kind(name: str, c) -> dict:
        module = sys.modules[type(c).__module__]  # its docstring and SETTINGS describe it
        return {"type": name, "about": " ".join(_first_paragraph(module.__doc__)),
                "settings": [s.describe(k, k in c.secrets) for k, s in module.SETTINGS.items()],
                "secrets": list(c.secrets),
                "default_batch": c.default_batch, "max_batch": c.max_batch,
                "types": sorted(c.types) if c.types else None, "deletes": c.deletes}  # fmt: skip

    kinds = [kind(name, c) for name, c in CONNECTORS.items()]
    return json_response({"types": kinds})


@endpoint("destinations:read")
async def preview_destination(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    doc, offset = body.get("destination"), body.get("log_offset")
    if not isinstance(doc, dict):
        raise ApiError(400, "invalid_field", "a destination's definition (an object)",
                       "destination")  # fmt: skip
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)):
        raise ApiError(400, "invalid_field", "a log offset (an integer)", "log_offset")
    mapping = body.get("mapping")
    if mapping is not None and not isinstance(mapping, list):
        raise ApiError(400, "invalid_field", "a list of transformations", "mapping")
    repo = _repo(request)
    # A secret shown masked (the console edits what GET answered) is the stored one.
    doc = manage.unmasked({"key": "preview", **doc}, manage.documents(repo, auth.workspace_id))
    try:
        found = await run_in_threadpool(preview, repo.store, auth.workspace_id, doc, offset,
                                        mapping)  # fmt: skip
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return json_response(found)


@endpoint("governance:read")
async def get_mapping(request: Request, auth: TokenAuth) -> Response:
    found = await run_in_threadpool(manage.mapping, _repo(request), auth.workspace_id,
                                    request.path_params["key"])  # fmt: skip
    return json_response(found)


@endpoint("governance:write")
async def put_mapping(request: Request, auth: TokenAuth) -> Response:
    """A destination's mapping is transformations: saved (checked whole, audited) as a
    change of the workspace's ``transformations``."""
    body = await _json_body(request)
    if "mapping" not in body:
        raise ApiError(400, "invalid_field", 'send {"mapping": [...]}', "mapping")
    repo, key = _repo(request), request.path_params["key"]

    def put() -> dict:
        docs = manage.with_mapping(repo, auth.workspace_id, key, body["mapping"])
        changed = change_governance(request, auth, {"transformations": docs},
                                    "destination.mapping.put")  # fmt: skip
        return {**manage.mapping(repo, auth.workspace_id, key), "changed": bool(changed)}

    return json_response(await run_in_threadpool(put))


routes = [
    Route("/api/v1/destinations", list_destinations, methods=["GET"]),
    Route("/api/v1/destinations/preview", preview_destination, methods=["POST"]),
    Route("/api/v1/destinations/{key}", get_destination, methods=["GET"]),
    Route("/api/v1/destinations/{key}", put_destination, methods=["PUT"]),
    Route("/api/v1/destinations/{key}", delete_destination, methods=["DELETE"]),
    Route("/api/v1/destinations/{key}/mapping", get_mapping, methods=["GET"]),
    Route("/api/v1/destinations/{key}/mapping", put_mapping, methods=["PUT"]),
    Route("/api/v1/destinations/{key}/deliveries", list_deliveries, methods=["GET"]),
    Route("/api/v1/destinations/{key}/replay", replay, methods=["POST"]),
    Route("/api/v1/destinations/{key}/discard", discard, methods=["POST"]),
    Route("/api/v1/deliveries/{message_id}", message_deliveries, methods=["GET"]),
    Route("/api/v1/destination-types", destination_types, methods=["GET"]),
]
