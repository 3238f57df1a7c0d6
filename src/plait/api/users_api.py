"""Console users and sessions under /api/v1:

POST   /api/v1/sessions           sign in: {email, password, workspace?} -> a session token
                                  (429 after repeated failures: see sign_in_guard)
DELETE /api/v1/sessions/current   sign out (the token sent)
GET    /api/v1/me                 who the token is: workspace, user, role, scopes
GET    /api/v1/users              (admin) the workspace's users
POST   /api/v1/users              (admin) {email, role, password, name?}
PATCH  /api/v1/users/{ref}        (admin) {role?, password?, disabled?, name?}; id or email
DELETE /api/v1/users/{ref}        (admin)
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import (
    ApiError,
    _audit,
    _json_body,
    _repo,
    answer,
    endpoint,
    error_response,
    json_response,
)
from plait.api.sign_in_guard import SignInGuard
from plait.store.users import Users, role_of
from plait.store.workspaces import TokenAuth


def _users(request: Request) -> Users:
    return Users(_repo(request).store)


def _text(body: dict, field: str, required: bool = True) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid_field", "is required (a string)", field)
    return value


async def sign_in(request: Request) -> Response:
    async def call() -> Response:
        body = await _json_body(request)
        email, password = _text(body, "email"), _text(body, "password")
        workspace = _text(body, "workspace", required=False)
        guard: SignInGuard = request.app.state.sign_in_guard
        address = request.client.host if request.client else "unknown"
        if wait := guard.retry_after(email, address):
            message = f"too many failed sign-ins: try again in {wait} s"
            refused = error_response(429, "rate_limited", message)
            refused.headers["Retry-After"] = str(wait)
            return refused
        try:
            user, token, expires_at = await run_in_threadpool(
                _users(request).sign_in, email, password, workspace
            )
        except PermissionError as exc:
            guard.failed(email, address)
            raise ApiError(401, "authentication_error", str(exc)) from None
        guard.succeeded(email)
        return json_response({"token": token, "expires_at": expires_at, "user": user}, 201)

    return await answer(call)


@endpoint(None)
async def sign_out(request: Request, auth: TokenAuth) -> Response:
    await run_in_threadpool(_repo(request).revoke_token, auth.workspace_id, auth.token_id)
    return Response(status_code=204)


@endpoint(None)
async def me(request: Request, auth: TokenAuth) -> Response:
    repo = _repo(request)

    def read() -> dict:
        workspace = repo.get_workspace(auth.workspace_id)
        user = _users(request).get(auth.workspace_id, auth.user_id) if auth.user_id else None
        return {
            "workspace": {k: workspace[k] for k in ("id", "slug", "name")},
            "user": user,
            "role": user["role"]
            if user
            else ("admin" if "admin" in auth.scopes else role_of(auth.scopes)),  # fmt: skip
            "scopes": sorted(auth.scopes),
        }

    return json_response(await run_in_threadpool(read))


@endpoint("admin")
async def list_users(request: Request, auth: TokenAuth) -> Response:
    return json_response({"users": await run_in_threadpool(_users(request).list,
                                                           auth.workspace_id)})  # fmt: skip


@endpoint("admin")
async def create_user(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    user = await run_in_threadpool(
        _users(request).create, auth.workspace_id, _text(body, "email"), _text(body, "role"),
        _text(body, "password"), _text(body, "name", required=False) or "",
    )  # fmt: skip
    await _audit(request, auth, "user.create", user["id"], {"role": user["role"]})
    return json_response(user, 201)


@endpoint("admin")
async def update_user(request: Request, auth: TokenAuth) -> Response:
    body = await _json_body(request)
    unknown = set(body) - {"role", "password", "disabled", "name"}
    if unknown:
        raise ApiError(400, "invalid_field", "unknown field", sorted(unknown)[0])
    if "disabled" in body and not isinstance(body["disabled"], bool):
        raise ApiError(400, "invalid_field", "must be true or false", "disabled")
    user = await run_in_threadpool(
        _users(request).update, auth.workspace_id, request.path_params["ref"],
        _text(body, "role", False), _text(body, "password", False), body.get("disabled"),
        _text(body, "name", False),
    )  # fmt: skip
    await _audit(request, auth, "user.update", user["id"], {"changed": sorted(body)})
    return json_response(user)


@endpoint("admin")
async def delete_user(request: Request, auth: TokenAuth) -> Response:
    user = await run_in_threadpool(_users(request).get, auth.workspace_id,
                                   request.path_params["ref"])  # fmt: skip
    await run_in_threadpool(_users(request).delete, auth.workspace_id, user["id"])
    await _audit(request, auth, "user.delete", user["id"], {})
    return Response(status_code=204)


routes = [
    Route("/api/v1/sessions", sign_in, methods=["POST"]),
    Route("/api/v1/sessions/current", sign_out, methods=["DELETE"]),
    Route("/api/v1/me", me, methods=["GET"]),
    Route("/api/v1/users", list_users, methods=["GET"]),
    Route("/api/v1/users", create_user, methods=["POST"]),
    Route("/api/v1/users/{ref}", update_user, methods=["PATCH"]),
    Route("/api/v1/users/{ref}", delete_user, methods=["DELETE"]),
]
