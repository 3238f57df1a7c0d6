"""Audiences and computed traits through a running Plait: the admin API (definitions,
parse errors with line and column, preview, members, history, scopes), events sent with
segment-analytics-python making a profile enter in real time, a new audience backfilled
by the server's own scheduler, and the ``plait audiences`` / ``plait traits`` commands."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import start_server
from segment.analytics import Client as SegmentClient
from typer.testing import CliRunner

from plait.cli import app
from plait.settings import get_settings
from plait.store.workspaces import Workspaces

FREQUENT = ('performed "Order Completed" at least 2 times in last 30 days '
            "where properties.revenue > 50")  # fmt: skip


def wait_for(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.fixture
def plait_server(store, tmp_path):
    repo = Workspaces(store)
    ws = repo.create_workspace("acme", "Acme")
    _, key = repo.create_source(ws["id"], "Backend", "python")
    _, admin = repo.create_token(ws["id"], "admin", ["admin"])
    _, reader = repo.create_token(ws["id"], "reader", ["audiences:read"])
    thread, url = start_server(store, data_dir=tmp_path, lake_dir=tmp_path / "lake",
                               pipeline_poll_seconds=0.05, audience_tick_seconds=0.2,
                               lake_snapshot_seconds=0.0)  # fmt: skip
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    yield {"url": url, "key": key, "admin": admin, "reader": reader, "http": client,
           "store": store, "ws": ws["id"], "tmp": tmp_path}  # fmt: skip
    client.close()
    thread.stop()


def test_definitions_preview_and_real_time_entry_over_http(plait_server):
    http, url = plait_server["http"], plait_server["url"]
    put = http.put("/api/v1/computed-traits/spend", json={
        "kind": "sum", "event": "Order Completed", "property": "revenue"})  # fmt: skip
    assert put.status_code == 200 and put.json() == {"key": "spend", "changed": True}
    put = http.put("/api/v1/audiences/frequent_buyers",
                   json={"name": "Frequent buyers", "definition": FREQUENT})  # fmt: skip
    assert put.status_code == 200, put.text
    # a definition outside the language is refused with where it is wrong
    bad = http.put(
        "/api/v1/audiences/broken",
        json={"definition": 'performed "Order Completed"\n  at leest 2 times'},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "audiences[1].definition"
    assert "line 2, column 6" in bad.json()["error"]["message"]
    parsed = http.post("/api/v1/audiences/parse", json={"definition": "traits.plan ="})
    assert parsed.status_code == 400
    assert (parsed.json()["error"]["line"], parsed.json()["error"]["column"]) == (1, 14)
    parsed = http.post("/api/v1/audiences/parse", json={"definition": FREQUENT}).json()
    assert parsed["definition_json"]["performed"]["count"] == {"op": "at least", "value": 2}
    assert http.get("/api/v1/audiences").json()["audiences"][0]["size"] == 0

    segment = SegmentClient(plait_server["key"], host=url, sync_mode=True)
    now = datetime.now(UTC)
    segment.track("ann", "Order Completed", {"revenue": 60}, timestamp=now - timedelta(days=2))
    segment.track("bob", "Order Completed", {"revenue": 5}, timestamp=now - timedelta(days=2))
    sent = time.monotonic()
    segment.track("ann", "Order Completed", {"revenue": 80}, timestamp=now - timedelta(hours=1))

    def ann_entered():
        body = http.get("/api/v1/profiles/user_id:ann/audiences").json()
        return body if body.get("audiences") else None

    body = wait_for(ann_entered)
    entered_after = time.monotonic() - sent
    assert [a["key"] for a in body["audiences"]] == ["frequent_buyers"]
    assert body["computed_traits"] == {"spend": 140}
    assert entered_after < 5.0  # typically a few hundred ms; benchmarks/audiences.py measures
    ann = body["profile_id"]

    members = http.get("/api/v1/audiences/frequent_buyers/members").json()["members"]
    assert [m["profile_id"] for m in members] == [ann]
    history = http.get("/api/v1/audiences/frequent_buyers/history").json()["history"]
    assert [(h["profile_id"], h["change"], h["reason"]) for h in history] == [
        (ann, "entered", "event")
    ]
    detail = http.get("/api/v1/audiences/frequent_buyers").json()
    assert detail["size"] == 1 and detail["by_day"][0]["entered"] == 1

    # preview of an audience being written: its size and a sample, over the lake
    preview = http.post("/api/v1/audiences/preview",
                        json={"definition": "computed.spend > 1"}).json()  # fmt: skip
    assert preview["size"] == 2 and preview["profiles"] == 2 and len(preview["sample"]) == 2
    assert preview["took_ms"] > 0
    preview = http.post("/api/v1/audiences/preview", json={"definition": FREQUENT}).json()
    assert preview["size"] == 1 and preview["sample"][0]["profile_id"] == ann
    json_form = {
        "performed": {
            "type": "track",
            "name": "Order Completed",
            "where": {"field": "properties.revenue", "op": "<", "value": 10},
        }
    }
    preview = http.post("/api/v1/audiences/preview", json={"definition": json_form}).json()
    assert preview["size"] == 1 and preview["sample"][0]["profile_id"] != ann
    refused = http.post("/api/v1/audiences/preview", json={"definition": 'audience "nope"'})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "definition"

    # a new audience is backfilled by the server's scheduler over the lake
    http.put("/api/v1/audiences/small_spenders", json={"definition": "computed.spend < 10"})

    def backfilled():
        rows = http.get("/api/v1/audiences/small_spenders/members").json()["members"]
        return rows or None

    rows = wait_for(backfilled)
    assert len(rows) == 1 and rows[0]["profile_id"] != ann
    history = http.get("/api/v1/audiences/small_spenders/history").json()["history"]
    assert history[0]["reason"] == "backfill"

    # scopes: a reader reads, never writes
    reader = {"Authorization": f"Bearer {plait_server['reader']}"}
    assert http.get("/api/v1/audiences", headers=reader).status_code == 200
    denied = http.put("/api/v1/audiences/x", json={"definition": FREQUENT}, headers=reader)
    assert denied.status_code == 403
    assert http.delete("/api/v1/audiences/small_spenders", headers=reader).status_code == 403
    assert http.delete("/api/v1/audiences/small_spenders").status_code == 200
    assert http.delete("/api/v1/audiences/small_spenders").status_code == 404
    assert http.post("/api/v1/audiences/preview", json={}).status_code == 400


def test_the_audiences_commands(plait_server, monkeypatch):
    store, tmp = plait_server["store"], plait_server["tmp"]
    monkeypatch.setenv("PLAIT_DATABASE_URL", str(store.engine.url.render_as_string(False)))
    monkeypatch.setenv("PLAIT_LAKE_DIR", str(tmp / "lake"))  # the lake the server writes
    get_settings.cache_clear()
    runner = CliRunner()

    def plait(*args, code=0):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    http = plait_server["http"]
    http.put("/api/v1/audiences/frequent_buyers", json={"definition": FREQUENT})
    segment = SegmentClient(plait_server["key"], host=plait_server["url"], sync_mode=True)
    for revenue in (60, 70):
        segment.track("cat", "Order Completed", {"revenue": revenue})
    wait_for(lambda: http.get("/api/v1/audiences/frequent_buyers").json()["size"] == 1)
    try:
        assert "frequent_buyers" in plait("audiences", "list", "-w", "acme")
        assert '"size": 1' in plait("audiences", "show", "frequent_buyers", "-w", "acme")
        assert "1 of 1 profiles" in plait("audiences", "preview", FREQUENT, "-w", "acme")
        assert "prf_" in plait("audiences", "members", "frequent_buyers", "-w", "acme")
        assert "entered" in plait("audiences", "history", "frequent_buyers", "-w", "acme")
        out = plait("audiences", "parse", 'traits.plan = "pro" and\nperformed', code=1)
        assert "unexpected end of text" in out
        assert '"frequent_buyers"' in plait("traits", "profile", "user_id:cat", "-w", "acme")
        assert "0 entered" in plait("audiences", "reconcile", "-w", "acme")
    finally:
        get_settings.cache_clear()


def test_the_vocabulary_lists_what_was_seen_for_the_builder(plait_server):
    http = plait_server["http"]
    segment = SegmentClient(plait_server["key"], host=plait_server["url"], sync_mode=True)
    segment.identify("cat", {"plan": "pro", "address": {"country": "FR"}})
    for revenue in (10, 20):
        segment.track("cat", "Order Completed", {"revenue": revenue, "cart": {"size": 2}})
    segment.track("dog", "Product Viewed", {"sku": "a"})
    http.put("/api/v1/audiences/pros", json={"definition": 'traits.plan = "pro"'})
    found = wait_for(lambda: (v := http.get("/api/v1/audiences/vocabulary").json())["events"]
                     and len(v["events"]) == 2 and v)  # fmt: skip
    assert found["events"][0] == {"name": "Order Completed", "count": 2,
                                  "properties": ["cart.size", "revenue"]}  # fmt: skip
    assert found["events"][1]["properties"] == ["sku"]
    assert {t["key"] for t in found["traits"]} == {"plan", "address"}
    assert found["audiences"] == ["pros"] and found["computed_traits"] == []
    reader = {"Authorization": f"Bearer {plait_server['reader']}"}
    assert httpx.get(f"{plait_server['url']}/api/v1/audiences/vocabulary", headers=reader,
                     timeout=10).status_code == 200  # fmt: skip
