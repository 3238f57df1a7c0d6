"""Reverse ETL: scheduled SQL over a real PostgreSQL database or the lake, whose rows become
identify or track calls into the pipeline or straight to a destination, incrementally by a
cursor column; bad definitions and failing queries are refused or recorded, nothing lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import sqlalchemy as sa
import yaml
from conftest import POSTGRES_URL, require, start_server
from destination_world import DeliveryWorld
from typer.testing import CliRunner
from webhook_server import WebhookServer

from plait import reverse_etl
from plait.api import workspace_file
from plait.destinations import manage
from plait.identity.explain import find_profile
from plait.identity.rules import default_rules
from plait.lake import use_lake_dir
from plait.reverse_etl import runs
from plait.store.db import now_ms
from plait.store.schema import log_messages, traits
from plait.store.workspaces import Invalid, NotFound


@pytest.fixture
def crm():
    """A table of customers in a database of the local PostgreSQL (the sync's source)."""
    engine = sa.create_engine(sa.engine.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        require(False, f"PostgreSQL unreachable at {POSTGRES_URL}: {exc}")
    table = f"crm_customers_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id text PRIMARY KEY, email text, "
                             "plan text, seats int, updated_at timestamptz)"))  # fmt: skip
    yield Crm(engine, table)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    engine.dispose()


class Crm:
    def __init__(self, engine, table):
        self.engine, self.table = engine, table
        self.url = engine.url.render_as_string(hide_password=False)
        self.base = datetime(2026, 11, 1, tzinfo=UTC)

    def put(self, rows):
        """(id, email, plan, seats, minutes after base)"""
        with self.engine.begin() as conn:
            for id_, email, plan, seats, minutes in rows:
                conn.execute(sa.text(
                    f"INSERT INTO {self.table} VALUES (:id, :email, :plan, :seats, :at) "
                    "ON CONFLICT (id) DO UPDATE SET email = excluded.email, plan = "
                    "excluded.plan, seats = excluded.seats, updated_at = excluded.updated_at"),
                    {"id": id_, "email": email, "plan": plan, "seats": seats,
                     "at": self.base + timedelta(minutes=minutes)})  # fmt: skip


@pytest.fixture
def world(store, tmp_path):
    use_lake_dir(tmp_path / "lake")
    w = DeliveryWorld(store)
    w.lake = tmp_path / "lake"
    w.crm_source = w.repo.create_source(w.ws, "CRM", "database")[0]["id"]
    yield w
    use_lake_dir(None)


def crm_sync(crm, **extra):
    return {"key": "crm", "source": "CRM", "type": "identify", "cursor": "updated_at",
            "database": crm.url, "map": {"userId": "id", "traits.email": "email"},
            "query": f"SELECT id, email, plan, seats, updated_at FROM {crm.table}",
            **extra}  # fmt: skip


def profile_traits(world, user_id):
    with world.store.engine.connect() as conn:
        pid = find_profile(conn, world.ws, f"user_id:{user_id}", default_rules())
        return {r.key: orjson.loads(r.value) for r in conn.execute(
            sa.select(traits.c.key, traits.c.value).where(traits.c.profile_id == pid)
        )}  # fmt: skip


def run(world, key="crm", **kw):
    result = reverse_etl.run(world.store, world.ws, key, world.lake, **kw)
    while world.pipeline.catch_up(world.ws):
        pass
    return result


def test_a_database_sync_sends_new_and_changed_rows_as_identify_calls(world, crm):
    crm.put([("u1", "ann@x.io", "free", 1, 0), ("u2", "bob@x.io", "pro", 5, 1)])
    reverse_etl.put(world.repo, world.ws, crm_sync(crm))
    first = run(world)
    assert (first.rows, first.sent, first.rejected) == (2, 2, 0)
    assert profile_traits(world, "u2") == {"email": "bob@x.io", "plan": "pro", "seats": 5,
                                           "updated_at": "2026-11-01T00:01:00.000Z"}  # fmt: skip
    assert run(world).rows == 0  # nothing after the cursor
    crm.put([("u1", "ann@x.io", "pro", 3, 5), ("u3", "cat@x.io", "free", 1, 6)])
    second = run(world)
    assert (second.rows, second.sent) == (2, 2)
    assert profile_traits(world, "u1")["plan"] == "pro"
    state = reverse_etl.status(world.store, world.ws, "crm")
    assert state["cursor"] == crm.base + timedelta(minutes=6)
    assert (state["rows"], state["sent"], state["last_status"]) == (4, 4, "ok")
    with world.store.engine.connect() as conn:
        ids = list(conn.scalars(sa.select(log_messages.c.message_id)))
    assert len(ids) == 4 and all(i.startswith("retl-crm-") for i in ids)
    again = run(world, full=True)  # every row again: unchanged rows are repeats
    assert (again.rows, again.sent, again.repeats) == (3, 0, 3)


def test_rows_sharing_a_cursor_value_across_chunks_survive_a_crash(world, crm, monkeypatch):
    crm.put([(f"u{i}", f"u{i}@x.io", "free", i, 0 if i < 3 else 1) for i in range(5)])
    reverse_etl.put(world.repo, world.ws, crm_sync(crm, chunk_size=2))
    real = runs.prepare
    calls = {"n": 0}

    def dies_on_the_second_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("the process dies")
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "prepare", dies_on_the_second_chunk)
    with pytest.raises(RuntimeError):
        run(world)
    # The first chunk's rows share their cursor value with the next chunk's first row: the
    # cursor did not pass it, so nothing is skipped.
    assert reverse_etl.status(world.store, world.ws, "crm")["cursor"] is None
    assert reverse_etl.status(world.store, world.ws, "crm")["last_status"] == "failed"
    monkeypatch.setattr(runs, "prepare", real)
    result = run(world)
    assert (result.rows, result.sent, result.repeats) == (5, 3, 2)
    assert all(profile_traits(world, f"u{i}")["seats"] == i for i in range(5))


def test_a_track_sync_and_rejected_rows_are_counted_with_their_reasons(world, crm):
    crm.put([("u1", "ann@x.io", "pro", 2, 0), ("u2", None, "pro", 1, 1)])
    reverse_etl.put(world.repo, world.ws, {
        "key": "upgrades", "source": "CRM", "type": "track", "event": "Plan Upgraded",
        "database": crm.url, "cursor": "updated_at", "map": {"userId": "email"},
        "query": f"SELECT email, plan, seats, updated_at FROM {crm.table}"})  # fmt: skip
    result = run(world, "upgrades")
    assert (result.rows, result.sent, result.rejected) == (2, 1, 1)
    assert "userId or anonymousId" in result.rejections[0]["reason"]
    assert result.rejections[0]["row"]["plan"] == "pro"
    with world.store.engine.connect() as conn:
        (payload,) = conn.scalars(sa.select(log_messages.c.payload))
    msg = orjson.loads(payload)
    assert msg["event"] == "Plan Upgraded" and msg["userId"] == "ann@x.io"
    assert msg["properties"] == {"plan": "pro", "seats": 2,
                                 "updated_at": "2026-11-01T00:00:00.000Z"}  # fmt: skip
    shown = reverse_etl.status(world.store, world.ws, "upgrades")
    assert shown["rejected"] == 1 and shown["rejections"][0]["field"] is not None


def test_a_lake_sync_turns_a_query_over_the_events_into_traits(world):
    world.feed([{"type": "track", "userId": u, "event": "Order Completed",
                 "properties": {"total": t}} for u, t in
                [("ann", 10), ("ann", 15), ("bob", 7)]])  # fmt: skip
    reverse_etl.put(world.repo, world.ws, {
        "key": "order_totals", "source": "CRM",
        "query": "SELECT user_id, count(*) AS orders, "
                 "sum(CAST(json_extract(properties_json, '$.total') AS DOUBLE)) AS spent "
                 "FROM tracks WHERE event = 'Order Completed' GROUP BY user_id"})  # fmt: skip
    result = run(world, "order_totals")
    assert (result.rows, result.sent) == (2, 2)
    assert profile_traits(world, "ann") == {"orders": 2, "spent": 25.0}
    with pytest.raises(reverse_etl.SyncError, match="only SELECT"):
        reverse_etl.put(world.repo, world.ws, {"key": "bad", "source": "CRM",
                                               "query": "COPY events TO '/tmp/x.csv'"})  # fmt: skip
        run(world, "bad")
    assert reverse_etl.status(world.store, world.ws, "bad")["last_status"] == "failed"


def test_a_sync_straight_to_a_destination_keeps_each_users_order(world, crm):
    crm.put(
        [
            ("u1", "ann@x.io", "free", 1, 0),
            ("u2", "bob@x.io", "pro", 1, 1),
            ("u1", "ann@x.io", "pro", 2, 2),
        ]
    )  # fmt: skip (u1 is updated in place)
    with WebhookServer() as server:
        manage.put(world.repo, world.ws, {
            "key": "hook", "type": "webhook", "settings": {"url": server.url}})  # fmt: skip
        reverse_etl.put(world.repo, world.ws, crm_sync(crm, destination="hook"))
        crm.put([("u3", "cat@x.io", "free", 1, 3)])
        result = run(world)
        assert result.sent == 3
        crm.put([("u3", "cat@x.io", "pro", 4, 4)])
        run(world)
        world.drain()
        got = [m for _, m in server.delivered()]
        assert [(m["userId"], m["traits"]["plan"]) for m in got if m["userId"] == "u3"] == [
            ("u3", "free"), ("u3", "pro")]  # fmt: skip
        assert {m["userId"] for m in got} == {"u1", "u2", "u3"}
        assert all(m["messageId"].startswith("retl-crm-") for m in got)
    with world.store.engine.connect() as conn:  # not through the pipeline
        assert conn.scalar(sa.select(sa.func.count()).select_from(log_messages)) == 0


def test_bad_definitions_are_refused_naming_the_field(world, crm):
    def refused(doc, match):
        with pytest.raises(Invalid, match=match):
            reverse_etl.put(world.repo, world.ws, {**crm_sync(crm), **doc})

    refused({"source": "Nowhere"}, "no source 'Nowhere'")
    refused({"type": "page"}, "identify or track")
    refused({"cursor": "updated_at; DROP TABLE x"}, "a column name")
    refused({"database": "ftp://x"}, "not a database URL|postgresql://")
    refused({"every": 30}, "at least a minute")
    refused({"destination": "nowhere"}, "no destination 'nowhere'")
    refused({"map": {"oops": "id"}}, "map")
    refused({"colour": "red"}, "unknown field")
    reverse_etl.put(world.repo, world.ws, crm_sync(crm, cursor="nope"))
    with pytest.raises(reverse_etl.SyncError, match="nope"):
        run(world)
    reverse_etl.put(world.repo, world.ws, crm_sync(crm, query="SELECT * FROM missing_table"))
    with pytest.raises(reverse_etl.SyncError, match="missing_table"):
        run(world)
    state = reverse_etl.status(world.store, world.ws, "crm")
    assert state["last_status"] == "failed" and "missing_table" in state["last_error"]
    with pytest.raises(NotFound):
        reverse_etl.run(world.store, world.ws, "nope", world.lake)


def test_due_syncs_run_on_their_schedule_and_a_failing_one_does_not_stop_the_others(world, crm):
    crm.put([("u1", "ann@x.io", "free", 1, 0)])
    reverse_etl.save(world.repo, world.ws, [
        crm_sync(crm, every="15 minutes"),
        {**crm_sync(crm, every="1 hour"), "key": "broken", "query": "SELECT nonsense"},
        {**crm_sync(crm), "key": "by_hand"},
    ])  # fmt: skip
    now = now_ms()
    assert sorted(reverse_etl.run_due(world.store, world.lake, now)) == ["broken", "crm"]
    assert reverse_etl.run_due(world.store, world.lake, now + 60_000) == []
    assert reverse_etl.run_due(world.store, world.lake, now + 16 * 60_000) == ["crm"]
    assert reverse_etl.status(world.store, world.ws, "broken")["last_status"] == "failed"
    assert reverse_etl.status(world.store, world.ws, "crm")["rows"] == 1


def test_the_database_password_is_masked_in_the_api_and_the_export(world, crm, monkeypatch):
    secret_url = "postgresql://crm:s3cret@127.0.0.1:5432/crm"
    reverse_etl.put(world.repo, world.ws, crm_sync(crm, database=secret_url))
    exported = yaml.safe_load(workspace_file.export(world.repo, world.ws))
    assert exported["reverse_etl"][0]["database"] == "postgresql://crm:***@127.0.0.1:5432/crm"
    workspace_file.apply(world.repo, exported)  # applied back: the stored password stays
    assert reverse_etl.documents(world.repo, world.ws)[0]["database"] == secret_url
    monkeypatch.setenv("CRM_URL", crm.url)
    crm.put([("u1", "ann@x.io", "free", 1, 0)])
    reverse_etl.put(world.repo, world.ws, crm_sync(crm, database="env:CRM_URL"))
    assert run(world).sent == 1
    monkeypatch.delenv("CRM_URL")
    with pytest.raises(reverse_etl.SyncError, match="CRM_URL"):
        run(world, full=True)


def test_syncs_through_the_api_and_the_command(store, tmp_path, crm, monkeypatch):
    repo_world = DeliveryWorld(store)
    repo, ws = repo_world.repo, repo_world.ws
    repo.create_source(ws, "CRM", "database")
    _, token = repo.create_token(ws, "syncs", ["syncs:read", "syncs:write"])
    _, reader = repo.create_token(ws, "reader", ["syncs:read"])
    crm.put([("u1", "ann@x.io", "free", 1, 0)])
    thread, url = start_server(store, lake_dir=tmp_path / "lake", pipeline=False)
    try:
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
        doc = {k: v for k, v in crm_sync(crm).items() if k != "key"}
        assert api.put("/api/v1/syncs/crm", json=doc).json() == {"key": "crm", "changed": True}
        bad = api.put("/api/v1/syncs/bad", json={**doc, "type": "alias"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "reverse_etl[1].type"
        denied = httpx.post(f"{url}/api/v1/syncs/crm/run",
                            headers={"Authorization": f"Bearer {reader}"})  # fmt: skip
        assert denied.status_code == 403
        ran = api.post("/api/v1/syncs/crm/run").json()
        assert (ran["rows"], ran["sent"]) == (1, 1)
        shown = api.get("/api/v1/syncs/crm").json()
        assert shown["status"]["sent"] == 1 and shown["status"]["last_status"] == "ok"
        assert api.get("/api/v1/syncs").json()["syncs"][0]["key"] == "crm"
        assert api.post("/api/v1/syncs/crm/run", json={"full": "yes"}).status_code == 400
        assert api.get("/api/v1/syncs/nope").status_code == 404
    finally:
        thread.stop()
    monkeypatch.setenv("PLAIT_DATABASE_URL", store.engine.url.render_as_string(False))
    monkeypatch.setenv("PLAIT_LAKE_DIR", str(tmp_path / "lake"))
    from plait.cli import app
    from plait.settings import get_settings

    get_settings.cache_clear()
    try:
        cli = CliRunner()
        out = cli.invoke(app, ["syncs", "run", "crm", "--workspace", "acme", "--full"])
        assert out.exit_code == 0, out.output
        assert "1 rows read, 0 sent, 1 already sent, 0 rejected" in out.output
        listed = cli.invoke(app, ["syncs", "list", "--workspace", "acme", "--json"])
        assert orjson.loads(listed.output)[0]["status"]["rows"] == 2
        missing = cli.invoke(app, ["syncs", "run", "nope", "--workspace", "acme"])
        assert missing.exit_code != 0 and "no sync 'nope'" in missing.output
        assert cli.invoke(app, ["syncs", "delete", "crm", "--workspace", "acme"]).exit_code == 0
        assert reverse_etl.documents(repo, ws) == []
    finally:
        get_settings.cache_clear()
