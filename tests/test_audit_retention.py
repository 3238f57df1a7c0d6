"""The append-only audit log (queries, API, CLI) and event retention, on SQLite and
PostgreSQL."""

from __future__ import annotations

import time

import httpx
import pytest
import sqlalchemy as sa
from log_messages import append
from typer.testing import CliRunner

from plait.govern import audit, retention
from plait.pipeline.runner import Pipeline
from plait.store.schema import (
    audit_log,
    log_messages,
    message_profiles,
    profiles,
    quarantine,
    unlinked_messages,
    violations,
)
from plait.store.workspaces import Invalid, Workspaces

DAY_US = 86_400 * 1_000_000
PLAN = {
    "id": "main",
    "sources": ["Website"],
    "modes": {"unplanned_event": "block"},
    "events": {"Viewed": {"properties": {"type": "object",
                                         "properties": {"price": {"type": "number"}}}}},
}  # fmt: skip


# The audit log ---------------------------------------------------------------------------


def test_the_audit_log_refuses_update_and_delete(store):
    with store.engine.begin() as conn:
        audit.record(conn, "ws_1", "cli:ann", "privacy.access", "identity:abc", {"events": 2})
    for statement in (audit_log.update().values(actor="someone else"), audit_log.delete()):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(statement)
    with store.engine.connect() as conn:
        (only,) = audit.query(conn, "ws_1")
    assert only["actor"] == "cli:ann" and only["details"] == {"events": 2}


def test_audit_query_filters_and_pages(store):
    with store.engine.begin() as conn:
        for i, action in enumerate(["privacy.request.created", "privacy.request.finished",
                                    "privacy.access", "retention.run", "privacyish"]):  # fmt: skip
            audit.record(conn, "ws_1", f"tok_{i}", action, f"t{i}", {"i": i})
        audit.record(conn, "ws_2", "tok_x", "privacy.access", "t", {})
    with store.engine.connect() as conn:
        everything = audit.query(conn, "ws_1")
        assert [r["details"]["i"] for r in everything] == [4, 3, 2, 1, 0]  # newest first
        privacy = audit.query(conn, "ws_1", action="privacy")
        assert [r["action"] for r in privacy] == [
            "privacy.access", "privacy.request.finished", "privacy.request.created"]  # fmt: skip
        assert [r["action"] for r in audit.query(conn, "ws_1", action="privacy.request")] == [
            "privacy.request.finished", "privacy.request.created"]  # fmt: skip
        first = audit.query(conn, "ws_1", limit=2)
        second = audit.query(conn, "ws_1", limit=2, before_id=first[-1]["id"])
        assert [r["details"]["i"] for r in first + second] == [4, 3, 2, 1]
        at = everything[0]["at"]
        assert len(audit.query(conn, "ws_1", since=at + 1)) == 0
        assert len(audit.query(conn, "ws_1", until=everything[-1]["at"])) == 0
        assert len(audit.query(conn, "ws_1", since=everything[-1]["at"], until=at + 1)) == 5


def test_audit_api(server):
    repo = server.repo
    token, secret = repo.create_token(server.workspace_id, "auditor", ["audit:read"])
    with server.store.engine.begin() as conn:
        for i in range(5):
            audit.record(conn, server.workspace_id, token["id"], "retention.run", "x", {"i": i})
        audit.record(conn, "ws_other", token["id"], "retention.run", "x", {"i": 99})
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {secret}"})
    page = client.get("/api/v1/audit", params={"limit": 3}).json()
    assert [r["details"]["i"] for r in page["records"]] == [4, 3, 2]
    rest = client.get("/api/v1/audit", params={"limit": 3, "before": page["next_before"]}).json()
    assert [r["details"]["i"] for r in rest["records"]] == [1, 0] and rest["next_before"] is None
    since = client.get("/api/v1/audit", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert since["records"] == []
    assert client.get("/api/v1/audit", params={"action": "privacy"}).json()["records"] == []
    for params, field in (({"limit": "0"}, "limit"), ({"before": "x"}, "before"),
                          ({"since": "yesterday"}, "since")):  # fmt: skip
        r = client.get("/api/v1/audit", params=params)
        assert r.status_code == 400 and r.json()["error"]["field"] == field


# Retention -------------------------------------------------------------------------------


@pytest.fixture
def ws(store):
    repo = Workspaces(store)
    ws_id = repo.create_workspace("acme")["id"]
    source_id = repo.create_source(ws_id, "Website", "javascript")[0]["id"]
    repo.put_setting(ws_id, "tracking_plans", [PLAN])
    return ws_id, source_id


def feed(store, ws_id, source_id, age_days: float) -> list[int]:
    """Each kind of message (processed, with a violation, blocked), received ``age_days``
    ago; returns their offsets."""
    messages = [
        {"type": "identify", "userId": f"u-{age_days}", "traits": {"name": "N"}},
        {"type": "track", "userId": f"u-{age_days}", "event": "Viewed",
         "properties": {"price": "cheap"}},
        {"type": "track", "userId": f"u-{age_days}", "event": "Unplanned"},
    ]  # fmt: skip
    ids = [m["messageId"] for m in append(store, ws_id, messages, source_id)]
    received = time.time_ns() // 1000 - int(age_days * DAY_US)
    with store.engine.begin() as conn:
        conn.execute(
            log_messages.update()
            .where(log_messages.c.message_id.in_(ids))
            .values(received_at=received)
        )
        return list(conn.scalars(
            sa.select(log_messages.c.log_offset).where(log_messages.c.message_id.in_(ids))
        ))  # fmt: skip


def offsets_in(store, table) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.scalars(sa.select(table.c.log_offset)))


def test_retention_deletes_old_messages_and_what_was_recorded_about_them(store, ws, monkeypatch):
    ws_id, source_id = ws
    old = feed(store, ws_id, source_id, 40) + feed(store, ws_id, source_id, 31)
    new = feed(store, ws_id, source_id, 29) + feed(store, ws_id, source_id, 0)
    Pipeline(store).catch_up(ws_id)
    tables = (log_messages, message_profiles, violations, quarantine, unlinked_messages)
    for table in tables:
        assert offsets_in(store, table) & set(old), table.name
    with store.engine.connect() as conn:
        profiles_before = conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar()
    no_setting = retention.apply_retention(store, ws_id)
    assert no_setting["days"] is None and no_setting["log_messages"] == 0

    Workspaces(store).put_setting(ws_id, "retention", {"days": 30})
    monkeypatch.setattr(retention, "CHUNK", 4)  # progress in chunks
    chunks = []
    counts = retention.apply_retention(store, ws_id, progress=chunks.append)

    assert counts["days"] == 30 and counts["log_messages"] == len(old) == sum(chunks)
    assert chunks == [4, 2]
    assert counts["quarantine"] == 2 and counts["violations"] >= 4
    for table in tables:
        assert not offsets_in(store, table) & set(old), table.name
    assert offsets_in(store, log_messages) == set(new)
    assert offsets_in(store, quarantine) and offsets_in(store, quarantine) <= set(new)
    with store.engine.connect() as conn:  # people stay: retention is about events
        assert conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar() == (
            profiles_before
        )
        (record,) = audit.query(conn, ws_id, action="retention.run")
    assert record["actor"] == "system:retention" and record["details"] == counts
    again = retention.apply_retention(store, ws_id)
    assert again["log_messages"] == 0
    with store.engine.connect() as conn:
        assert len(audit.query(conn, ws_id, action="retention.run")) == 1  # nothing deleted


def test_retention_setting_is_validated_and_run_due_covers_every_workspace(store, ws):
    ws_id, source_id = ws
    repo = Workspaces(store)
    other = repo.create_workspace("other")["id"]
    keep = repo.create_workspace("keep-all")["id"]
    feed(store, ws_id, source_id, 10)
    feed(store, other, "src_x", 10)
    feed(store, keep, "src_y", 10)
    repo.put_setting(ws_id, "retention", {"days": 5})
    repo.put_setting(other, "retention", {"days": "a week"})
    results = retention.run_due(store)
    assert set(results) == {ws_id, other}
    assert results[ws_id]["log_messages"] == 3
    assert "retention.days" in results[other]["error"]
    with pytest.raises(Invalid) as info:
        retention.apply_retention(store, other)
    assert info.value.field == "retention.days"
    with store.engine.connect() as conn:
        left = dict(conn.execute(
            sa.select(log_messages.c.workspace_id, sa.func.count())
            .group_by(log_messages.c.workspace_id)
        ).all())  # fmt: skip
    assert left == {other: 3, keep: 3}


def test_retention_and_audit_cli(store_url, store, ws, monkeypatch):
    from plait import cli
    from plait.settings import get_settings

    ws_id, source_id = ws
    feed(store, ws_id, source_id, 10)
    feed(store, ws_id, source_id, 1)
    Workspaces(store).put_setting(ws_id, "retention", {"days": 7})
    monkeypatch.setenv("PLAIT_DATABASE_URL", store_url)
    get_settings.cache_clear()
    monkeypatch.setattr(cli.console, "_width", 200)  # undone to None, not to 80
    runner = CliRunner()
    try:
        result = runner.invoke(cli.app, ["retention", "run", "-w", "acme"])
        assert result.exit_code == 0, result.output
        assert ws_id in result.output and " 3 " in result.output
        result = runner.invoke(cli.app, ["audit", "-w", "acme", "--action", "retention"])
        assert result.exit_code == 0, result.output
        assert "retention.run" in result.output and "cli:" in result.output
        Workspaces(store).put_setting(ws_id, "retention", {"days": -1})
        result = runner.invoke(cli.app, ["retention", "run"])
        assert result.exit_code == 1 and "retention.days" in result.output
    finally:
        get_settings.cache_clear()
