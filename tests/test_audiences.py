"""Computed traits and audiences through the pipeline (real time), the scheduler (time
passing) and the lake (backfill), on both backends: memberships, their history, the
messages emitted into the log, and agreement between the real-time and batch paths."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa
from log_messages import append

from plait.audiences import batch, manage, scheduler
from plait.audiences.engine import AUDIENCE_SOURCE
from plait.identity.explain import find_profile
from plait.identity.rules import default_rules
from plait.lake import use_lake_dir
from plait.log import backend_for
from plait.pipeline.maintenance import rebuild
from plait.pipeline.runner import Pipeline
from plait.store.schema import audience_history, audience_members, log_messages, sources, traits
from plait.store.workspaces import Invalid, Workspaces

DAY = 86_400_000
NOW = int(datetime(2024, 3, 31, tzinfo=UTC).timestamp() * 1000)


def at(days_ago: float) -> str:
    ms = NOW - int(days_ago * DAY)
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def order(user: str, days_ago: float, revenue: float, **extra) -> dict:
    return {"type": "track", "userId": user, "event": "Order Completed",
            "properties": {"revenue": revenue, **extra}, "timestamp": at(days_ago)}  # fmt: skip


TRAITS = [
    {"key": "orders_30d", "kind": "count", "event": "Order Completed", "window": "30 days"},
    {"key": "lifetime_revenue", "kind": "sum", "event": "Order Completed",
     "property": "revenue"},
]  # fmt: skip
AUDIENCES = [
    {"key": "frequent_buyers", "name": "Frequent buyers",
     "definition": 'performed "Order Completed" at least 2 times in last 30 days '
                   "where properties.revenue > 50"},
    {"key": "big_spenders", "definition": "computed.lifetime_revenue >= 500", "emit": "both"},
    {"key": "french", "definition": 'traits.country = "FR"', "emit": "track"},
]  # fmt: skip


class World:
    def __init__(self, store, lake_dir):
        self.store, self.lake_dir = store, lake_dir
        self.repo = Workspaces(store)
        self.ws = self.repo.create_workspace("acme")["id"]
        self.src = self.repo.create_source(self.ws, "Website", "javascript")[0]["id"]
        self.now = NOW
        self.pipeline = Pipeline(store, clock=lambda: self.now, lake_dir=lake_dir)

    def define(self, traits=TRAITS, audiences=AUDIENCES):
        sections = {"computed_traits": traits, "audiences": audiences}
        manage.check(self.repo, self.ws, sections)
        manage.save(self.repo, self.ws, sections)

    def feed(self, messages):
        append(self.store, self.ws, messages, self.src)
        self.catch_up()

    def catch_up(self):
        while self.pipeline.catch_up(self.ws):  # emitted messages are processed too
            pass

    def profile(self, ref):
        with self.store.engine.connect() as conn:
            return find_profile(conn, self.ws, ref, default_rules())

    def members(self, key):
        with self.store.engine.connect() as conn:
            return set(conn.scalars(sa.select(audience_members.c.profile_id).where(
                audience_members.c.workspace_id == self.ws,
                audience_members.c.audience_key == key)))  # fmt: skip

    def history(self, key):
        with self.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(audience_history.c.profile_id, audience_history.c.change,
                          audience_history.c.at, audience_history.c.reason)
                .where(audience_history.c.workspace_id == self.ws,
                       audience_history.c.audience_key == key)
                .order_by(audience_history.c.id))]  # fmt: skip

    def emitted(self):
        with self.store.engine.connect() as conn:
            source = conn.scalar(sa.select(sources.c.id).where(
                sources.c.workspace_id == self.ws, sources.c.name == AUDIENCE_SOURCE))  # fmt: skip
            if source is None:
                return []
            return [orjson.loads(p) for p in conn.scalars(
                sa.select(log_messages.c.payload).where(log_messages.c.source_id == source)
                .order_by(log_messages.c.log_offset))]  # fmt: skip

    def trait(self, pid, key):
        with self.store.engine.connect() as conn:
            value = conn.scalar(
                sa.select(traits.c.value).where(traits.c.profile_id == pid, traits.c.key == key)
            )
        return None if value is None else orjson.loads(value)

    def profile_audiences(self, pid):
        with self.store.engine.connect() as conn:
            return manage.profile_audiences(conn, self.ws, pid)


@pytest.fixture
def world(store, tmp_path):
    use_lake_dir(tmp_path / "lake")
    yield World(store, tmp_path / "lake")
    use_lake_dir(None)


def test_an_event_that_qualifies_a_profile_makes_it_enter_and_emits_segments_shapes(world):
    world.define()
    world.feed([{"type": "identify", "userId": "ann", "traits": {"country": "FR"},
                 "timestamp": at(3)}, order("ann", 2, 60)])  # fmt: skip
    ann = world.profile("user_id:ann")
    assert world.members("frequent_buyers") == set()
    assert world.members("french") == {ann}
    assert world.profile_audiences(ann)["computed_traits"] == {
        "orders_30d": 1, "lifetime_revenue": 60,
    }  # fmt: skip
    world.feed([order("ann", 1, 70)])
    assert world.members("frequent_buyers") == {ann}
    assert world.history("frequent_buyers") == [(ann, "entered", NOW, "event")]
    sent = world.emitted()
    identify = [m for m in sent if m["type"] == "identify" and "frequent_buyers" in m["traits"]]
    assert len(identify) == 1 and identify[0]["traits"] == {"frequent_buyers": True}
    assert identify[0]["userId"] == "ann"
    personas = identify[0]["context"]["personas"]
    assert personas["computation_class"] == "audience"
    assert personas["computation_key"] == "frequent_buyers" and personas["space_id"] == world.ws
    # "french" emits a track only, Segment's Audience Entered with audience_key
    tracks = [m for m in sent if m["type"] == "track" and m["event"] == "Audience Entered"]
    assert [t["properties"] for t in tracks] == [{"audience_key": "french", "french": True}]
    # the identify came back through the pipeline: the flag and the computed traits are traits
    assert world.trait(ann, "frequent_buyers") is True
    assert world.trait(ann, "orders_30d") == 2 and world.trait(ann, "lifetime_revenue") == 130
    # only a change is emitted: the same state again sends nothing more
    before = len(world.emitted())
    world.feed([{"type": "page", "userId": "ann", "name": "Home", "timestamp": at(0.5)}])
    assert len(world.emitted()) == before


def test_time_passing_makes_a_profile_leave_at_the_window_edge(world):
    world.define()
    world.feed([order("bob", 20, 60), order("bob", 10, 80)])
    bob = world.profile("user_id:bob")
    assert world.members("frequent_buyers") == {bob}
    with world.store.engine.connect() as conn:
        due = conn.execute(sa.text("SELECT due_at FROM audience_schedule")).scalar()
    assert due == NOW - 20 * DAY + 30 * DAY  # the older order leaves the window then
    assert scheduler.expire(world.store, world.ws, due - 1).evaluated == 0
    world.now = due
    report = scheduler.expire(world.store, world.ws, due)
    assert report.exited == 1 and world.members("frequent_buyers") == set()
    assert world.history("frequent_buyers")[-1] == (bob, "exited", due, "time")
    world.catch_up()
    assert world.trait(bob, "frequent_buyers") is False
    assert world.trait(bob, "orders_30d") == 1  # the computed trait changed with it


def test_a_new_audience_is_backfilled_over_the_lake_and_agrees_with_real_time(world):
    world.feed([order("ann", 2, 60), order("ann", 1, 70), order("cat", 5, 600),
                {"type": "identify", "userId": "cat", "traits": {"country": "FR"},
                 "timestamp": at(5)}])  # fmt: skip
    assert world.members("frequent_buyers") == set()  # nothing defined yet
    world.define()
    report = scheduler.reconcile(world.store, world.ws, world.lake_dir, NOW)
    ann, cat = world.profile("user_id:ann"), world.profile("user_id:cat")
    assert report.from_lake == 2 and report.entered == 3
    assert world.members("frequent_buyers") == {ann}
    assert world.members("big_spenders") == {cat} and world.members("french") == {cat}
    assert world.history("big_spenders") == [(cat, "entered", NOW, "backfill")]
    world.catch_up()
    # the same state evaluated in memory changes nothing
    with world.store.write() as conn:
        from plait.audiences import engine

        defs = scheduler.definitions(world.store, world.ws)
        results = engine.evaluate(conn, world.ws, defs, [ann, cat], NOW)
        changes = engine.apply(conn, world.ws, defs, results, NOW, "event")
    assert (changes.entered, changes.exited, changes.traits) == (0, 0, 0)
    # the pipeline's tick reconciles once per change of definition
    assert not scheduler.needs_reconcile(world.store, world.ws, defs, NOW, 3_600_000)


def test_merged_profiles_leave_their_audiences_and_the_survivor_is_evaluated(world):
    world.define()
    world.feed([{"type": "track", "anonymousId": "dev-1", "event": "Order Completed",
                 "properties": {"revenue": 90}, "timestamp": at(3)},
                {"type": "track", "anonymousId": "dev-1", "event": "Order Completed",
                 "properties": {"revenue": 95}, "timestamp": at(2)},
                order("dan", 4, 60), order("dan", 3, 70)])  # fmt: skip
    anon, dan = world.profile("anonymous_id:dev-1"), world.profile("user_id:dan")
    assert world.members("frequent_buyers") == {anon, dan}
    world.feed([{"type": "identify", "userId": "dan", "anonymousId": "dev-1",
                 "timestamp": at(1)}])  # fmt: skip
    survivor = world.profile("user_id:dan")
    assert survivor == anon == world.profile("anonymous_id:dev-1")  # the oldest survives
    assert world.members("frequent_buyers") == {survivor}
    assert world.history("frequent_buyers")[-1] == (dan, "exited", NOW, "merged")
    assert world.profile_audiences(dan) == {"audiences": [], "computed_traits": {}}
    survivor_traits = world.profile_audiences(survivor)["computed_traits"]
    assert survivor_traits == {"orders_30d": 4, "lifetime_revenue": 315}


def test_definitions_are_checked_before_anything_is_stored(world):
    with pytest.raises(Invalid) as bad:
        manage.put(world.repo, world.ws, "audience",
                   {"key": "x", "definition": 'performed "A" at least\n two times'})  # fmt: skip
    assert bad.value.field == "audiences[0].definition" and "line 2, column 2" in str(bad.value)
    with pytest.raises(Invalid, match="no computed trait 'no'"):
        manage.put(world.repo, world.ws, "audience", {"key": "y", "definition": "computed.no > 1"})
    assert manage.documents(world.repo, world.ws)["audiences"] == []
    world.define()
    with pytest.raises(Invalid, match="no audience 'q'"):
        manage.put(world.repo, world.ws, "audience", {"key": "z", "definition": 'audience "q"'})
    vip = 'audience "big_spenders" or audience "french"'
    manage.put(world.repo, world.ws, "audience", {"key": "vip", "definition": vip})
    with pytest.raises(Invalid, match="no audience 'big_spenders'"):
        manage.delete(world.repo, world.ws, "audience", "big_spenders")  # vip names it


def test_sql_traits_run_over_the_lake_on_their_schedule(world):
    world.feed([order("ann", 2, 60), order("bob", 1, 5)])
    world.define(
        traits=[{"key": "top_revenue", "kind": "sql", "schedule": "1 hour",
                 "sql": "SELECT profile_id, sum(CAST(json_extract(properties_json, '$.revenue')"
                        " AS DOUBLE)) AS value FROM tracks GROUP BY 1 HAVING value > 10"}],
        audiences=[{"key": "sql_top", "definition": "computed.top_revenue > 50"}],
    )  # fmt: skip
    defs = scheduler.definitions(world.store, world.ws)
    assert scheduler.needs_reconcile(world.store, world.ws, defs, NOW, 3_600_000)
    scheduler.reconcile(world.store, world.ws, world.lake_dir, NOW)
    ann = world.profile("user_id:ann")
    assert world.profile_audiences(ann)["computed_traits"] == {"top_revenue": 60}
    assert world.members("sql_top") == {ann}
    assert not scheduler.needs_reconcile(world.store, world.ws, defs, NOW + 1000, 10**12)
    assert scheduler.needs_reconcile(world.store, world.ws, defs, NOW + 3_600_000, 10**12)
    # a real-time evaluation reads the SQL trait's stored value (it does not run the SQL)
    world.feed([{"type": "page", "userId": "ann", "name": "Home", "timestamp": at(0)}])
    assert world.members("sql_top") == {ann}
    with pytest.raises(Invalid, match="only SELECT"):
        manage.put(world.repo, world.ws, "computed_trait",
                   {"key": "bad", "kind": "sql", "sql": "DELETE FROM events"})  # fmt: skip


def test_a_rebuild_keeps_memberships_and_emits_nothing_new(world):
    world.define()
    world.feed([order("ann", 2, 60), order("ann", 1, 70), order("cat", 5, 600)])
    before = (world.members("frequent_buyers"), world.members("big_spenders"))
    emitted = len(world.emitted())
    rebuild(world.store, world.ws)
    world.catch_up()
    report = scheduler.reconcile(world.store, world.ws, world.lake_dir, NOW, reason="rebuild")
    assert (report.entered, report.exited) == (0, 0)
    assert (world.members("frequent_buyers"), world.members("big_spenders")) == before
    assert len(world.emitted()) == emitted


def test_batch_members_equal_the_real_time_members(world):
    world.define()
    world.feed([order(f"u{i}", i % 40, 40 + i) for i in range(60)]
               + [order(f"u{i}", (i * 7) % 35, 100) for i in range(0, 60, 3)])  # fmt: skip
    defs = scheduler.definitions(world.store, world.ws)
    manage.fresh_lake(world.store, world.ws, world.lake_dir, 0)
    lake = batch.audience_members(world.lake_dir, world.ws, defs, list(defs.audiences), NOW)
    for key in defs.audiences:
        assert lake[key] == world.members(key), key
    assert world.members("frequent_buyers")  # not vacuous


def test_a_privacy_deletion_removes_the_persons_memberships_history_and_values(world):
    from plait.govern import privacy
    from plait.store.schema import audience_schedule, computed_values

    world.define()
    world.feed([{"type": "identify", "userId": "zoe", "traits": {"email": "zoe@example.com",
                 "country": "FR"}, "timestamp": at(3)}, order("zoe", 2, 600),
                order("zoe", 1, 70), order("yan", 2, 60), order("yan", 1, 70)])  # fmt: skip
    zoe, yan = world.profile("user_id:zoe"), world.profile("user_id:yan")
    assert zoe in world.members("frequent_buyers") and zoe in world.members("french")
    request = privacy.create_request(world.store, world.ws, "DELETE_INTERNAL", "EMAIL",
                                     ["zoe@example.com"], "tok_t")  # fmt: skip
    done = privacy.run_request(world.store, request["id"], ["zoe@example.com"], settle_seconds=0)
    assert done["status"] == "FINISHED", done
    with world.store.engine.connect() as conn:
        for table in (audience_members, audience_history, computed_values, audience_schedule):
            held = set(conn.scalars(sa.select(table.c.profile_id)))
            assert zoe not in held, table.name
        assert yan in set(conn.scalars(sa.select(computed_values.c.profile_id)))
    assert world.members("frequent_buyers") == {yan}
    assert not [m for m in world.emitted() if m.get("userId") == "zoe"]  # their log rows too


def test_a_preview_samples_members_with_their_traits_and_estimates_big_lakes(world, monkeypatch):
    import pyarrow.parquet as pq

    from plait.lake import writer

    people = [f"u{i:03d}" for i in range(60)]
    world.feed([{"type": "identify", "userId": u, "traits": {"n": i}, "timestamp": at(3)}
                for i, u in enumerate(people)]
               + [order(u, 1, 10 * i) for i, u in enumerate(people)])  # fmt: skip
    world.define()
    monkeypatch.setattr(writer, "SNAPSHOT_ROW_GROUP", 16)
    manage.fresh_lake(world.store, world.ws, world.lake_dir, 0)
    # the snapshot is sorted by profile in small row groups (a sample's lookup reads few)
    path = writer.current_snapshot(world.lake_dir, world.ws) / "profiles.parquet"
    ids = pq.read_table(path, columns=["profile_id"]).column(0).to_pylist()
    assert len(ids) == 60 and ids == sorted(ids)
    assert pq.ParquetFile(path).num_row_groups == 4
    defs = scheduler.definitions(world.store, world.ws)
    rich = defs.audiences["big_spenders"]  # lifetime revenue >= 500: i >= 50, 10 people
    exact = batch.preview(world.lake_dir, world.ws, defs, rich, NOW, sample=4)
    assert (exact["size"], exact["profiles"], exact["estimated"]) == (10, 60, False)
    assert len(exact["sample"]) == 4
    for member in exact["sample"]:  # each with the traits of its profile
        n = member["traits"]["n"]
        assert n >= 50 and member["profile_id"] == world.profile(f"user_id:{people[n]}")
    # a lake past exact_events is evaluated on a hash sample of profiles: an estimate
    estimate = batch.preview(world.lake_dir, world.ws, defs, rich, NOW, exact_events=40)
    assert estimate["estimated"] and estimate["sampled"] == 1 / 3
    assert estimate["size"] % 3 == 0 and estimate["profiles"] % 3 == 0
    assert 0 < estimate["profiles"] <= 3 * 60


def test_the_audience_step_evaluates_outside_the_write_lock(world, monkeypatch):
    """After a batch commits, its profiles are evaluated outside the pipeline's write
    transaction: on SQLite another writer (ingestion) can take the database's one write
    lock meanwhile, on PostgreSQL another worker the workspace's lock."""
    import sqlite3

    from plait.audiences import stage
    from plait.store.locks import workspace_lock

    world.define()
    took = []
    evaluate_batch = stage.evaluate_batch

    def while_evaluating(conn, batch, defs, now):
        if world.store.kind == "sqlite":
            other = sqlite3.connect(world.store.url.database, timeout=0.1, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # "database is locked" if the step held it
                other.execute("ROLLBACK")
                took.append(True)
            finally:
                other.close()
        else:
            with world.store.engine.begin() as other:
                took.append(workspace_lock(other, world.ws, wait=False))
        return evaluate_batch(conn, batch, defs, now)

    monkeypatch.setattr(stage, "evaluate_batch", while_evaluating)
    world.feed([order("ann", 2, 60), order("ann", 1, 70)])
    assert took and all(took) and world.members("frequent_buyers") == {world.profile("user_id:ann")}


def test_a_crash_between_the_batch_and_the_audience_step_is_recovered(world, monkeypatch):
    """The pipeline committed batches whose audience step never ran (the process died):
    the next batch finds the step's checkpoint behind and evaluates the whole range from
    the profiles' histories, merges included."""
    from plait.audiences import stage

    world.define()
    world.feed([order("dan", 4, 60)])
    monkeypatch.setattr(stage, "follow", lambda *args: None)  # the process dies first
    world.feed([{"type": "track", "anonymousId": "dev-1", "event": "Order Completed",
                 "properties": {"revenue": 90}, "timestamp": at(3)},
                order("dan", 3, 70),
                {"type": "identify", "userId": "cat", "traits": {"country": "FR"},
                 "timestamp": at(2)}])  # fmt: skip
    dan, anon = world.profile("user_id:dan"), world.profile("anonymous_id:dev-1")
    assert world.members("frequent_buyers") == set() and world.members("french") == set()
    world.feed(
        [{"type": "identify", "userId": "dan", "anonymousId": "dev-1", "timestamp": at(1)}]
    )  # the merge: still no audience step
    monkeypatch.undo()
    with world.store.engine.connect() as conn:
        behind = backend_for(world.store).position(stage.consumer_name(world.ws), conn)
    world.feed([order("eve", 1, 10)])  # the next batch: the range is recovered
    survivor = world.profile("user_id:dan")
    assert survivor in (dan, anon)
    assert world.members("frequent_buyers") == {survivor}
    assert world.members("french") == {world.profile("user_id:cat")}
    assert world.profile_audiences(survivor)["computed_traits"]["orders_30d"] == 3
    gone = ({dan, anon} - {survivor}).pop()
    assert world.profile_audiences(gone) == {"audiences": [], "computed_traits": {}}
    with world.store.engine.connect() as conn:
        assert backend_for(world.store).position(stage.consumer_name(world.ws), conn) > behind
    # the state is what the batch path finds over the lake
    report = scheduler.reconcile(world.store, world.ws, world.lake_dir, NOW)
    assert (report.entered, report.exited) == (0, 0)


def test_an_audience_evaluation_that_fails_is_passed_over_and_reconciled(world, monkeypatch):
    from plait.audiences import stage
    from plait.observability import AUDIENCE_PASSED_OVER

    world.define()
    before = AUDIENCE_PASSED_OVER._value.get()

    def broken(*args):
        raise ValueError("a bug in an evaluation")

    monkeypatch.setattr(stage, "evaluate_batch", broken)
    monkeypatch.setattr(stage, "recover", broken)
    world.feed([order("ann", 2, 60), order("ann", 1, 70)])  # the pipeline goes on
    ann = world.profile("user_id:ann")
    assert ann is not None and world.members("frequent_buyers") == set()
    assert AUDIENCE_PASSED_OVER._value.get() > before
    monkeypatch.undo()
    world.feed([order("bob", 1, 5)])  # the next batch is evaluated as usual
    assert world.profile_audiences(world.profile("user_id:bob"))["computed_traits"]
    scheduler.reconcile(world.store, world.ws, world.lake_dir, NOW)  # sets ann right
    assert world.members("frequent_buyers") == {ann}
