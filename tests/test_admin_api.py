"""The admin API under /api/v1: sources, write keys, tokens and scopes, workspace isolation,
the workspace file, and the event reader."""

from __future__ import annotations

import httpx
import orjson
import pytest
import yaml

from plait.identity.rules import default_rules
from plait.log import backend_for

http = httpx.Client(timeout=30.0)


def api(server, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    token = server.admin_token if token is None else token
    headers = {"authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return http.request(method, f"{server.url}/api/v1{path}", headers=headers, **kwargs)


def track(server, key: str, message_id: str | None = None) -> httpx.Response:
    body = {"userId": "u1", "event": "E", **({"messageId": message_id} if message_id else {})}
    return http.post(f"{server.url}/v1/track", json=body, auth=(key, ""))


def error(response: httpx.Response) -> dict:
    return response.json()["error"]


def other_workspace(server, slug: str = "rival"):
    """A second workspace with a source, a write key and an admin token."""
    repo = server.repo
    workspace = repo.create_workspace(slug, slug.title())
    source, key = repo.create_source(workspace["id"], "Rival app", "ios")
    _, token = repo.create_token(workspace["id"], "rival admin", ["admin"])
    return workspace, source, key, token


def new_token(server, scopes: list[str], token: str | None = None) -> str:
    response = api(server, "POST", "/tokens", token, json={"name": "t", "scopes": scopes})
    assert response.status_code == 201, response.text
    return response.json()["secret"]


# Sources -----------------------------------------------------------------------------


def test_sources_crud(server):
    workspace = api(server, "GET", "/workspace").json()
    assert (workspace["id"], workspace["slug"], workspace["name"]) == (
        server.workspace_id,
        "acme",
        "Acme",
    )

    listed = api(server, "GET", "/sources").json()["sources"]
    assert [(s["id"], s["name"], s["type"], s["enabled"]) for s in listed] == [
        (server.source_id, "Website", "javascript", True)
    ]

    created = api(server, "POST", "/sources", json={"name": "Backend", "type": "python"})
    assert created.status_code == 201
    source, key = created.json()["source"], created.json()["write_key"]
    assert source["id"].startswith("src_") and source["workspace_id"] == server.workspace_id
    assert (source["name"], source["type"], source["enabled"]) == ("Backend", "python", True)
    assert track(server, key, "from-backend").status_code == 200
    (record,) = backend_for(server.store).read()
    assert record.source_id == source["id"]

    default = api(server, "POST", "/sources", json={"name": "Hooks"})
    assert default.status_code == 201 and default.json()["source"]["type"] == "http"
    off = api(server, "POST", "/sources", json={"name": "Off", "type": "go", "enabled": False})
    assert off.json()["source"]["enabled"] is False
    assert track(server, off.json()["write_key"]).status_code == 401

    for body, field in (
        ({"name": "Backend", "type": "python"}, "name"),  # duplicate
        ({"name": "X", "type": "cobol"}, "type"),
        ({"type": "python"}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "Y", "enabled": "yes"}, "enabled"),
    ):
        refused = api(server, "POST", "/sources", json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert error(refused)["field"] == field, body
    assert api(server, "POST", "/sources", content=b"{nope").status_code == 400
    assert api(server, "POST", "/sources", json=["x"]).status_code == 400

    by_id = api(server, "GET", f"/sources/{source['id']}").json()
    by_name = api(server, "GET", "/sources/Backend").json()
    assert by_id == by_name
    (key_info,) = by_id["write_keys"]
    assert key_info["hint"] == key[-4:] and key_info["revoked_at"] is None
    assert key not in orjson.dumps(by_id).decode()
    assert "key_hash" not in key_info
    assert api(server, "GET", "/sources/nope").status_code == 404

    renamed = api(server, "PATCH", f"/sources/{source['id']}", json={"name": "Backend API"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Backend API"
    disabled = api(server, "PATCH", "/sources/Backend API", json={"enabled": False})
    assert disabled.json()["enabled"] is False
    assert error(track(server, key))["code"] == "source_disabled"
    api(server, "PATCH", "/sources/Backend API", json={"enabled": True, "type": "node"})
    assert track(server, key).status_code == 200
    assert api(server, "GET", "/sources/Backend API").json()["type"] == "node"

    for body, field in (
        ({"workspace_id": "ws_x"}, "workspace_id"),
        ({"type": "cobol"}, "type"),
        ({"enabled": "no"}, "enabled"),
        ({"name": ""}, "name"),
        ({"name": "Website"}, "name"),  # taken by another source
    ):
        refused = api(server, "PATCH", f"/sources/{source['id']}", json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert error(refused)["field"] == field, body
    assert api(server, "PATCH", "/sources/nope", json={"enabled": False}).status_code == 404
    names = [s["name"] for s in api(server, "GET", "/sources").json()["sources"]]
    assert names == ["Backend API", "Hooks", "Off", "Website"]


def test_write_keys_create_rotate_and_revoke(server):
    path = f"/sources/{server.source_id}/keys"
    first = server.write_key
    created = api(server, "POST", path)
    assert created.status_code == 201
    second = created.json()["write_key"]
    assert created.json()["revoked"] == []
    assert track(server, first).status_code == 200
    assert track(server, second).status_code == 200

    keys = api(server, "GET", f"/sources/{server.source_id}").json()["write_keys"]
    assert [k["hint"] for k in keys] == [first[-4:], second[-4:]]
    first_id, second_id = keys[0]["id"], keys[1]["id"]

    assert api(server, "DELETE", f"{path}/{first_id}").status_code == 204
    assert error(track(server, first))["code"] == "invalid_write_key"
    assert track(server, second).status_code == 200
    assert api(server, "DELETE", f"{path}/{first_id}").status_code == 404
    assert api(server, "DELETE", f"{path}/key_nope").status_code == 404
    assert http.get(f"{server.url}/v1/projects/{first}/settings").status_code == 404

    rotated = api(server, "POST", path, json={"rotate": True})
    assert rotated.status_code == 201
    third = rotated.json()["write_key"]
    assert rotated.json()["revoked"] == [second_id]
    assert track(server, second).status_code == 401
    assert track(server, third).status_code == 200
    assert len({first, second, third}) == 3
    keys = api(server, "GET", f"/sources/{server.source_id}").json()["write_keys"]
    assert [k["revoked_at"] is None for k in keys] == [False, False, True]

    assert api(server, "POST", path, json={"rotate": "yes"}).status_code == 400
    assert api(server, "POST", "/sources/nope/keys").status_code == 404


# Tokens and scopes ------------------------------------------------------------------


def test_requests_without_a_valid_token_are_401(server):
    url = f"{server.url}/api/v1/sources"
    for headers in (
        {},
        {"authorization": "Bearer"},
        {"authorization": "Bearer \t x"},
        {"authorization": f"Basic {server.admin_token}"},
        {"authorization": server.admin_token},
        {"authorization": "Bearer plt_unknown"},
        {"authorization": f"Bearer {server.write_key}"},  # a write key is not a token
    ):
        response = http.get(url, headers=headers)
        assert response.status_code == 401, headers
        assert error(response)["code"] == "authentication_error"
    assert http.get(url, headers={"authorization": f"bearer  {server.admin_token}"}).is_success

    token = new_token(server, ["sources:read"])
    assert api(server, "GET", "/sources", token).status_code == 200
    (tok,) = [t for t in api(server, "GET", "/tokens").json()["tokens"] if t["name"] == "t"]
    assert api(server, "DELETE", f"/tokens/{tok['id']}").status_code == 204
    assert api(server, "GET", "/sources", token).status_code == 401
    assert api(server, "DELETE", f"/tokens/{tok['id']}").status_code == 404


YAML = "workspace: {slug: acme, name: Acme}\nsources:\n  - {name: Website, type: javascript}\n"
ENDPOINTS = {
    # name: (method, path, kwargs, scope it needs)
    "workspace": ("GET", "/workspace", {}, "sources:read"),
    "list sources": ("GET", "/sources", {}, "sources:read"),
    "get source": ("GET", "/sources/Website", {}, "sources:read"),
    "export config": ("GET", "/config", {}, "sources:read"),
    "create source": (
        "POST",
        "/sources",
        {"json": {"name": "New", "type": "go"}},
        "sources:write",
    ),
    "update source": (
        "PATCH",
        "/sources/Website",
        {"json": {"type": "javascript"}},
        "sources:write",
    ),
    "create key": ("POST", "/sources/Website/keys", {}, "sources:write"),
    "list tokens": ("GET", "/tokens", {}, "tokens:write"),
    "apply config": ("PUT", "/config", {"content": YAML}, "config:write"),
    "events": ("GET", "/events", {}, "events:read"),
}


@pytest.mark.parametrize(
    "scopes",
    [
        ["sources:read"],
        ["sources:write"],
        ["tokens:write"],
        ["config:write"],
        ["events:read"],
        ["sources:read", "events:read"],
    ],
    ids=lambda s: "+".join(s),
)
def test_each_endpoint_needs_its_scope(server, scopes):
    token = new_token(server, scopes)
    for name, (method, path, kwargs, needed) in ENDPOINTS.items():
        response = api(server, method, path, token, **kwargs)
        if needed in scopes:
            assert response.status_code in (200, 201), (name, response.text)
        else:
            assert response.status_code == 403, (name, response.text)
            assert error(response)["code"] == "forbidden"
            assert needed in error(response)["message"]
    admin = new_token(server, ["admin"])
    for name, (method, path, kwargs, _) in ENDPOINTS.items():
        if name == "create source":
            kwargs = {"json": {"name": "Another", "type": "go"}}
        assert api(server, method, path, admin, **kwargs).status_code in (200, 201), name


def test_tokens_cannot_grant_more_than_they_hold(server):
    token_writer = new_token(server, ["tokens:write"])
    listed = api(server, "GET", "/tokens", token_writer).json()["tokens"]
    assert {t["name"] for t in listed} == {"test admin", "t"}
    assert all("token_hash" not in t and "secret" not in t for t in listed)
    assert all(t["id"].startswith("tok_") for t in listed)

    for scopes in (["admin"], ["sources:write"], ["tokens:write", "events:read"]):
        refused = api(server, "POST", "/tokens", token_writer, json={"scopes": scopes})
        assert refused.status_code == 403, (scopes, refused.text)
    granted = api(server, "POST", "/tokens", token_writer, json={"scopes": ["tokens:write"]})
    assert granted.status_code == 201
    assert granted.json()["secret"].startswith("plt_")
    assert granted.json()["token"]["scopes"] == ["tokens:write"]

    for body in ({"scopes": ["root"]}, {"scopes": "admin"}, {"scopes": []}, {}):
        refused = api(server, "POST", "/tokens", json=body)
        assert refused.status_code == 400, body
        assert error(refused)["field"] == "scopes"
    everything = new_token(server, ["admin"])
    assert api(server, "GET", "/sources", everything).status_code == 200


def test_a_token_of_another_workspace_cannot_see_or_change_this_one(server):
    rival, rival_source, rival_key, rival_token = other_workspace(server)
    assert track(server, server.write_key, "acme-1").status_code == 200
    assert track(server, rival_key, "rival-1").status_code == 200
    key_id = api(server, "GET", f"/sources/{server.source_id}").json()["write_keys"][0]["id"]
    admin_id = api(server, "GET", "/tokens").json()["tokens"][0]["id"]

    def as_rival(method, path, **kwargs):
        return api(server, method, path, rival_token, **kwargs)

    assert as_rival("GET", "/workspace").json()["id"] == rival["id"]
    assert [s["id"] for s in as_rival("GET", "/sources").json()["sources"]] == [rival_source["id"]]
    for method, path, kwargs in (
        ("GET", f"/sources/{server.source_id}", {}),
        ("GET", "/sources/Website", {}),
        ("PATCH", f"/sources/{server.source_id}", {"json": {"enabled": False}}),
        ("POST", f"/sources/{server.source_id}/keys", {"json": {"rotate": True}}),
        ("DELETE", f"/sources/{server.source_id}/keys/{key_id}", {}),
        ("DELETE", f"/tokens/{admin_id}", {}),
    ):
        assert as_rival(method, path, **kwargs).status_code == 404, (method, path)
    assert [t["name"] for t in as_rival("GET", "/tokens").json()["tokens"]] == ["rival admin"]
    exported = yaml.safe_load(as_rival("GET", "/config").text)
    assert exported["workspace"]["slug"] == "rival"
    assert [s["name"] for s in exported["sources"]] == ["Rival app"]
    hijack = as_rival("PUT", "/config", content=YAML.replace("Website", "Hijacked"))
    assert hijack.status_code == 403
    events = as_rival("GET", "/events").json()["events"]
    assert [e["message"]["messageId"] for e in events] == ["rival-1"]

    # everything of acme is untouched and working
    assert track(server, server.write_key).status_code == 200
    assert api(server, "GET", "/sources").json()["sources"][0]["enabled"] is True
    assert [s["name"] for s in api(server, "GET", "/sources").json()["sources"]] == ["Website"]
    assert api(server, "GET", "/workspace").status_code == 200


# Workspace file ---------------------------------------------------------------------


def test_config_export_and_apply(server):
    exported = api(server, "GET", "/config")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    doc = yaml.safe_load(exported.text)
    assert doc == {
        "workspace": {"slug": "acme", "name": "Acme"},
        "sources": [{"name": "Website", "type": "javascript", "enabled": True}],
        "identity": default_rules().to_dict(),
    }

    doc["sources"].append({"name": "Server", "type": "python"})
    applied = api(server, "PUT", "/config", content=yaml.safe_dump(doc))
    assert applied.status_code == 200, applied.text
    result = applied.json()
    assert result["created"] == ["Server"] and result["updated"] == []
    assert set(result["new_write_keys"]) == {"Server"}
    assert track(server, result["new_write_keys"]["Server"]).status_code == 200

    again = api(server, "PUT", "/config", content=yaml.safe_dump(doc)).json()
    assert (again["created"], again["updated"], again["disabled"]) == ([], [], [])
    assert again["new_write_keys"] == {}

    doc["sources"][0]["enabled"] = False
    assert api(server, "PUT", "/config", content=yaml.safe_dump(doc)).json()["updated"] == [
        "Website"
    ]
    assert track(server, server.write_key).status_code == 401

    only_server = {"workspace": doc["workspace"], "sources": [doc["sources"][1]]}
    kept = api(server, "PUT", "/config", content=yaml.safe_dump(only_server)).json()
    assert kept["disabled"] == []  # without prune, unlisted sources stay as they are
    doc["sources"][0]["enabled"] = True
    api(server, "PUT", "/config", content=yaml.safe_dump(doc))
    pruned = api(server, "PUT", "/config?prune=true", content=yaml.safe_dump(only_server))
    assert pruned.json()["disabled"] == ["Website"]
    assert track(server, server.write_key).status_code == 401

    for text, status, field in (
        ("workspace: [unclosed", 400, "yaml"),
        ("- just\n- a list\n", 400, "workspace"),
        ("sources: []\n", 400, "workspace"),
        ("workspace: {slug: acme}\nsources: nope\n", 400, "sources"),
        ("workspace: {slug: acme}\nsources:\n  - {type: go}\n", 400, "sources[0].name"),
        (
            "workspace: {slug: acme}\nsources:\n  - {name: W, enabled: 'yes'}\n",
            400,
            "sources[0].enabled",
        ),
        ("workspace: {slug: acme}\nsources:\n  - {name: W, type: cobol}\n", 400, "type"),
        ("workspace: {slug: other}\n", 403, "workspace.slug"),
        ("workspace: {name: No slug}\n", 403, "workspace.slug"),
    ):
        response = api(server, "PUT", "/config", content=text)
        assert response.status_code == status, (text, response.text)
        if field:
            assert error(response)["field"] == field, text
    assert [w["slug"] for w in server.repo.list_workspaces()] == ["acme"]
    names = {s["name"] for s in api(server, "GET", "/sources").json()["sources"]}
    assert names == {"Website", "Server"}


# Events -----------------------------------------------------------------------------


def test_events_reads_only_the_tokens_workspace_with_paging(server):
    _, _, rival_key, _ = other_workspace(server)
    for n in range(5):
        assert track(server, server.write_key, f"acme-{n}").status_code == 200
        assert track(server, rival_key, f"rival-{n}").status_code == 200

    page = api(server, "GET", "/events?limit=2").json()
    assert [e["message"]["messageId"] for e in page["events"]] == ["acme-0", "acme-1"]
    first = page["events"][0]
    assert first["source_id"] == server.source_id
    assert first["message"]["workspaceId"] == server.workspace_id
    assert isinstance(first["received_at"], int) and isinstance(first["offset"], int)
    assert page["next_after"] == page["events"][-1]["offset"]

    rest = api(server, "GET", f"/events?after={page['next_after']}").json()
    assert [e["message"]["messageId"] for e in rest["events"]] == ["acme-2", "acme-3", "acme-4"]
    done = api(server, "GET", f"/events?after={rest['next_after']}").json()
    assert done == {"events": [], "next_after": rest["next_after"]}
    assert len(api(server, "GET", "/events?limit=5000").json()["events"]) == 5

    for query in ("after=abc", "limit=x", "limit=-1", "limit=0"):
        response = api(server, "GET", f"/events?{query}")
        assert response.status_code == 400, (query, response.text)
