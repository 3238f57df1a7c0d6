"""SQL over the lake under /api/v1 (scope ``lake:read``):

    POST /api/v1/sql  {"sql": "SELECT ...", "limit": 1000}
                      -> 200 {"columns": [...], "rows": [[...], ...], "truncated": false}
                      -> 400 invalid_sql with DuckDB's message, or when it is not one SELECT

The token's workspace is the only one the query can read. The workspace's new events go to
the lake first, and its profile snapshot when older than PLAIT_LAKE_SNAPSHOT_SECONDS.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import ApiError, _json_body, endpoint, json_response
from plait.lake import LakeQueryError, export_events, export_profiles, run_sql
from plait.lake.query import DEFAULT_LIMIT, jsonable
from plait.lake.writer import snapshot_age_ms
from plait.store.workspaces import TokenAuth


@endpoint("lake:read")
async def sql(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    text = body.get("sql")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "invalid_field", "a SQL SELECT statement is required", "sql")
    limit = body.get("limit", DEFAULT_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= DEFAULT_LIMIT:
        raise ApiError(400, "invalid_field", f"must be between 1 and {DEFAULT_LIMIT}", "limit")
    settings = request.app.state.settings
    store = request.app.state.store
    lake_dir = settings.resolved_lake_dir()

    def run() -> dict[str, Any]:
        export_events(store, auth.workspace_id, lake_dir)
        age = snapshot_age_ms(lake_dir, auth.workspace_id)
        if age is None or age > settings.lake_snapshot_seconds * 1000:
            export_profiles(store, auth.workspace_id, lake_dir)
        columns, rows = run_sql(lake_dir, auth.workspace_id, text, limit=limit + 1)
        return {
            "columns": columns,
            "rows": [[jsonable(v) for v in row] for row in rows[:limit]],
            "truncated": len(rows) > limit,
        }

    try:
        return json_response(await run_in_threadpool(run))
    except LakeQueryError as exc:
        raise ApiError(400, "invalid_sql", str(exc), "sql") from None


routes = [Route("/api/v1/sql", sql, methods=["POST"])]
