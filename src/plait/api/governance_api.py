"""The governance admin API: tracking plans (versioned), violations, the quarantine and its
replay, transformations with a dry run, and the PII, consent and retention settings.

Reads need ``governance:read``, changes ``governance:write`` (``admin`` has both). Every
change is checked by compiling the whole configuration first (a 400 names the field) and
is written to the audit log.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import ApiError, _json_body, endpoint, json_response
from plait.govern import audit, documents, reports
from plait.govern.naming import lint_plan
from plait.govern.transformations import dry_run
from plait.pipeline.replay import replay_quarantine
from plait.store.workspaces import TokenAuth, Workspaces, read_setting

SETTINGS = ("transformations", "pii", "consent", "retention")  # tracking plans: below


def _repo(request: Request) -> Workspaces:
    return request.app.state.workspaces


def _int_param(request: Request, name: str, default: int | None, high: int = 10_000):
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "invalid_field", "must be an integer", name) from None
    if not 0 < value <= high:
        raise ApiError(400, "invalid_field", f"must be between 1 and {high}", name)
    return value


def change_governance(
    request: Request, auth: TokenAuth, sections: dict[str, Any], action: str
) -> list:
    """Check, save and audit a change of governance documents; returns what changed."""
    repo = _repo(request)
    keyring = request.app.state.keyring
    documents.check(repo, auth.workspace_id, sections, keyring=keyring)
    created = documents.ensure_forwarding_sources(repo, auth.workspace_id, sections)
    changed = documents.save(repo, auth.workspace_id, sections)
    with repo.engine.begin() as conn:
        audit.record(conn, auth.workspace_id, auth.actor, action, ",".join(sections),
                     {"changed": changed, "sources_created": created})  # fmt: skip
    return changed


# Tracking plans --------------------------------------------------------------------------


def _plans(repo: Workspaces, workspace_id: str) -> list[dict]:
    return repo.get_setting(workspace_id, "tracking_plans") or []


def _plan(repo: Workspaces, workspace_id: str, plan_id: str) -> dict:
    for plan in _plans(repo, workspace_id):
        if plan["id"] == plan_id:
            return plan
    raise ApiError(404, "not_found", f"tracking plan {plan_id!r} not found")


@endpoint("governance:read")
async def list_plans(request: Request, auth: TokenAuth) -> Response:
    plans = await run_in_threadpool(_plans, _repo(request), auth.workspace_id)
    return json_response({"tracking_plans": plans})


@endpoint("governance:read")
async def get_plan(request: Request, auth: TokenAuth) -> Response:
    repo, plan_id = _repo(request), request.path_params["plan_id"]
    plan = await run_in_threadpool(_plan, repo, auth.workspace_id, plan_id)

    def versions() -> list[dict]:
        with repo.engine.connect() as conn:
            return documents.plan_versions(conn, auth.workspace_id, plan_id)

    return json_response({"plan": plan, "versions": await run_in_threadpool(versions)})


@endpoint("governance:write")
async def put_plan(request: Request, auth: TokenAuth) -> Response:
    data = await _json_body(request)
    plan_id = request.path_params["plan_id"]
    if data.get("id", plan_id) != plan_id:
        raise ApiError(400, "invalid_field", "differs from the plan id in the path", "id")
    plan = {**data, "id": plan_id}

    def put() -> dict:
        repo = _repo(request)
        plans = _plans(repo, auth.workspace_id)
        ids = [p["id"] for p in plans]
        if plan_id in ids:  # replaced where it was
            plans[ids.index(plan_id)] = plan
        else:
            plans.append(plan)
        change_governance(request, auth, {"tracking_plans": plans}, "tracking_plan.put")
        return _plan(repo, auth.workspace_id, plan_id)

    return json_response({"plan": await run_in_threadpool(put)})


@endpoint("governance:write")
async def delete_plan(request: Request, auth: TokenAuth) -> Response:
    plan_id = request.path_params["plan_id"]

    def delete() -> None:
        repo = _repo(request)
        _plan(repo, auth.workspace_id, plan_id)
        plans = [p for p in _plans(repo, auth.workspace_id) if p["id"] != plan_id]
        change_governance(request, auth, {"tracking_plans": plans}, "tracking_plan.delete")

    await run_in_threadpool(delete)
    return Response(status_code=204)


@endpoint("governance:read")
async def lint(request: Request, auth: TokenAuth) -> Response:
    repo, plan_id = _repo(request), request.path_params["plan_id"]
    plan = await run_in_threadpool(_plan, repo, auth.workspace_id, plan_id)
    naming = plan.get("naming") or {"events": "object_action", "properties": "snake_case"}
    return json_response({"naming": naming, "findings": lint_plan(plan, naming)})


@endpoint("governance:read")
async def infer(request: Request, auth: TokenAuth) -> Response:
    """A draft plan from the events the workspace's log holds (``sources``: names/ids)."""
    data = await _json_body(request)
    limit = data.get("limit", 100_000)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ApiError(400, "invalid_field", "must be a positive integer", "limit")
    repo = _repo(request)

    def draft() -> dict:
        source_ids = None
        if data.get("sources"):
            source_ids = [repo.get_source(auth.workspace_id, ref)["id"] for ref in data["sources"]]
        with repo.engine.connect() as conn:
            plan_id = str(data.get("id") or "inferred")
            return reports.draft_plan(conn, auth.workspace_id, source_ids, limit, plan_id)

    return json_response({"plan": await run_in_threadpool(draft)})


# Violations and the quarantine -------------------------------------------------------------


def _violation_filter(request: Request, repo: Workspaces, auth: TokenAuth):
    params = request.query_params
    source = params.get("source")
    return reports.ViolationFilter(
        source_id=repo.get_source(auth.workspace_id, source)["id"] if source else None,
        event=params.get("event"),
        kind=params.get("kind"),
        since_ms=_int_param(request, "since", None, 2**62),
        until_ms=_int_param(request, "until", None, 2**62),
    )


@endpoint("governance:read")
async def list_violations(request: Request, auth: TokenAuth) -> Response:
    """Counts per ``group_by`` (event, property, source, type), or with ``list=true`` the
    latest violations one by one."""
    repo = _repo(request)
    group_by = request.query_params.get("group_by", "event")
    if group_by not in reports.GROUPS:
        raise ApiError(400, "invalid_field", f"one of {', '.join(reports.GROUPS)}", "group_by")
    listing = request.query_params.get("list") in ("1", "true")
    limit = _int_param(request, "limit", 100)

    def read() -> dict:
        filters = _violation_filter(request, repo, auth)
        with repo.engine.connect() as conn:
            if listing:
                rows = reports.recent_violations(conn, auth.workspace_id, filters, limit)
                return {"violations": rows}
            return {"group_by": group_by,
                    "counts": reports.violation_counts(conn, auth.workspace_id, group_by,
                                                       filters)}  # fmt: skip

    return json_response(await run_in_threadpool(read))


@endpoint("governance:read")
async def list_quarantine(request: Request, auth: TokenAuth) -> Response:
    repo, limit = _repo(request), _int_param(request, "limit", 100)

    def read() -> dict:
        with repo.engine.connect() as conn:
            return {
                "total": reports.quarantine_size(conn, auth.workspace_id),
                "messages": reports.quarantined(conn, auth.workspace_id, limit),
            }

    return json_response(await run_in_threadpool(read))


@endpoint("governance:write")
async def replay(request: Request, auth: TokenAuth) -> Response:
    data = await _json_body(request)
    offsets = data.get("offsets")
    if offsets is not None and (
        not isinstance(offsets, list)
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise ApiError(400, "invalid_field", "must be a list of log offsets", "offsets")
    store = request.app.state.store

    def run() -> dict:
        result = replay_quarantine(store, auth.workspace_id, offsets)
        with store.engine.begin() as conn:
            audit.record(conn, auth.workspace_id, auth.actor, "quarantine.replay",
                         "quarantine", result.__dict__)  # fmt: skip
        return result.__dict__

    return json_response(await run_in_threadpool(run))


# Other settings and the dry run --------------------------------------------------------------


@endpoint("governance:read")
async def get_setting(request: Request, auth: TokenAuth) -> Response:
    section = _section(request)

    def read():
        with _repo(request).engine.connect() as conn:
            return read_setting(conn, auth.workspace_id, section)

    return json_response({section: await run_in_threadpool(read)})


@endpoint("governance:write")
async def put_setting(request: Request, auth: TokenAuth) -> Response:
    section = _section(request)
    data = await _json_body(request)
    if section not in data:
        raise ApiError(400, "invalid_field", f"send {{{section!r}: ...}}", section)
    changed = await run_in_threadpool(
        change_governance, request, auth, {section: data[section]}, f"{section}.put"
    )
    return json_response({section: data[section], "changed": bool(changed)})


def _section(request: Request) -> str:
    section = request.path_params["section"]
    if section not in SETTINGS:
        raise ApiError(404, "not_found", f"no setting {section!r}: {', '.join(SETTINGS)}")
    return section


@endpoint("governance:read")
async def transformation_dry_run(request: Request, auth: TokenAuth) -> Response:
    """``{"message": {...}, "source": name or id, "transformations": [...]}``: the message
    before and after; without ``transformations``, the workspace's."""
    data = await _json_body(request)
    message = data.get("message")
    if not isinstance(message, dict):
        raise ApiError(400, "invalid_field", "must be a message object", "message")
    repo = _repo(request)

    def run() -> dict:
        sources = {s["name"]: s["id"] for s in repo.list_sources(auth.workspace_id)}
        source_id = None
        if data.get("source"):
            source_id = repo.get_source(auth.workspace_id, str(data["source"]))["id"]
        docs = data.get("transformations")
        if docs is None:
            docs = repo.get_setting(auth.workspace_id, "transformations") or []
        return dry_run(docs, message, sources, source_id)

    return json_response(await run_in_threadpool(run))


routes = [
    Route("/api/v1/tracking-plans", list_plans, methods=["GET"]),
    Route("/api/v1/tracking-plans/infer", infer, methods=["POST"]),
    Route("/api/v1/tracking-plans/{plan_id}", get_plan, methods=["GET"]),
    Route("/api/v1/tracking-plans/{plan_id}", put_plan, methods=["PUT"]),
    Route("/api/v1/tracking-plans/{plan_id}", delete_plan, methods=["DELETE"]),
    Route("/api/v1/tracking-plans/{plan_id}/lint", lint, methods=["GET"]),
    Route("/api/v1/violations", list_violations, methods=["GET"]),
    Route("/api/v1/quarantine", list_quarantine, methods=["GET"]),
    Route("/api/v1/quarantine/replay", replay, methods=["POST"]),
    Route("/api/v1/transformations/dry-run", transformation_dry_run, methods=["POST"]),
    Route("/api/v1/governance/{section}", get_setting, methods=["GET"]),
    Route("/api/v1/governance/{section}", put_setting, methods=["PUT"]),
]
