"""The lake: processed events and profile snapshots in Parquet, SQL over them with DuckDB,
scoped to one workspace and read-only, following deletions."""

from __future__ import annotations

import orjson
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from log_messages import append
from typer.testing import CliRunner

import plait.lake
from plait.govern import privacy
from plait.identity.explain import find_profile
from plait.identity.rules import default_rules
from plait.lake import LakeQueryError, export_events, export_profiles, run_sql, use_lake_dir
from plait.lake.writer import consumer_name, event_files, events_dir
from plait.log import backend_for
from plait.pipeline.runner import Pipeline
from plait.store.schema import checkpoints
from plait.store.workspaces import Workspaces

T = "2024-03-0{}T10:00:00.000Z"
ACME = [
    {"type": "identify", "userId": "u-ann", "traits": {"email": "ann@example.com",
     "name": "Ann"}, "timestamp": T.format(1)},
    {"type": "track", "userId": "u-ann", "event": "Order Completed",
     "properties": {"revenue": 10}, "timestamp": T.format(1)},
    {"type": "track", "userId": "u-ann", "event": "Order Completed",
     "properties": {"revenue": 20}, "timestamp": T.format(2)},
    {"type": "page", "anonymousId": "anon-cat", "name": "Home", "timestamp": T.format(2)},
    {"type": "track", "anonymousId": "anon-cat", "event": "Product Viewed",
     "properties": {"sku": "cat-sku-77"}, "timestamp": T.format(3)},
    {"type": "identify", "anonymousId": "anon-cat", "userId": "u-cat",
     "traits": {"email": "cat.secret@example.com"}, "timestamp": T.format(3)},
]  # fmt: skip
OTHER = [
    {"type": "track", "userId": "u-zed", "event": "Order Completed",
     "properties": {"revenue": 999, "note": "other-workspace-marker"}, "timestamp": T.format(1)},
]  # fmt: skip


class Lake:
    def __init__(self, store, root):
        self.store, self.root = store, root
        repo = Workspaces(store)
        self.ws = repo.create_workspace("acme")["id"]
        self.src = repo.create_source(self.ws, "Website", "javascript")[0]["id"]
        self.other = repo.create_workspace("other")["id"]
        self.other_src = repo.create_source(self.other, "Website", "javascript")[0]["id"]

    def feed(self, messages, ws=None):
        ws = ws or self.ws
        append(self.store, ws, messages, self.src if ws == self.ws else self.other_src)
        Pipeline(self.store).catch_up(ws)

    def export(self, ws=None) -> int:
        ws = ws or self.ws
        added = export_events(self.store, ws, self.root)
        export_profiles(self.store, ws, self.root)
        return added

    def sql(self, sql, ws=None):
        return run_sql(self.root, ws or self.ws, sql)

    def one(self, sql, ws=None):
        return self.sql(sql, ws)[1][0][0]

    def profile(self, ref: str) -> str:
        with self.store.engine.connect() as conn:
            return find_profile(conn, self.ws, ref, default_rules())


@pytest.fixture
def lake(store, tmp_path):
    use_lake_dir(tmp_path / "lake")
    yield Lake(store, tmp_path / "lake")
    use_lake_dir(None)


@pytest.fixture
def fed(lake):
    lake.feed(ACME)
    lake.feed(OTHER, lake.other)
    assert lake.export() == 6 and lake.export(lake.other) == 1
    return lake


def test_events_reach_the_lake_with_their_profiles(fed):
    files = list(event_files(fed.root, fed.ws))
    days = sorted({path.parent.name for path, _, _ in files})
    assert days == ["day=2024-03-01", "day=2024-03-02", "day=2024-03-03"]
    table = pq.read_table(files[0][0])
    assert table.column_names[:8] == ["log_offset", "workspace_id", "source_id", "message_id",
                                      "type", "event", "profile_id", "user_id"]  # fmt: skip
    ann, cat = fed.profile("user_id:u-ann"), fed.profile("user_id:u-cat")
    rows = fed.sql("SELECT type, event, profile_id, timestamp FROM events ORDER BY log_offset")[1]
    assert [r[2] for r in rows] == [ann, ann, ann, cat, cat, cat]
    assert [r[0] for r in rows] == ["identify", "track", "track", "page", "track", "identify"]
    assert str(rows[0][3]).startswith("2024-03-01 10:00:00")
    payload = orjson.loads(fed.one("SELECT payload FROM events WHERE type = 'page'"))
    assert payload["name"] == "Home" and payload["anonymousId"] == "anon-cat"


def test_views_answer_queries(fed):
    ann = fed.profile("user_id:u-ann")
    assert fed.one("SELECT count(*) FROM events") == 6
    assert fed.one("SELECT count(*) FROM tracks") == 3
    assert fed.one("SELECT count(*) FROM identifies") == 2
    assert fed.one("SELECT count(*) FROM pages") == 1
    revenue = "SELECT sum(CAST(json_extract(properties_json, '$.revenue') AS INT)) FROM tracks "
    assert fed.one(revenue + "WHERE event = 'Order Completed'") == 30
    by_profile = fed.sql(
        "WITH t AS (SELECT profile_id, count(*) AS n FROM tracks GROUP BY 1) "
        "SELECT profile_id, n FROM t ORDER BY n DESC"
    )  # fmt: skip
    assert by_profile[0] == ["profile_id", "n"] and by_profile[1][0] == (ann, 2)
    assert fed.one("SELECT count(*) FROM profiles WHERE kind = 'user'") == 2
    assert fed.one(f"SELECT json_extract_string(traits_json, '$.name') FROM profiles "
                   f"WHERE profile_id = '{ann}'") == "Ann"  # fmt: skip
    assert fed.one("SELECT profile_id FROM identifiers WHERE type = 'email' "
                   "AND value = 'ann@example.com'") == ann  # fmt: skip
    assert fed.one("SELECT count(*) FROM memberships") == 0
    assert fed.one("FROM events SELECT count(DISTINCT profile_id)") == 2  # FROM-first is SELECT


def test_export_is_incremental_and_idempotent(lake):
    lake.feed(ACME[:3])
    assert export_events(lake.store, lake.ws, lake.root) == 3
    assert export_events(lake.store, lake.ws, lake.root) == 0
    done = backend_for(lake.store).checkpoint(consumer_name(lake.ws))
    lake.feed(ACME[3:])
    assert export_events(lake.store, lake.ws, lake.root) == 3
    # A crash after the files were renamed, before the checkpoint moved: written again,
    # never twice.
    backend_for(lake.store).save_checkpoint(consumer_name(lake.ws), done)
    assert export_events(lake.store, lake.ws, lake.root) == 3
    assert lake.one("SELECT count(*), count(DISTINCT log_offset) FROM events") == 6
    assert lake.sql("SELECT count(DISTINCT log_offset) FROM events")[1] == [(6,)]
    # Even back to the middle of a file, and in small chunks.
    backend_for(lake.store).save_checkpoint(consumer_name(lake.ws), done - 1)
    assert export_events(lake.store, lake.ws, lake.root, chunk=2) == 4
    assert lake.sql("SELECT count(*), count(DISTINCT log_offset) FROM events")[1] == [(6, 6)]
    with lake.store.engine.connect() as conn:
        assert conn.execute(sa.select(checkpoints.c.log_offset).where(
            checkpoints.c.consumer == f"lake:{lake.ws}")).scalar() > done  # fmt: skip
    assert not list(lake.root.rglob("*.tmp"))


def test_profile_snapshot_replaces_the_previous_one(fed):
    root = fed.root / "profiles" / f"workspace_id={fed.ws}"
    first = [p.name for p in root.iterdir()]
    export_profiles(fed.store, fed.ws, fed.root)
    second = [p.name for p in root.iterdir()]
    assert len(first) == len(second) == 1 and first != second
    assert fed.one("SELECT count(*) FROM identifiers") >= 4


def test_an_empty_workspace_has_empty_views(lake):
    for view in ("events", "tracks", "identifies", "pages", "profiles", "identifiers",
                 "traits", "memberships"):  # fmt: skip
        assert lake.one(f"SELECT count(*) FROM {view}") == 0


def test_another_workspace_is_never_visible(fed):
    assert fed.one("SELECT count(*) FROM events", fed.other) == 1
    assert (
        fed.one("SELECT count(*) FROM events WHERE properties_json LIKE '%other-workspace%'") == 0
    )
    other = events_dir(fed.root, fed.other)
    mine = events_dir(fed.root, fed.ws)
    # The same read of the workspace's own files works: the refusals below are the
    # sandbox's, not a syntax or a missing file.
    assert fed.one(f"SELECT count(*) FROM read_parquet('{mine}/*/*.parquet')") > 0
    escapes = [
        f"SELECT * FROM read_parquet('{other}/*/*.parquet')",
        f"SELECT * FROM read_parquet('{fed.root}/events/*/*/*.parquet')",
        f"SELECT * FROM read_parquet('{mine}/../workspace_id={fed.other}/*/*.parquet')",
        f"SELECT * FROM read_csv('{other}/*/*.parquet')",
        f"SELECT * FROM read_text('{fed.root}/profiles/workspace_id={fed.other}/**')",
        "SELECT * FROM read_text('/etc/passwd')",
        f"COPY (SELECT * FROM events) TO '{fed.root}/copied.parquet'",
        f"COPY events FROM '{other}/day=2024-03-01/x.parquet'",
        "INSTALL httpfs",
        "LOAD httpfs",
        f"ATTACH '{fed.root}/x.duckdb' AS x",
        "SET enable_external_access = true",
        "RESET allowed_directories",
    ]
    for sql in escapes:
        with pytest.raises(LakeQueryError):
            fed.sql(sql)
    assert not (fed.root / "copied.parquet").exists()


@pytest.mark.parametrize("sql", [
    "INSERT INTO events (log_offset) VALUES (1)",
    "CREATE TABLE t AS SELECT 1",
    "DROP VIEW events",
    "PRAGMA version",
    "DELETE FROM events",
    "UPDATE events SET event = 'x'",
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP VIEW events",
    "EXPLAIN SELECT 1",
    "CALL pragma_version()",
    "",
    "  ",
])  # fmt: skip
def test_only_one_select_runs(fed, sql):
    with pytest.raises(LakeQueryError):
        fed.sql(sql)


def test_bad_sql_says_why(fed):
    with pytest.raises(LakeQueryError, match="(?i)syntax"):
        fed.sql("SELEC 1")
    with pytest.raises(LakeQueryError, match="nope"):
        fed.sql("SELECT * FROM nope")
    with pytest.raises(LakeQueryError, match="only SELECT"):
        fed.sql("DROP VIEW events")


def _lake_values(root) -> str:
    """Every value in every Parquet file of the lake, as text."""
    return " ".join(
        orjson.dumps(pq.read_table(path).to_pylist(), default=str).decode()
        for path in root.rglob("*.parquet")
    )


def test_a_privacy_deletion_removes_the_person_from_the_lake(fed):
    assert plait.lake.erase_from_lake in [step for _, step in privacy.AFTER_COMMIT_STEPS]
    before = _lake_values(fed.root)
    assert "cat.secret@example.com" in before and "cat-sku-77" in before
    created = privacy.create_request(fed.store, fed.ws, "DELETE_ONLY", "USER_ID", ["u-cat"], "t")
    done = privacy.run_request(fed.store, created["id"], ["u-cat"], settle_seconds=0)
    assert done["status"] == "FINISHED", done
    assert done["receipt"]["lake"]["event_rows_removed"] == 3
    assert done["receipt"]["lake"]["profile_snapshot"] == "rewritten"
    after = _lake_values(fed.root)
    for marker in ("cat.secret@example.com", "cat-sku-77", "anon-cat", "u-cat"):
        assert marker not in after
    assert "ann@example.com" in after and "other-workspace-marker" in after
    assert fed.one("SELECT count(*) FROM events") == 3
    assert fed.one("SELECT count(*) FROM profiles") == 1
    # The next export does not bring them back.
    assert fed.export() == 0
    assert "cat-sku-77" not in _lake_values(fed.root)


def test_a_deletion_without_a_lake_creates_none(lake):
    lake.feed(ACME)
    created = privacy.create_request(lake.store, lake.ws, "DELETE_ONLY", "USER_ID", ["u-cat"], "t")
    done = privacy.run_request(lake.store, created["id"], ["u-cat"], settle_seconds=0)
    assert done["receipt"]["lake"]["event_rows_removed"] == 0
    assert not lake.root.exists()


def test_sql_api(store, tmp_path):
    import httpx
    from conftest import start_server

    lake = Lake(store, tmp_path / "lake")
    lake.feed(ACME)
    lake.feed(OTHER, lake.other)
    repo = Workspaces(store)
    _, token = repo.create_token(lake.ws, "analyst", ["lake:read"])
    _, other_token = repo.create_token(lake.other, "analyst", ["lake:read"])
    _, no_scope = repo.create_token(lake.ws, "profiles", ["profiles:read"])
    thread, url = start_server(store, lake_dir=tmp_path / "lake", pipeline=False)
    try:

        def post(body, secret=token):
            return httpx.post(f"{url}/api/v1/sql", json=body, timeout=30,
                              headers={"Authorization": f"Bearer {secret}"})  # fmt: skip

        r = post({"sql": "SELECT event, count(*) AS n FROM tracks GROUP BY 1 ORDER BY 1"})
        assert r.status_code == 200, r.text
        assert r.json() == {"columns": ["event", "n"], "truncated": False,
                            "rows": [["Order Completed", 2], ["Product Viewed", 1]]}  # fmt: skip
        r = post({"sql": "SELECT timestamp FROM events ORDER BY 1 LIMIT 1"})
        assert r.json()["rows"] == [["2024-03-01T10:00:00Z"]]
        r = post({"sql": "SELECT count(*) FROM events"}, other_token)
        assert r.json()["rows"] == [[1]]
        r = post({"sql": "SELECT * FROM events", "limit": 2})
        assert len(r.json()["rows"]) == 2 and r.json()["truncated"] is True
        escape = f"SELECT * FROM read_parquet('{events_dir(lake.root, lake.other)}/*/*')"
        for bad in ("DROP VIEW events", "SELEC 1", "SELECT 1; SELECT 2", escape):
            r = post({"sql": bad})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "invalid_sql" and r.json()["error"]["message"]
        assert post({}).status_code == 400
        assert post({"sql": "SELECT 1"}, no_scope).status_code == 403
    finally:
        thread.stop()


def test_plait_sql_command(lake, store_url, monkeypatch):
    from plait import cli
    from plait.settings import get_settings

    lake.feed(ACME)
    monkeypatch.setenv("PLAIT_DATABASE_URL", store_url)
    monkeypatch.setenv("PLAIT_LAKE_DIR", str(lake.root))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(cli.app, ["sql", "SELECT count(*) AS n FROM tracks", "-w", "acme",
                                         "--json"], catch_exceptions=False)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert '"rows"' in result.output and "3" in result.output
        result = runner.invoke(cli.app, ["sql", "DROP VIEW events", "-w", "acme"])
        assert result.exit_code == 1 and "only SELECT" in result.output
    finally:
        get_settings.cache_clear()
