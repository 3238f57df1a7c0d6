"""The API the console adds (overview, destination previews, connector types), on both
backends: what the pages show is tested in Chromium in test_console.py."""

from __future__ import annotations

import httpx
import pytest
from conftest import RunningServer, wait_processed
from segment.analytics import Client as SegmentClient

from plait.api.overview_api import BUCKETS
from plait.destinations.config import MASK


@pytest.fixture
def http(server: RunningServer):
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.url, timeout=20, headers=admin) as client:
        yield client


def test_the_overview_counts_events_by_source_and_profiles(server, http):
    backend, key = server.repo.create_source(server.workspace_id, "Backend", "python")
    for write_key, n in ((server.write_key, 3), (key, 2)):
        client = SegmentClient(write_key, host=server.url, sync_mode=True)
        for i in range(n):
            client.track(f"user-{i}", "Signed Up")
    wait_processed(server.store, 5)
    found = http.get("/api/v1/overview", params={"minutes": 30}).json()
    assert found["bucket_ms"] == 30_000 and found["to"] - found["from"] == 30 * 60_000
    by_name = {s["name"]: s for s in found["events"]}
    assert by_name["Website"]["total"] == 3 and by_name["Backend"]["total"] == 2
    assert len(by_name["Website"]["counts"]) == BUCKETS and sum(by_name["Website"]["counts"]) == 3
    assert found["profiles"]["total"] == 3 and sum(found["profiles"]["new"]) == 3
    assert found["merges"]["total"] == 0 and found["delivery_failures"]["total"] == 0
    for minutes in ("60", "10080"):  # buckets of µs past a 32-bit integer on PostgreSQL
        week = http.get("/api/v1/overview", params={"minutes": minutes}).json()
        assert sum(s["total"] for s in week["events"]) == 5 and week["profiles"]["total"] == 3
    for bad in ("4", "10081", "x", "-5"):
        answer = http.get("/api/v1/overview", params={"minutes": bad})
        assert answer.status_code == 400 and answer.json()["error"]["field"] == "minutes"


def test_a_destination_preview_shows_the_mapping_without_sending(server, http):
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    client.track("u1", "Order Completed", {"revenue": 42, "currency": "EUR"})
    client.identify("u1", {"email": "ada@example.com"})
    wait_processed(server.store, 2)
    mixpanel = {"type": "mixpanel", "settings": {"project_id": "123", "username": "svc",
                                                 "secret": "s3cret"}}  # fmt: skip
    latest = http.post("/api/v1/destinations/preview", json={"destination": mixpanel}).json()
    assert latest["before"]["type"] == "identify" and latest["after"] is None
    assert latest["outcome"] == (
        "filtered: the destination takes page, screen, track messages, not identify"
    )
    first = latest["log_offset"] - 1
    mapped = http.post("/api/v1/destinations/preview",
                       json={"destination": mixpanel, "log_offset": first}).json()  # fmt: skip
    assert mapped["before"]["event"] == "Order Completed" and mapped["outcome"] == "sent"
    assert latest["older"] == first and mapped["older"] is None  # to step back through
    assert mapped["after"]["event"] == "Order Completed"
    assert mapped["after"]["properties"]["revenue"] == 42  # Mixpanel's shape
    assert mapped["after"]["properties"]["distinct_id"] == "u1"
    only_tracks = {**mixpanel, "filter": "type == 'track'"}
    only_tracks["filter"] = "event == 'Signed Up'"
    filtered = http.post("/api/v1/destinations/preview",
                         json={"destination": only_tracks, "log_offset": first}).json()  # fmt: skip
    assert filtered["after"] is None
    assert filtered["outcome"] == "filtered: its filter leaves the message out"
    # A saved destination's masked secret previews as the stored one; nothing is saved.
    assert http.put("/api/v1/destinations/mp", json=mixpanel).status_code == 200
    shown = http.get("/api/v1/destinations/mp").json()
    assert shown["settings"]["secret"] == MASK
    again = http.post(
        "/api/v1/destinations/preview",
        json={"destination": {k: shown[k] for k in ("key", "type", "settings")}},
    )
    assert again.status_code == 200, again.text
    assert len(http.get("/api/v1/destinations").json()["destinations"]) == 1
    # Bad input is named.
    for body, field in (({}, "destination"), ({"destination": {"type": "nope"}}, "type"),
                        ({"destination": mixpanel, "log_offset": "1"}, "log_offset")):  # fmt: skip
        answer = http.post("/api/v1/destinations/preview", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"].endswith(field)
    missing = http.post("/api/v1/destinations/preview",
                        json={"destination": mixpanel, "log_offset": 10**12})  # fmt: skip
    assert missing.status_code == 404


def test_a_destinations_mapping_is_its_own_transformations_previewed_then_saved(server, http):
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    client.track("u1", "Order Done", {"plan": "pro"})
    wait_processed(server.store, 1)
    hook = {"type": "webhook", "settings": {"url": "http://127.0.0.1:9/hook"}}
    assert http.put("/api/v1/destinations/hook", json=hook).status_code == 200
    rename = {"rename_event": {"from": "Order Done", "to": "Order Completed"}}
    saved = [
        {
            "name": "tidy",
            "rules": [{"map_values": {"property": "properties.plan", "map": {"pro": "Pro"}}}],
        },  # fmt: skip
        {"name": "hook only", "destinations": ["hook"], "rules": [rename]},
        {
            "name": "both",
            "destinations": ["hook", "other"],
            "rules": [{"drop_property": "properties.debug"}],
        },  # fmt: skip
    ]
    put = http.put("/api/v1/governance/transformations", json={"transformations": saved})
    assert put.status_code == 200, put.text
    found = http.get("/api/v1/destinations/hook/mapping").json()
    assert found["destination"] == "hook"
    assert [t["name"] for t in found["own"]] == ["hook only"]
    assert [t["name"] for t in found["shared"]] == ["both"]

    # Unsaved: the mapping sent stands for its own transformations; nothing is stored.
    trial = [{"name": "hook only", "rules": [rename, {"derive_property": {
        "name": "properties.tier", "expr": "upper(properties.plan)"}}]}]  # fmt: skip
    draft = {"key": "hook", **hook}
    shown = http.post("/api/v1/destinations/preview",
                      json={"destination": draft, "mapping": trial}).json()  # fmt: skip
    assert shown["before"]["event"] == "Order Done"  # as processed: after intake ones ran
    assert shown["after"]["event"] == "Order Completed"
    assert shown["after"]["properties"]["tier"] == "PRO"
    emptied = http.post("/api/v1/destinations/preview",
                        json={"destination": draft, "mapping": []}).json()  # fmt: skip
    assert emptied["after"]["event"] == "Order Done"
    unchanged = http.get("/api/v1/governance/transformations").json()["transformations"]
    assert unchanged == saved

    # Saved: it replaces its own ones in place; the others stay as they were.
    answer = http.put("/api/v1/destinations/hook/mapping", json={"mapping": trial})
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] is True
    assert answer.json()["own"][0]["destinations"] == ["hook"]
    stored = http.get("/api/v1/governance/transformations").json()["transformations"]
    assert [t["name"] for t in stored] == ["tidy", "hook only", "both"]
    assert stored[1]["rules"] == trial[0]["rules"] and stored[0] == saved[0]
    audited = http.get("/api/v1/audit", params={"action": "destination.mapping.put"}).json()
    assert len(audited["records"]) == 1 and audited["records"][0]["target"] == "transformations"

    # Bad input is named after the mapping, and changes nothing.
    bad_rule = [{"name": "x", "rules": [{"derive_property": {"name": "properties.a",
                                                            "expr": "nope("}}]}]  # fmt: skip
    for body, field in (
        ({}, "mapping"),
        ({"mapping": {"name": "x"}}, "mapping"),
        ({"mapping": bad_rule}, "mapping[0].rules[0].derive_property.expr"),
        ({"mapping": [{"name": "x", "sources": ["Website"], "rules": [rename]}]},
         "mapping[0].sources"),
        ({"mapping": [{"name": "tidy", "rules": [rename]}]}, "mapping[0].name"),
    ):  # fmt: skip
        answer = http.put("/api/v1/destinations/hook/mapping", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"].endswith(field), answer.text
    assert http.get("/api/v1/governance/transformations").json()["transformations"] == stored
    assert http.get("/api/v1/destinations/nope/mapping").status_code == 404
    # Reading needs governance:read, changing governance:write.
    _, reader = server.repo.create_token(server.workspace_id, "ro",
                                         ["governance:read", "destinations:read"])  # fmt: skip
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert http.get("/api/v1/destinations/hook/mapping", headers=as_reader).status_code == 200
    refused = http.put("/api/v1/destinations/hook/mapping", json={"mapping": []},
                       headers=as_reader)  # fmt: skip
    assert refused.status_code == 403


def test_the_connector_types_list_every_kind(server, http):
    kinds = {k["type"]: k for k in http.get("/api/v1/destination-types").json()["types"]}
    assert {"webhook", "postgres", "mixpanel", "meta_capi"} <= set(kinds)
    assert "secret" in kinds["webhook"]["secrets"] and kinds["webhook"]["about"]
    settings = {s["name"]: s for s in kinds["mixpanel"]["settings"]}
    assert list(settings) == ["project_id", "username", "secret", "endpoint"]
    assert settings["secret"]["required"] and settings["secret"]["secret"]
    assert not settings["endpoint"]["required"] and settings["endpoint"]["kind"] == "text"
    assert settings["endpoint"]["example"] == "https://api.mixpanel.com"
    webhook = {s["name"]: s for s in kinds["webhook"]["settings"]}
    assert webhook["signature"]["kind"] == "choice"
    assert webhook["signature"]["choices"] == ["sha1", "sha256"]
    assert webhook["timeout"]["kind"] == "number" and webhook["headers"]["kind"] == "json"
    assert kinds["amplitude"]["max_batch"] == 2000


def test_the_console_is_served_by_plait_with_a_strict_policy(server):
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and '<script type="module" src="/ui/console.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and page.headers["cache-control"] == "no-cache"
    script = httpx.get(f"{server.url}/ui/console.js", timeout=10)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"
    # Revalidated, not fetched again: the browser asks with the ETag it holds.
    again = httpx.get(f"{server.url}/ui/console.js", timeout=10,
                      headers={"If-None-Match": script.headers["etag"]})  # fmt: skip
    assert again.status_code == 304
    assert httpx.get(f"{server.url}/ui/nothing.js", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/ui/..%2f__init__.py", timeout=10).status_code == 404
