"""Console users: roles, sign-in sessions, and the roles enforced by the API's scopes
(the console calls the same API, so this is what stops a viewer anywhere)."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from conftest import RunningServer
from typer.testing import CliRunner

from plait.api.sign_in_guard import PER_ADDRESS, PER_EMAIL, WINDOW_SECONDS, SignInGuard
from plait.cli import app
from plait.settings import get_settings
from plait.store.schema import tokens
from plait.store.users import Users

PASSWORD = "correct horse battery"


@pytest.fixture
def http(server: RunningServer):
    with as_user(server, server.admin_token) as client:
        yield client


def sign_in(server: RunningServer, email: str, password: str = PASSWORD, **extra):
    return httpx.post(f"{server.url}/api/v1/sessions", timeout=10,
                      json={"email": email, "password": password, **extra})  # fmt: skip


def as_user(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def test_each_role_can_do_what_it_may_and_nothing_more(server, http):
    for email, role in (("ann@acme.test", "admin"), ("eve@acme.test", "editor"),
                        ("vic@acme.test", "viewer")):  # fmt: skip
        made = http.post("/api/v1/users", json={"email": email, "role": role,
                                                "password": PASSWORD})  # fmt: skip
        assert made.status_code == 201, made.text
        assert made.json()["role"] == role and "password_hash" not in made.json()
    sessions = {}
    for email in ("ann@acme.test", "eve@acme.test", "vic@acme.test"):
        answer = sign_in(server, email.upper())  # emails match whatever their case
        assert answer.status_code == 201, answer.text
        sessions[email.split("@")[0]] = as_user(server, answer.json()["token"])
    ann, eve, vic = sessions["ann"], sessions["eve"], sessions["vic"]

    me = vic.get("/api/v1/me").json()
    assert me["role"] == "viewer" and me["user"]["email"] == "vic@acme.test"
    assert me["workspace"]["slug"] == "acme" and "sources:write" not in me["scopes"]
    assert http.get("/api/v1/me").json()["role"] == "admin"  # the API token's

    # Reading: everyone. Changing: editors and admins. Users and tokens: admins.
    for client in (ann, eve, vic):
        assert client.get("/api/v1/sources").status_code == 200
    source = {"name": "Shop", "type": "server"}
    refused = vic.post("/api/v1/sources", json=source)
    assert refused.status_code == 403 and "sources:write" in refused.json()["error"]["message"]
    assert vic.put("/api/v1/audiences/a", json={"definition": "traits.plan = 'pro'"}
                   ).status_code == 403  # fmt: skip
    assert vic.get("/api/v1/users").status_code == 403
    assert eve.post("/api/v1/sources", json=source).status_code == 201
    hook = {"type": "webhook", "settings": {"url": "http://127.0.0.1:9/hook"}}
    assert eve.put("/api/v1/destinations/hook", json=hook).status_code == 200
    assert vic.put("/api/v1/destinations/hook2", json=hook).status_code == 403
    assert eve.get("/api/v1/users").status_code == 403
    assert eve.post("/api/v1/tokens", json={"name": "x", "scopes": ["admin"]}).status_code == 403
    assert ann.get("/api/v1/users").status_code == 200
    assert len(http.get("/api/v1/sources").json()["sources"]) == 2  # nothing more was made

    # What they did is audited under the user, not an anonymous token.
    audit = http.get("/api/v1/audit").json()
    eve_id = eve.get("/api/v1/me").json()["user"]["id"]
    assert any(r["actor"] == eve_id for r in audit["records"])

    for client in sessions.values():
        client.close()


def test_sign_in_refuses_wrong_passwords_and_disabled_users(server, http):
    http.post("/api/v1/users", json={"email": "ann@acme.test", "role": "editor",
                                     "password": PASSWORD})  # fmt: skip
    wrong = sign_in(server, "ann@acme.test", "not the password")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "authentication_error"
    assert sign_in(server, "nobody@acme.test").status_code == 401
    assert sign_in(server, "ann@acme.test", workspace="elsewhere").status_code == 401
    assert sign_in(server, "ann@acme.test", workspace="acme").status_code == 201

    token = sign_in(server, "ann@acme.test").json()["token"]
    with as_user(server, token) as ann:
        assert ann.get("/api/v1/sources").status_code == 200
        assert http.patch("/api/v1/users/ann@acme.test", json={"disabled": True}).json()["disabled"]
        assert ann.get("/api/v1/sources").status_code == 401  # the session ended
    assert sign_in(server, "ann@acme.test").status_code == 401
    http.patch("/api/v1/users/ann@acme.test", json={"disabled": False})
    assert sign_in(server, "ann@acme.test").status_code == 201


def test_a_new_role_or_password_ends_the_sessions_and_sign_out_ends_one(server, http):
    http.post("/api/v1/users", json={"email": "ann@acme.test", "role": "editor",
                                     "password": PASSWORD})  # fmt: skip
    first, second = (sign_in(server, "ann@acme.test").json()["token"] for _ in range(2))
    with as_user(server, first) as one, as_user(server, second) as two:
        assert one.delete("/api/v1/sessions/current").status_code == 204
        assert one.get("/api/v1/me").status_code == 401
        assert two.get("/api/v1/me").status_code == 200
        http.patch("/api/v1/users/ann@acme.test", json={"role": "viewer"})
        assert two.get("/api/v1/me").status_code == 401
    token = sign_in(server, "ann@acme.test").json()["token"]
    with as_user(server, token) as ann:
        assert ann.get("/api/v1/me").json()["role"] == "viewer"
        http.patch("/api/v1/users/ann@acme.test", json={"password": "another long one"})
        assert ann.get("/api/v1/me").status_code == 401
    assert sign_in(server, "ann@acme.test").status_code == 401
    assert sign_in(server, "ann@acme.test", "another long one").status_code == 201


def test_a_session_ends_at_its_time(server, http):
    http.post("/api/v1/users", json={"email": "ann@acme.test", "role": "viewer",
                                     "password": PASSWORD})  # fmt: skip
    answer = sign_in(server, "ann@acme.test").json()
    assert answer["expires_at"] > answer["user"]["created_at"]
    with server.store.engine.begin() as conn:
        conn.execute(tokens.update().where(tokens.c.user_id == answer["user"]["id"])
                     .values(expires_at=1))  # fmt: skip
    with as_user(server, answer["token"]) as ann:
        assert ann.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "role": "viewer", "password": PASSWORD}, "email"),
        ({"email": "a@acme.test", "role": "owner", "password": PASSWORD}, "role"),
        ({"email": "a@acme.test", "role": "viewer", "password": "short"}, "password"),
        ({"email": "a@acme.test", "role": "viewer"}, "password"),
        ({"role": "viewer", "password": PASSWORD}, "email"),
    ],
)
def test_bad_users_are_refused_with_the_field(server, http, body, field):
    answer = http.post("/api/v1/users", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert http.get("/api/v1/users").json()["users"] == []


def test_an_email_has_one_account_a_workspace(server, http):
    user = {"email": "ann@acme.test", "role": "viewer", "password": PASSWORD}
    assert http.post("/api/v1/users", json=user).status_code == 201
    again = http.post("/api/v1/users", json={**user, "email": "ANN@acme.test"})
    assert again.status_code == 400 and again.json()["error"]["field"] == "email"
    assert http.patch("/api/v1/users/ann@acme.test", json={"role": "boss"}).status_code == 400
    assert http.patch("/api/v1/users/ann@acme.test", json={"salary": 1}).status_code == 400
    assert http.patch("/api/v1/users/bob@acme.test", json={"role": "admin"}).status_code == 404
    # The same email in a second workspace: sign-in must then name the workspace.
    other = server.repo.create_workspace("beta")["id"]
    Users(server.store).create(other, "ann@acme.test", "admin", PASSWORD)
    ambiguous = sign_in(server, "ann@acme.test")
    assert ambiguous.status_code == 400 and ambiguous.json()["error"]["field"] == "workspace"
    chosen = sign_in(server, "ann@acme.test", workspace="beta").json()
    assert chosen["user"]["role"] == "admin" and chosen["user"]["workspace"] == "beta"
    assert http.delete("/api/v1/users/ann@acme.test").status_code == 204
    assert http.get("/api/v1/users").json()["users"] == []


def test_sign_in_answers_bad_bodies_with_400(server):
    for body in (b"{", b"[]", b'{"email": "a@acme.test"}', b'{"email": 3, "password": "x"}'):
        answer = httpx.post(f"{server.url}/api/v1/sessions", content=body, timeout=10)
        assert answer.status_code == 400, (body, answer.text)


def test_the_users_commands(server, monkeypatch):
    monkeypatch.setenv("PLAIT_DATABASE_URL", server.store.engine.url.render_as_string(False))
    get_settings.cache_clear()
    runner = CliRunner()

    def plait(*args, code=0, **env):
        result = runner.invoke(app, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    try:
        out = plait("users", "add", "ann@acme.test", "--role", "editor", "-w", "acme",
                    PLAIT_PASSWORD=PASSWORD)  # fmt: skip
        assert "(editor)" in out
        assert "short" not in plait("users", "add", "bob@acme.test", "-w", "acme", code=1,
                                    PLAIT_PASSWORD="short")  # fmt: skip
        assert "ann@acme.test" in plait("users", "list", "-w", "acme")
        assert sign_in(server, "ann@acme.test").status_code == 201
        assert "viewer, disabled" in plait("users", "set", "ann@acme.test", "--role", "viewer",
                                           "--disable", "-w", "acme")  # fmt: skip
        assert sign_in(server, "ann@acme.test").status_code == 401
        assert "not found" in plait("users", "set", "bob@acme.test", "-r", "admin", "-w", "acme",
                                    code=1)  # fmt: skip
        plait("users", "delete", "ann@acme.test", "-w", "acme")
        with server.store.engine.connect() as conn:
            live = conn.execute(sa.select(sa.func.count()).select_from(tokens).where(
                tokens.c.user_id.is_not(None), tokens.c.revoked_at.is_(None))).scalar()  # fmt: skip
        assert live == 0
    finally:
        get_settings.cache_clear()


def test_repeated_failed_sign_ins_wait_even_with_the_right_password(server, http):
    http.post("/api/v1/users", json={"email": "ann@acme.test", "role": "editor",
                                     "password": PASSWORD})  # fmt: skip
    for _ in range(PER_EMAIL):
        assert sign_in(server, "Ann@acme.test", "a wrong guess").status_code == 401
    held = sign_in(server, "ann@acme.test")  # the right password, too late
    assert held.status_code == 429 and held.json()["error"]["code"] == "rate_limited"
    assert 0 < int(held.headers["Retry-After"]) <= WINDOW_SECONDS
    # The account is held, not the address: another user signs in.
    http.post("/api/v1/users", json={"email": "eve@acme.test", "role": "viewer",
                                     "password": PASSWORD})  # fmt: skip
    assert sign_in(server, "eve@acme.test").status_code == 201


def test_failed_attempts_age_out_and_a_success_clears_them():
    now = [0.0]
    guard = SignInGuard(clock=lambda: now[0])
    for _ in range(PER_EMAIL - 1):
        guard.failed("ann@acme.test", "10.0.0.1")
    assert guard.retry_after("ANN@acme.test", "10.0.0.1") == 0
    guard.succeeded("ann@acme.test")  # a success: the count starts again
    for _ in range(PER_EMAIL):
        now[0] += 1
        guard.failed("ann@acme.test", "10.0.0.1")
    assert guard.retry_after("ann@acme.test", "10.0.0.2") == WINDOW_SECONDS - PER_EMAIL + 1
    now[0] += WINDOW_SECONDS - PER_EMAIL + 1  # the oldest failure ages out
    assert guard.retry_after("ann@acme.test", "10.0.0.2") == 0
    # One address guessing across many accounts is held too.
    for i in range(PER_ADDRESS):
        guard.failed(f"user{i}@acme.test", "10.0.0.9")
    assert guard.retry_after("someone@acme.test", "10.0.0.9") == WINDOW_SECONDS
    assert guard.retry_after("someone@acme.test", "10.0.0.1") == 0
