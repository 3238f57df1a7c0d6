"""Governance end to end, on SQLite and PostgreSQL: configuration through the admin API,
events through the real collection API (HTTP), the pipeline, and what the Profile API, the
violations API and the quarantine show afterwards.

The server runs without its pipeline thread; each test runs the pipeline itself
(``Pipeline(store).catch_up()``), so what it asserts does not race a background worker.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

import orjson
import pytest
import requests
import sqlalchemy as sa
import yaml
from conftest import start_server

from plait.govern.pii import Keyring
from plait.pipeline.maintenance import rebuild
from plait.pipeline.runner import Pipeline
from plait.store.schema import log_messages, message_profiles, quarantine, violations
from plait.store.workspaces import Workspaces

KEY = Keyring.generate_key()


@dataclass
class Env:
    url: str
    store: object
    repo: Workspaces
    workspace_id: str
    source_id: str
    write_key: str
    admin: str
    reader: str  # profiles:read, no pii:read
    http: requests.Session

    def api(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        return self.http.request(method, f"{self.url}{path}", headers=headers, timeout=20,
                                 **kwargs)  # fmt: skip

    def apply(self, sections: dict) -> dict:
        doc = {"workspace": {"slug": "acme", "name": "Acme"},
               "sources": [{"name": "Website", "type": "javascript"}], **sections}  # fmt: skip
        response = self.api("PUT", "/api/v1/config", data=yaml.safe_dump(doc))
        assert response.status_code == 200, response.text
        return response.json()

    def send(self, *messages: dict) -> requests.Response:
        batch = [{"messageId": str(uuid.uuid4()), **m} for m in messages]
        return self.http.post(f"{self.url}/v1/batch", json={"batch": batch},
                              auth=(self.write_key, ""), timeout=20)  # fmt: skip

    def process(self) -> None:
        Pipeline(self.store).catch_up(self.workspace_id)

    def profile(self, ref: str, resource: str, token: str | None = None, **params):
        response = self.http.get(
            f"{self.url}/v1/spaces/acme/collections/users/profiles/{ref}/{resource}",
            auth=(token or self.reader, ""), params=params, timeout=20,
        )  # fmt: skip
        return response

    def events(self, ref: str) -> list[dict]:
        response = self.profile(ref, "events", limit=100)
        assert response.status_code == 200, response.text
        return response.json()["data"]


@pytest.fixture
def env(store):
    repo = Workspaces(store)
    ws = repo.create_workspace("acme", "Acme")["id"]
    source, key = repo.create_source(ws, "Website", "javascript")
    admin = repo.create_token(ws, "admin", ["admin"])[1]
    reader = repo.create_token(ws, "reader", ["profiles:read"])[1]
    thread, url = start_server(store, pipeline=False, pii_keys=f"k1:{KEY}")
    try:
        yield Env(url, store, repo, ws, source["id"], key, admin, reader, requests.Session())
    finally:
        thread.stop()


PLAN = {
    "id": "main",
    "name": "Main plan",
    "sources": ["Website"],
    "events": {
        "Order Completed": {
            "properties": {
                "type": "object",
                "required": ["order_id"],
                "properties": {"order_id": {"type": "string"}, "revenue": {"type": "number"}},
            }
        }
    },
}


def plan(**modes) -> dict:
    return {"tracking_plans": [{**PLAN, "modes": modes}]}


def order(user: str, **properties) -> dict:
    return {"type": "track", "userId": user, "event": "Order Completed",
            "properties": properties}  # fmt: skip


# Tracking plans: each kind of violation in each of its modes -------------------------------

CASES = [
    # (kind, mode, message, expected: "flagged" | "omitted" | "blocked")
    ("unplanned_event", "allow", {"type": "track", "userId": "u", "event": "Cart Viewed"},
     "flagged"),
    ("unplanned_event", "block", {"type": "track", "userId": "u", "event": "Cart Viewed"},
     "blocked"),
    ("unplanned_property", "allow", order("u", order_id="o1", coupon="X"), "flagged"),
    ("unplanned_property", "omit", order("u", order_id="o1", coupon="X"), "omitted"),
    ("unplanned_property", "block", order("u", order_id="o1", coupon="X"), "blocked"),
    ("schema_violation", "allow", order("u", order_id="o1", revenue="ten"), "flagged"),
    ("schema_violation", "omit", order("u", order_id="o1", revenue="ten"), "omitted"),
    ("schema_violation", "block", order("u", order_id="o1", revenue="ten"), "blocked"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "mode", "message", "expected"), CASES)
def test_each_violation_mode_end_to_end(env, kind, mode, message, expected):
    env.apply(plan(**{kind: mode}))
    assert env.send(message).status_code == 200
    env.process()
    found = env.api("GET", "/api/v1/violations", params={"list": "true"}).json()["violations"]
    assert [v["kind"] for v in found] == [kind]
    assert found[0]["action"] == {"flagged": "allowed", "omitted": "omitted",
                                  "blocked": "blocked"}[expected]  # fmt: skip
    held = env.api("GET", "/api/v1/quarantine").json()
    if expected == "blocked":
        assert held["total"] == 1 and held["messages"][0]["message"]["event"] == message["event"]
        assert env.profile("user_id:u", "events").status_code == 404  # never reached identity
        return
    assert held["total"] == 0
    [event] = env.events("user_id:u")
    field = found[0]["field"].split(".")[-1]
    if expected == "omitted":
        assert field not in event["properties"]
        protocols = event["context"]["protocols"]
        omitted = protocols.get("omitted", []) + protocols.get("omitted_on_violation", [])
        assert found[0]["field"] in omitted
    else:  # flagged only: the event as sent
        assert event["properties"] == message.get("properties", {})


def test_quarantine_replays_after_the_plan_is_fixed(env):
    env.apply(plan(unplanned_event="block"))
    env.send({"type": "track", "userId": "u1", "event": "Cart Viewed", "properties": {"n": 1}},
             order("u1", order_id="o1"))  # fmt: skip
    env.process()
    assert [e["event"] for e in env.events("user_id:u1")] == ["Order Completed"]
    assert env.api("GET", "/api/v1/quarantine").json()["total"] == 1
    # Fixing the plan (version 2), then replaying: the event reaches the profile.
    fixed = {**PLAN, "modes": {"unplanned_event": "block"},
             "events": {**PLAN["events"], "Cart Viewed": {}}}  # fmt: skip
    response = env.api("PUT", "/api/v1/tracking-plans/main", json=fixed)
    assert response.status_code == 200, response.text
    assert response.json()["plan"]["version"] == 2
    versions = env.api("GET", "/api/v1/tracking-plans/main").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    result = env.api("POST", "/api/v1/quarantine/replay", json={}).json()
    assert result == {"replayed": 1, "passed": 1, "blocked": 0}
    assert env.api("GET", "/api/v1/quarantine").json()["total"] == 0
    assert sorted(e["event"] for e in env.events("user_id:u1")) == [
        "Cart Viewed", "Order Completed"
    ]  # fmt: skip
    actions = [entry["action"] for entry in env.api("GET", "/api/v1/audit").json()["records"]]
    assert "quarantine.replay" in actions and "tracking_plan.put" in actions


def test_violations_are_counted_and_forwarded_as_violation_generated(env):
    env.apply({"tracking_plans": [{**PLAN, "forward_violations": True}]})
    env.send(order("u1", revenue="ten"), order("u2", order_id="o2", coupon="X"))
    env.process()
    counts = env.api("GET", "/api/v1/violations", params={"group_by": "event"}).json()
    assert counts["counts"][0]["event_name"] == "Order Completed"
    assert counts["counts"][0]["messages"] == 2
    by_property = env.api("GET", "/api/v1/violations", params={"group_by": "property"}).json()
    fields = {row["field"] for row in by_property["counts"]}
    assert {"properties.order_id", "properties.revenue", "properties.coupon"} <= fields
    bad = env.api("GET", "/api/v1/violations", params={"group_by": "sideways"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "group_by"
    # The forwarded events are in the log, from the forwarding source, with Segment's names.
    forwarding = env.repo.get_source(env.workspace_id, "Protocols Violations")
    with env.store.engine.connect() as conn:
        payloads = conn.scalars(
            sa.select(log_messages.c.payload).where(log_messages.c.source_id == forwarding["id"])
        ).all()
    events = [orjson.loads(p) for p in payloads]
    assert events and {e["event"] for e in events} == {"Violation Generated"}
    assert {"eventName", "violationField", "violationType", "trackingPlanID"} <= set(
        events[0]["properties"]
    )
    env.process()  # processing them forwards nothing more (their source has no plan)
    with env.store.engine.connect() as conn:
        again = conn.scalar(
            sa.select(sa.func.count()).where(log_messages.c.source_id == forwarding["id"])
        )
    assert again == len(events)


def test_bad_plans_are_refused_with_the_field(env):
    bad = {"tracking_plans": [{**PLAN, "modes": {"unplanned_event": "omit"}}]}
    doc = {"workspace": {"slug": "acme"}, **bad}
    response = env.api("PUT", "/api/v1/config", data=yaml.safe_dump(doc))
    assert response.status_code == 400
    assert "tracking_plans" in response.json()["error"]["field"]
    schema = {**PLAN, "events": {"X Y": {"properties": {"type": "nonsense"}}}}
    response = env.api("PUT", "/api/v1/tracking-plans/main", json=schema)
    assert response.status_code == 400, response.text
    assert env.api("GET", "/api/v1/tracking-plans").json() == {"tracking_plans": []}


def test_an_inferred_plan_passes_the_stream_it_came_from(env):
    from plait.demo import Cast

    messages = list(Cast(people=30).messages())
    for start in range(0, len(messages), 100):  # batches under the 500 KB limit
        assert env.send(*messages[start : start + 100]).status_code == 200
    inferred = env.api("POST", "/api/v1/tracking-plans/infer", json={}).json()["plan"]
    assert len(inferred["events"]) >= 5
    inferred["sources"] = ["Website"]
    inferred["modes"] = {"unplanned_event": "block", "unplanned_property": "block",
                         "schema_violation": "block"}  # fmt: skip
    env.apply({"tracking_plans": [inferred]})
    env.process()
    assert env.api("GET", "/api/v1/violations").json()["counts"] == []
    assert env.api("GET", "/api/v1/quarantine").json()["total"] == 0


# Transformations --------------------------------------------------------------------------

TRANSFORMATIONS = [
    {
        "name": "tidy",
        "sources": ["Website"],
        "rules": [
            {"rename_event": {"from": "Order Done", "to": "Order Completed"}},
            {"derive_property": {"name": "properties.revenue_cents",
                                 "expr": "round(properties.revenue * 100)"}},
            {"rename_property": {"from": "traits.mail", "to": "traits.email"}},
            {"drop_event": "properties.internal == true"},
        ],
    }
]  # fmt: skip


def test_transformations_apply_before_identity_and_dry_run_shows_them(env):
    env.apply({"transformations": TRANSFORMATIONS})
    env.send(
        {"type": "track", "userId": "u1", "event": "Order Done", "properties": {"revenue": 1.5}},
        {"type": "track", "userId": "u1", "event": "Test", "properties": {"internal": True}},
        {"type": "identify", "userId": "u1", "traits": {"mail": "Jo@X.com"}},
    )  # fmt: skip
    env.process()
    events = env.events("user_id:u1")
    assert sorted(e.get("event", e["type"]) for e in events) == ["Order Completed", "identify"]
    track = next(e for e in events if e["type"] == "track")
    assert track["properties"] == {"revenue": 1.5, "revenue_cents": 150}
    # The renamed trait became an identifier: identity saw the transformed message.
    assert env.profile("email:jo@x.com", "traits").json()["traits"] == {"email": "Jo@X.com"}
    # The log keeps the message as sent; the processed event is the transformed one.
    with env.store.engine.connect() as conn:
        sent = conn.scalars(sa.select(log_messages.c.payload)).all()
        governed = conn.scalars(sa.select(message_profiles.c.payload)).all()
    assert any('"Order Done"' in p for p in sent)
    assert any(p and '"revenue_cents"' in p for p in governed)
    dry = env.api("POST", "/api/v1/transformations/dry-run", json={
        "source": "Website",
        "message": {"type": "track", "event": "Order Done", "properties": {"revenue": 2}},
    }).json()  # fmt: skip
    assert dry["after"]["event"] == "Order Completed" and dry["before"]["event"] == "Order Done"
    assert dry["after"]["properties"]["revenue_cents"] == 200 and dry["applied"] == ["tidy"]
    hostile = [{"name": "x", "rules": [{"drop_event": "__import__('os')"}]}]
    response = env.api("PUT", "/api/v1/governance/transformations",
                       json={"transformations": hostile})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "transformations[0].rules[0].drop_event"


# PII -----------------------------------------------------------------------------------------

PII = {
    "actions": {"email": "hash", "phone": "mask", "card_number": "drop", "national_id": "drop",
                "ip": "mask"},
    "fields": {"traits.secret_note": "encrypt"},
}  # fmt: skip


def database_bytes(store) -> bytes:
    path = store.url.database
    data = open(path, "rb").read()
    try:
        data += open(f"{path}-wal", "rb").read()
    except FileNotFoundError:
        pass
    return data


def test_pii_is_handled_before_the_log_and_encrypted_values_need_the_scope(env):
    env.apply({"pii": PII})
    response = env.send({
        "type": "identify", "userId": "u1",
        "traits": {"email": "Jo@Example.com", "phone": "+1 415 555 2671",
                   "card": "4111 1111 1111 1111", "secret_note": "likes cats"},
        "context": {"ip": "203.0.113.77"},
    })  # fmt: skip
    assert response.status_code == 200, response.text
    env.process()
    with env.store.engine.connect() as conn:
        [payload] = conn.scalars(sa.select(log_messages.c.payload)).all()
    for secret in ("Jo@Example.com", "jo@example.com", "4111", "likes cats", "203.0.113.77"):
        assert secret not in payload
    logged = orjson.loads(payload)
    assert logged["traits"]["email"] == hashlib.sha256(b"jo@example.com").hexdigest()
    assert "card" not in logged["traits"] and logged["context"]["ip"] == "203.0.113.0"
    assert logged["traits"]["secret_note"].startswith("enc:v1:k1:")
    if env.store.kind == "sqlite":
        stored = database_bytes(env.store)
        assert b"secret_note" in stored  # the file read is the one the message went to
        assert b"likes cats" not in stored
    traits = env.profile("user_id:u1", "traits").json()["traits"]
    assert traits["secret_note"].startswith("enc:v1:")
    # The hashed email is still an identifier, found by its plain value too.
    for ref in ("email:Jo@Example.com", f"email:{logged['traits']['email']}"):
        assert env.profile(ref, "traits").json()["traits"] == traits
    pii_reader = env.repo.create_token(env.workspace_id, "pii", ["profiles:read", "pii:read"])[1]
    clear = env.profile("user_id:u1", "traits", token=pii_reader).json()["traits"]
    assert clear["secret_note"] == "likes cats"
    audit = env.api("GET", "/api/v1/audit", params={"action": "pii.read"}).json()
    assert len(audit["records"]) == 1


def test_a_policy_that_encrypts_needs_the_keys(store):
    repo = Workspaces(store)
    ws = repo.create_workspace("acme", "Acme")["id"]
    admin = repo.create_token(ws, "admin", ["admin"])[1]
    thread, url = start_server(store, pipeline=False)
    try:
        doc = {"workspace": {"slug": "acme"}, "pii": PII}
        response = requests.put(
            f"{url}/api/v1/config",
            data=yaml.safe_dump(doc),
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        assert response.status_code == 400
        assert "PLAIT_PII_KEYS" in response.json()["error"]["message"]
    finally:
        thread.stop()


# Consent and suppression ----------------------------------------------------------------------


def consent_event(user: str, **prefs) -> dict:
    return {"type": "track", "userId": user, "event": "Segment Consent Preference Updated",
            "context": {"consent": {"categoryPreferences": prefs}}}  # fmt: skip


def test_profile_consent_follows_preference_events_with_history(env):
    env.send(
        {
            **consent_event("u1", Advertising=True, Analytics=True),
            "timestamp": "2024-01-01T00:00:00Z",
        },
        {**consent_event("u1", Advertising=False), "timestamp": "2024-02-01T00:00:00Z"},
    )
    env.process()
    consent = env.profile("user_id:u1", "consent").json()["consent"]
    # Category ids compare case-folded; one the latest event leaves out is false (Segment).
    assert {k: v["allowed"] for k, v in consent["categories"].items()} == {
        "advertising": False, "analytics": False
    }  # fmt: skip
    assert [h["preferences"] for h in consent["history"]] == [
        {"advertising": True, "analytics": True}, {"advertising": False}
    ]  # fmt: skip


def test_suppressed_people_are_rejected_at_ingestion(env):
    response = env.api(
        "POST",
        "/api/v1/regulations",
        json={"regulationType": "SUPPRESS_ONLY", "subjectType": "USER_ID", "subjectIds": ["u-9"]},
    )
    assert response.status_code == 200, response.text
    regulation = response.json()["data"]["regulateId"]
    deadline = time.monotonic() + 20
    path = f"/api/v1/regulations/{regulation}"
    while env.api("GET", path).json()["data"]["regulation"]["overallStatus"] != "FINISHED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    single = env.http.post(f"{env.url}/v1/track", auth=(env.write_key, ""), timeout=10,
                           json={"userId": "u-9", "event": "X"})  # fmt: skip
    assert single.status_code == 403 and single.json()["code"] == "suppressed"
    batch = env.send({"type": "track", "userId": "u-9", "event": "X"},
                     {"type": "track", "userId": "u-1", "event": "X"})  # fmt: skip
    assert batch.status_code == 200
    assert [r["code"] for r in batch.json()["rejected"]] == ["suppressed"]
    with env.store.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(log_messages)) == 1


# Derived state stays derived -----------------------------------------------------------------


def test_rebuild_gives_the_same_governed_state(env):
    env.apply({**plan(unplanned_event="block", unplanned_property="omit"),
               "transformations": TRANSFORMATIONS})  # fmt: skip
    env.send(
        order("u1", order_id="o1", coupon="X"),
        {"type": "track", "userId": "u2", "event": "Cart Viewed"},
        {"type": "track", "userId": "u1", "event": "Order Done", "properties": {"order_id": "o"}},
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"mail": "j@x.io"}},
        consent_event("u1", Advertising=False),
    )  # fmt: skip
    env.process()

    def state():
        with env.store.engine.connect() as conn:
            return {
                table.name: sorted(
                    tuple(v for k, v in row._mapping.items() if k != "id")
                    for row in conn.execute(sa.select(table))
                )
                for table in (violations, quarantine, message_profiles)
            }

    before = state()
    assert before["quarantine"] and before["violations"] and before["message_profiles"]
    rebuild(env.store, env.workspace_id)
    after = state()
    for name in before:
        if name == "message_profiles":  # profile ids are kept by a rebuild too
            assert after[name] == before[name]
        else:
            assert [r[:-1] for r in after[name]] == [r[:-1] for r in before[name]], name
