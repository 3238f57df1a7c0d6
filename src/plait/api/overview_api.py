"""The console's overview: the workspace's activity over a recent window, in buckets.

GET /api/v1/overview?minutes=60   (sources:read; 5 to 10,080 minutes, 60 buckets)

Events by source count arrivals (the log's received_at); profiles, merges and violations
count event time (what the pipeline stamped), delivery failures the time they failed.
"""

from __future__ import annotations

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import ApiError, _repo, endpoint, json_response
from plait.store.db import now_ms
from plait.store.schema import deliveries, lineage, log_messages, profiles, sources, violations
from plait.store.workspaces import TokenAuth

BUCKETS = 60


def overview(engine: sa.Engine, workspace_id: str, minutes: int, now: int | None = None) -> dict:
    end = now_ms() if now is None else now
    bucket = minutes * 60_000 // BUCKETS
    start = end - bucket * BUCKETS

    def series(conn, column, where, scale: int = 1, by=None) -> dict:
        """Counts a bucket (``column`` in ms, or µs with ``scale`` 1000), by ``by``."""
        index = ((column // scale if scale > 1 else column) - start) // bucket
        keys = [by] if by is not None else []
        rows = conn.execute(
            sa.select(*keys, index.label("b"), sa.func.count())
            .where(where, column >= start * scale, column < end * scale)
            .group_by(*keys, index)
        ).all()
        out: dict = {}
        for row in rows:
            key = row[0] if by is not None else None
            counts = out.setdefault(key, [0] * BUCKETS)
            if 0 <= row[-2] < BUCKETS:
                counts[row[-2]] += row[-1]
        return out

    with engine.connect() as conn:
        own = sources.c.workspace_id == workspace_id
        names = dict(conn.execute(sa.select(sources.c.id, sources.c.name).where(own)).all())
        events = series(conn, log_messages.c.received_at,
                        log_messages.c.workspace_id == workspace_id, 1000,
                        log_messages.c.source_id)  # fmt: skip
        people = (profiles.c.workspace_id == workspace_id) & (profiles.c.kind == "user")
        new_profiles = series(conn, profiles.c.created_at, people).get(None, [0] * BUCKETS)
        total_profiles = conn.execute(sa.select(sa.func.count()).where(
            people, profiles.c.merged_into.is_(None))).scalar()  # fmt: skip
        merged = series(conn, lineage.c.timestamp, (lineage.c.workspace_id == workspace_id)
                        & (lineage.c.kind == "merge")).get(None, [0] * BUCKETS)  # fmt: skip
        found = series(conn, violations.c.timestamp, violations.c.workspace_id == workspace_id).get(
            None, [0] * BUCKETS
        )
        failed = series(conn, deliveries.c.updated_at, (deliveries.c.workspace_id == workspace_id)
                        & (deliveries.c.status == "failed")).get(None, [0] * BUCKETS)  # fmt: skip
    return {
        "from": start,
        "to": end,
        "bucket_ms": bucket,
        "events": [
            {"source_id": sid, "name": names.get(sid, sid), "counts": counts, "total": sum(counts)}
            for sid, counts in sorted(events.items(), key=lambda kv: -sum(kv[1]))
        ],
        "profiles": {"total": total_profiles, "new": new_profiles},
        "merges": {"counts": merged, "total": sum(merged)},
        "violations": {"counts": found, "total": sum(found)},
        "delivery_failures": {"counts": failed, "total": sum(failed)},
    }


@endpoint("sources:read")
async def get_overview(request: Request, auth: TokenAuth) -> Response:
    text = request.query_params.get("minutes", "60")
    if not text.isdigit() or not 5 <= int(text) <= 10_080:
        raise ApiError(400, "invalid_field", "must be between 5 and 10080", "minutes")
    found = await run_in_threadpool(overview, _repo(request).engine, auth.workspace_id, int(text))
    return json_response(found)


routes = [Route("/api/v1/overview", get_overview, methods=["GET"])]
