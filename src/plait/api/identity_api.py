"""Identity administration under /api/v1: the rules, explain, unmerge and rebuild."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import ApiError, _json_body, _repo, endpoint, json_response
from plait.api.workspace_file import identity_rules
from plait.identity.explain import ProfileNotFound, explain_ref
from plait.identity.rules import RulesError, from_dict
from plait.pipeline.maintenance import rebuild, unmerge
from plait.store.workspaces import TokenAuth


@endpoint("profiles:read")
async def get_rules(request: Request, auth: TokenAuth) -> Response:
    rules = await run_in_threadpool(identity_rules, _repo(request), auth.workspace_id)
    return json_response(rules)


@endpoint("config:write")
async def put_rules(request: Request, auth: TokenAuth) -> Response:
    """Replace the rules (missing keys take the defaults). They apply to messages processed
    from now on; POST /api/v1/rebuild applies them to the past."""
    body = await _json_body(request)
    try:
        rules = from_dict(body).to_dict()
    except RulesError as exc:
        raise ApiError(400, "invalid_field", exc.reason, exc.field) from None
    await run_in_threadpool(_repo(request).put_setting, auth.workspace_id, "identity", rules)
    return json_response(rules)


@endpoint("profiles:read")
async def explain_profile(request: Request, auth: TokenAuth) -> Response:
    """Why a profile is one person; ``ref`` is a profile id or ``type:value``."""
    store = request.app.state.store

    def run():
        with store.engine.connect() as conn:
            return explain_ref(conn, auth.workspace_id, request.path_params["ref"])

    try:
        return json_response(await run_in_threadpool(run))
    except ProfileNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None


@endpoint("profiles:write")
async def unmerge_profile(request: Request, auth: TokenAuth) -> Response:
    """Body: ``{"identifier": "type:value", "linked_to": "type:value"?, "reason": "..."}``."""
    body = await _json_body(request)
    identifier, linked_to = body.get("identifier"), body.get("linked_to")
    reason = body.get("reason", "")
    if not isinstance(identifier, str):
        raise ApiError(400, "invalid_field", "is required, as type:value", "identifier")
    if linked_to is not None and not isinstance(linked_to, str):
        raise ApiError(400, "invalid_field", "must be type:value", "linked_to")
    if not isinstance(reason, str) or len(reason) > 500:
        raise ApiError(400, "invalid_field", "must be text of at most 500 characters", "reason")
    try:
        result = await run_in_threadpool(
            unmerge, request.app.state.store, auth.workspace_id, request.path_params["ref"],
            identifier, linked_to, reason,
        )  # fmt: skip
    except ProfileNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "invalid_field", str(exc), "identifier") from None
    return json_response(
        {"profile_id": result.profile_id, "profiles": result.profiles, "messages": result.messages}
    )


@endpoint("profiles:write")
async def rebuild_workspace(request: Request, auth: TokenAuth) -> Response:
    """Recompute the workspace's identity graph and profiles from its whole log (the
    request returns when done; `plait rebuild` shows progress for big logs)."""
    processed = await run_in_threadpool(rebuild, request.app.state.store, auth.workspace_id)
    return json_response({"processed": processed})


routes = [
    Route("/api/v1/identity/rules", get_rules, methods=["GET"]),
    Route("/api/v1/identity/rules", put_rules, methods=["PUT"]),
    Route("/api/v1/profiles/{ref:path}/explain", explain_profile, methods=["GET"]),
    Route("/api/v1/profiles/{ref:path}/unmerge", unmerge_profile, methods=["POST"]),
    Route("/api/v1/rebuild", rebuild_workspace, methods=["POST"]),
]
