"""Privacy under /api/v1: Segment's regulations API, access requests, the audit log.

    POST /api/v1/regulations      {"regulationType", "subjectType", "subjectIds": [...]}
                                  -> 200 {"data": {"regulateId": "reg_..."}} (privacy:write)
    GET  /api/v1/regulations      ?status=&limit=&cursor= (Segment's pagination.count and
                                  pagination.cursor too)                      (privacy:read)
    GET  /api/v1/regulations/{id} -> {"data": {"regulation": {...}}}          (privacy:read)
    POST /api/v1/access-requests  {"identifier": "email:jo@x.com"} -> the DSAR document
                                                                              (privacy:read)
    GET  /api/v1/audit            ?action=&since=&until=&limit=&before=       (audit:read)

A regulation runs in a thread of the server right after it is created; the answer comes at
once, and GET /api/v1/regulations/{id} shows its status and receipt. The actor in the
audit log is the console user, else the token.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import ApiError, _json_body, endpoint, json_response
from plait.govern import audit, dsar, privacy
from plait.spec.timestamps import format_ms, parse_timestamp
from plait.store.workspaces import NotFound, TokenAuth

MAX_PAGE = 100


def _iso(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def regulation(r: dict[str, Any]) -> dict[str, Any]:
    """A request as Segment shows a regulation, with Plait's receipt and error."""
    return {
        "id": r["id"],
        "workspaceId": r["workspace_id"],
        "overallStatus": r["status"],
        "regulationType": r["regulation_type"],
        "subjectType": r["subject_type"],
        "subjectCount": r["subjects"],
        "createdAt": _iso(r["created_at"]),
        "startedAt": _iso(r["started_at"]),
        "finishedAt": _iso(r["finished_at"]),
        "requestedBy": r["requested_by"],
        "receipt": r["receipt"],
        "error": r["error"],
    }


def _param(request: Request, *names: str) -> str | None:
    for name in names:
        value = request.query_params.get(name)
        if value is not None:
            return value
    return None


def _int_param(request: Request, default: int, *names: str) -> int:
    raw = _param(request, *names)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_field", "must be an integer", names[0]) from None
    if not 1 <= value <= MAX_PAGE:
        raise ApiError(400, "invalid_field", f"must be between 1 and {MAX_PAGE}", names[0])
    return value


def _time_param(request: Request, name: str) -> int | None:
    """Milliseconds since the epoch, or an ISO-8601 time."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if raw.isdigit():
        return int(raw)
    try:
        return int(parse_timestamp(raw).timestamp() * 1000)
    except ValueError:
        message = "must be ms since the epoch or an ISO-8601 time"
        raise ApiError(400, "invalid_field", message, name) from None


@endpoint("privacy:write")
async def create_regulation(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    unknown = sorted(set(body) - {"regulationType", "subjectType", "subjectIds"})
    if unknown:
        raise ApiError(400, "invalid_field", "is not a field of a regulation", unknown[0])
    store = request.app.state.store
    record = await run_in_threadpool(
        privacy.create_request, store, auth.workspace_id, body.get("regulationType"),
        body.get("subjectType"), body.get("subjectIds"), auth.actor,
    )  # fmt: skip
    settings = getattr(request.app.state, "settings", None)
    settle = settings.governance_cache_seconds if settings is not None else None
    privacy.run_in_background(store, record["id"], body["subjectIds"], settle)
    return json_response({"data": {"regulateId": record["id"]}})


@endpoint("privacy:read")
async def list_regulations(request: Request, auth: TokenAuth) -> Response:
    status = request.query_params.get("status")
    if status is not None and status not in privacy.STATUSES:
        raise ApiError(400, "invalid_field", f"must be one of {', '.join(privacy.STATUSES)}",
                       "status")  # fmt: skip
    limit = _int_param(request, 50, "limit", "pagination.count", "pagination[count]")
    cursor = _param(request, "cursor", "pagination.cursor", "pagination[cursor]") or None
    store = request.app.state.store

    def read() -> list[dict[str, Any]]:
        with store.engine.connect() as conn:
            try:
                return privacy.list_requests(
                    conn, auth.workspace_id, status=status, limit=limit + 1, before=cursor
                )
            except NotFound:
                raise ApiError(400, "invalid_field", "is not a regulation id", "cursor") from None

    found = await run_in_threadpool(read)
    page = found[:limit]
    more = len(found) > limit
    pagination = {"current": cursor, "next": page[-1]["id"] if more else None}
    return json_response(
        {"data": {"regulations": [regulation(r) for r in page], "pagination": pagination}}
    )


@endpoint("privacy:read")
async def get_regulation(request: Request, auth: TokenAuth) -> Response:
    store = request.app.state.store

    def read() -> dict[str, Any]:
        with store.engine.connect() as conn:
            return privacy.get_request(conn, auth.workspace_id, request.path_params["id"])

    return json_response({"data": {"regulation": regulation(await run_in_threadpool(read))}})


@endpoint("privacy:read")
async def access_request(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    identifier = body.get("identifier")
    if not isinstance(identifier, str):
        raise ApiError(400, "invalid_field", "is required, as type:value", "identifier")
    store = request.app.state.store

    document = await run_in_threadpool(
        dsar.access_request, store, auth.workspace_id, identifier, auth.actor
    )
    return json_response(document)


@endpoint("audit:read")
async def read_audit(request: Request, auth: TokenAuth) -> Response:
    limit = _int_param(request, 100, "limit")
    raw_before = request.query_params.get("before")
    if raw_before is not None and not raw_before.isdigit():
        raise ApiError(400, "invalid_field", "must be a record id", "before")
    since, until = _time_param(request, "since"), _time_param(request, "until")
    store = request.app.state.store

    def read() -> list[dict[str, Any]]:
        with store.engine.connect() as conn:
            return audit.query(
                conn, auth.workspace_id, action=request.query_params.get("action") or None,
                since=since, until=until, limit=limit,
                before_id=int(raw_before) if raw_before else None,
            )  # fmt: skip

    records = await run_in_threadpool(read)
    next_before = records[-1]["id"] if len(records) == limit else None
    return json_response({"records": records, "next_before": next_before})


routes = [
    Route("/api/v1/regulations", create_regulation, methods=["POST"]),
    Route("/api/v1/regulations", list_regulations, methods=["GET"]),
    Route("/api/v1/regulations/{id}", get_regulation, methods=["GET"]),
    Route("/api/v1/access-requests", access_request, methods=["POST"]),
    Route("/api/v1/audit", read_audit, methods=["GET"]),
]
