"""Identity administration over HTTP: rules, explain, unmerge, rebuild; and the pipeline
running inside the server."""

from __future__ import annotations

import time

import httpx


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_the_server_resolves_identities_as_messages_arrive(server):
    api = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    batch = [
        {"type": "page", "anonymousId": "pc"},
        {"type": "identify", "anonymousId": "pc", "userId": "ann", "traits": {"name": "Ann"}},
        {"type": "identify", "anonymousId": "pc", "traits": {"email": "bob@x.com"}},
    ]
    sent = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(server.write_key, ""))
    assert sent.status_code == 200
    explained = wait_for(lambda: (r := api.get("/api/v1/profiles/email:BOB@x.com/explain"))
                         .status_code == 200 and r.json())  # fmt: skip
    assert {(i["type"], i["value"]) for i in explained["identifiers"]} == {
        ("anonymous_id", "pc"), ("user_id", "ann"), ("email", "bob@x.com"),
    }  # fmt: skip
    assert api.get("/api/v1/profiles/email:nobody@x.com/explain").status_code == 404

    split = api.post("/api/v1/profiles/user_id:ann/unmerge",
                     json={"identifier": "anonymous_id:pc", "reason": "shared"})  # fmt: skip
    assert split.status_code == 200 and len(split.json()["profiles"]) == 2
    bad = api.post("/api/v1/profiles/user_id:ann/unmerge", json={"identifier": "email:zz@x.com"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "identifier"
    assert api.post("/api/v1/profiles/user_id:ann/unmerge", json={}).status_code == 400

    assert api.post("/api/v1/rebuild").json() == {"processed": 3}
    again = api.get("/api/v1/profiles/user_id:ann/explain").json()
    assert {(i["type"], i["value"]) for i in again["identifiers"]} == {("user_id", "ann")}


def test_rules_are_read_validated_and_replaced(server):
    api = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    rules = api.get("/api/v1/identity/rules").json()
    assert rules["identifiers"]["user_id"] == {"limit": 1}
    assert rules["priority"][:2] == ["user_id", "email"]
    bad = api.put("/api/v1/identity/rules", json={"identifiers": {"email": {"window": "hourly"}}})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "identity.identifiers.email.window"
    crm = {"identifiers": {"crm_id": {"limit": 1, "paths": ["traits.crm"]}}}
    new = api.put("/api/v1/identity/rules", json=crm)
    assert new.status_code == 200 and new.json()["identifiers"]["crm_id"]["paths"] == ["traits.crm"]
    assert api.get("/api/v1/identity/rules").json() == new.json()


def test_identity_endpoints_check_the_token_scope(server):
    _, reader = server.repo.create_token(server.workspace_id, "reader", ["profiles:read"])
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {reader}"})
    assert api.get("/api/v1/identity/rules").status_code == 200
    assert api.put("/api/v1/identity/rules", json={}).status_code == 403
    assert api.post("/api/v1/rebuild").status_code == 403
    refused = api.post("/api/v1/profiles/user_id:x/unmerge", json={"identifier": "a:b"})
    assert refused.status_code == 403
    assert httpx.get(f"{server.url}/api/v1/identity/rules").status_code == 401
