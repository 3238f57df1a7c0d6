"""Privacy requests (Segment's regulations), suppressions and data subject access requests,
on SQLite and PostgreSQL: a deleted person leaves no trace in any table (nor, on SQLite, in
the database file or its WAL), other people are untouched, receipts and the audit log hold
no personal data."""

from __future__ import annotations

import re
import threading
import time

import httpx
import orjson
import pytest
import sqlalchemy as sa
from log_messages import append
from typer.testing import CliRunner

from plait.govern import audit, erase, privacy
from plait.govern.dsar import export_person
from plait.govern.identity_hash import identity_hash
from plait.identity.explain import find_profile
from plait.identity.rules import default_rules
from plait.pipeline.maintenance import unmerge
from plait.pipeline.runner import Pipeline, consumer_name
from plait.store.schema import (
    log_messages,
    message_profiles,
    metadata,
    privacy_requests,
    profiles,
    suppressions,
    traits,
)
from plait.store.workspaces import Invalid, Workspaces

T = "2024-03-{:02d}T10:00:00Z"

PLAN = {
    "id": "main",
    "sources": ["Website"],
    "modes": {"unplanned_event": "block"},
    "events": {
        "Product Viewed": {"properties": {"type": "object",
                                          "properties": {"price": {"type": "number"}}}},
        "Segment Consent Preference Updated": {},
    },
}  # fmt: skip
RENAME = [{"name": "tidy", "sources": ["Website"], "rules": [
    {"rename_property": {"from": "properties.colour", "to": "properties.color"}}]}]  # fmt: skip

JO_PROCESSED = [
    {"type": "page", "anonymousId": "anon-jo-7f3a", "name": "Home",
     "properties": {"path": "/"}, "timestamp": T.format(1)},
    {"type": "track", "anonymousId": "anon-jo-7f3a", "event": "Product Viewed",
     "properties": {"price": "cheap-jo-price", "colour": "jo-teal"}, "timestamp": T.format(1)},
    {"type": "identify", "userId": "user-jo-4411", "anonymousId": "anon-jo-7f3a",
     "traits": {"email": "Jo.Deleted@Example.com", "name": "Joanna Zyxwv",
                "phone": "+1 415 555 0199", "plan": "gold-jo-plan"}, "timestamp": T.format(2)},
    {"type": "identify", "anonymousId": "anon-jo-second-9c1d",
     "traits": {"email": "jo.deleted@example.com", "city": "Jo-Town-Qwx"},
     "timestamp": T.format(3)},
    {"type": "group", "userId": "user-jo-4411", "groupId": "grp-acme-1",
     "traits": {"plan": "jo-group-plan-x"}, "timestamp": T.format(5)},
    {"type": "track", "userId": "user-jo-4411", "event": "Segment Consent Preference Updated",
     "context": {"consent": {"categoryPreferences": {"Advertising": True}}},
     "timestamp": T.format(6)},
    {"type": "track", "userId": "user-jo-4411", "anonymousId": "anon-jo-blocked-only",
     "event": "Secret Jo Event", "properties": {"note": "jo-blocked-secret"},
     "timestamp": T.format(7)},
    {"type": "alias", "userId": "user-jo-4411", "previousId": "anon-jo-old-alias",
     "timestamp": T.format(8)},
]  # fmt: skip
OTHERS_PROCESSED = [
    {"type": "identify", "userId": "user-bob-1",
     "traits": {"email": "bob@example.com", "name": "Bob Keeper"}, "timestamp": T.format(1)},
    {"type": "group", "userId": "user-bob-1", "groupId": "grp-acme-1",
     "traits": {"plan": "bob-group-plan", "name": "Acme Corp"}, "timestamp": T.format(4)},
    {"type": "track", "userId": "user-bob-1", "event": "Product Viewed",
     "properties": {"price": 5, "colour": "red"}, "timestamp": T.format(4)},
    {"type": "track", "userId": "user-bob-1", "event": "Unplanned Bob", "timestamp": T.format(4)},
    {"type": "page", "anonymousId": "anon-ann-1", "properties": {"path": "/x"},
     "timestamp": T.format(2)},
]  # fmt: skip
JO_LATE = [  # after the unmerge (which resolves the profile's messages again, in one go)
    {"type": "page", "anonymousId": "anon-jo-late-5e", "properties": {"path": "/late"},
     "timestamp": T.format(8)},
    {"type": "identify", "userId": "user-jo-4411", "anonymousId": "anon-jo-late-5e",
     "timestamp": T.format(8)},
]  # fmt: skip
JO_UNPROCESSED = [
    {"type": "track", "userId": "user-jo-4411", "event": "Product Viewed",
     "properties": {"price": 1, "memo": "jo-unprocessed-secret"}, "timestamp": T.format(9)},
    {"type": "identify", "userId": "user-jo-4411", "anonymousId": "anon-jo-third",
     "timestamp": T.format(9)},
    {"type": "page", "anonymousId": "anon-jo-third", "properties": {"path": "/jo-third-page"},
     "timestamp": T.format(9)},
]  # fmt: skip
OTHERS_UNPROCESSED = [
    {"type": "track", "userId": "user-bob-1", "event": "Product Viewed",
     "properties": {"price": 2}, "timestamp": T.format(9)},
]  # fmt: skip
JO_MARKERS = (
    "anon-jo-7f3a", "user-jo-4411", "jo.deleted@example.com", "joanna zyxwv", "415 555 0199",
    "+14155550199", "gold-jo-plan", "anon-jo-second-9c1d", "jo-town-qwx", "jo-group-plan-x",
    "anon-jo-blocked-only", "jo-blocked-secret", "anon-jo-old-alias", "anon-jo-third",
    "jo-unprocessed-secret", "jo-third-page", "cheap-jo-price", "jo-teal", "anon-jo-late-5e",
)  # fmt: skip


class World:
    def __init__(self, store):
        self.store = store
        repo = Workspaces(store)
        self.ws = repo.create_workspace("acme")["id"]
        self.source_id = repo.create_source(self.ws, "Website", "javascript")[0]["id"]
        repo.put_setting(self.ws, "tracking_plans", [PLAN])
        repo.put_setting(self.ws, "transformations", RENAME)

    def feed(self, messages, process=True) -> list[int]:
        stored = append(self.store, self.ws, messages, self.source_id)
        if process:
            Pipeline(self.store).catch_up(self.ws)
        ids = [m["messageId"] for m in stored]
        with self.store.engine.connect() as conn:
            found = dict(conn.execute(
                sa.select(log_messages.c.message_id, log_messages.c.log_offset)
                .where(log_messages.c.message_id.in_(ids))
            ).all())  # fmt: skip
        return [found[i] for i in ids]

    def profile(self, ref: str) -> str:
        with self.store.engine.connect() as conn:
            return find_profile(conn, self.ws, ref, default_rules())

    def request(self, kind: str, subject_type: str, ids: list[str]) -> dict:
        created = privacy.create_request(self.store, self.ws, kind, subject_type, ids, "tok_t")
        return privacy.run_request(self.store, created["id"], ids, settle_seconds=0)


@pytest.fixture
def world(store) -> World:
    return World(store)


def populated(world: World) -> dict:
    """Jo, Bob and Ann, with merges, a group, consent, violations, a blocked message, an
    unmerge, and messages the pipeline has not processed yet."""
    jo = world.feed(JO_PROCESSED)
    others = world.feed(OTHERS_PROCESSED)
    unmerge(world.store, world.ws, "user_id:user-jo-4411", "anonymous_id:anon-jo-second-9c1d",
            reason="shared device")  # fmt: skip
    jo += world.feed(JO_LATE[:1]) + world.feed(JO_LATE[1:])
    jo += world.feed(JO_UNPROCESSED, process=False)
    others += world.feed(OTHERS_UNPROCESSED, process=False)
    return {"jo": jo, "others": others}


def snapshot(store) -> dict[str, set[tuple]]:
    with store.engine.connect() as conn:
        return {t.name: {tuple(row) for row in conn.execute(sa.select(t))}
                for t in metadata.sorted_tables}  # fmt: skip


def marked(row, markers=JO_MARKERS) -> list[str]:
    text = repr(row).lower()
    return [m for m in markers if m in text]


def traces(store) -> dict[str, list]:
    """Every row of every table that holds one of Jo's values."""
    found = {}
    for name, rows in snapshot(store).items():
        hits = [(row, marked(row)) for row in rows if marked(row)]
        if hits:
            found[name] = hits
    return found


# The pipeline's lock and checkpoint -------------------------------------------------------


def test_erasure_reads_the_pipelines_checkpoint():
    for ws in ("ws_a", "ws_Zz9", ""):
        assert erase.pipeline_consumer(ws) == consumer_name(ws)


def test_a_deletion_holds_the_pipelines_workspace_lock(world):
    world.feed(JO_PROCESSED[:2])
    append(world.store, world.ws, OTHERS_PROCESSED[:1], world.source_id)
    results = []
    with erase.workspace_write(world.store, world.ws) as conn:
        conn.execute(sa.select(1))
        worker = threading.Thread(target=lambda: results.append(
            Pipeline(world.store).run_batch(world.ws)))  # fmt: skip
        worker.start()
        worker.join(0.5)
        if world.store.kind == "sqlite":
            assert worker.is_alive()  # waiting for the write lock
        else:
            assert results == [0]  # the workspace is busy: the worker moves on
    worker.join(30)
    if world.store.kind == "sqlite":
        assert results == [1]
    assert Pipeline(world.store).catch_up(world.ws) == (1 if results == [0] else 0)


# Deletion -------------------------------------------------------------------------------


def test_deleting_a_person_leaves_no_trace_and_touches_no_one_else(world):
    offsets = populated(world)
    store, ws = world.store, world.ws
    jo_ids = {world.profile("user_id:user-jo-4411")}
    with store.engine.connect() as conn:
        jo_ids |= set(conn.scalars(sa.select(profiles.c.id).where(
            profiles.c.merged_into.in_(jo_ids))))  # fmt: skip
        processed = conn.execute(
            sa.select(sa.func.count()).select_from(message_profiles)
            .where(message_profiles.c.profile_id.in_(jo_ids))
        ).scalar()  # fmt: skip
    assert len(jo_ids) >= 2  # anonymous -> identified merge
    before = snapshot(store)
    assert traces(store)  # the scan finds Jo before the deletion

    done = world.request("SUPPRESS_WITH_DELETE", "EMAIL", ["JO.deleted@example.com "])

    assert done["status"] == "FINISHED", done
    receipt = done["receipt"]
    assert receipt["profiles"] == len(jo_ids)
    assert receipt["log_messages"] == {"processed": processed, "unlinked": 1, "unprocessed": 3}
    assert receipt["rows_removed"]["log_messages"] == len(offsets["jo"])
    assert receipt["identifiers"]["user_id"] == 1 and receipt["identifiers"]["email"] == 1
    assert receipt["forwarded_to"] == [] and "event_rows_removed" in receipt["lake"]
    # every identifier held, and the forms a PII policy would store the email in
    assert receipt["suppressions_added"] >= sum(receipt["identifiers"].values())
    assert not traces(store), traces(store)

    # Everyone else's rows are as they were; every row that went was Jo's.
    after = snapshot(store)
    jo_tokens = jo_ids | set(offsets["jo"])
    for name in before:
        if name in ("audit_log", "privacy_requests", "suppressions", "traits"):
            continue
        assert after[name] <= before[name], name
        for row in before[name] - after[name]:
            assert marked(row) or jo_tokens & set(row), (name, row)
    with store.engine.connect() as conn:
        kept = set(conn.scalars(sa.select(log_messages.c.log_offset)))
        account_plan = conn.execute(sa.select(traits.c.value).where(
            traits.c.key == "plan", traits.c.profile_id.like("acc_%"))).scalar()  # fmt: skip
    assert kept == set(offsets["others"])
    # The account keeps what Bob's group call set (Jo's later value went with Jo).
    assert orjson.loads(account_plan) == "bob-group-plan"
    changed = {row for row in after["traits"] - before["traits"]}
    assert {(r[1], orjson.loads(r[2])) for r in changed} == {("plan", "bob-group-plan")}

    # On SQLite the bytes are gone from the database file and the WAL too.
    if store.kind == "sqlite":
        database = store.url.database
        for path in (database, f"{database}-wal"):
            try:
                data = open(path, "rb").read().lower()
            except FileNotFoundError:
                continue
            if path == database:  # the file read holds the others' data
                assert b"user-bob-1" in data
            found = [m for m in JO_MARKERS if m.encode() in data]
            assert not found, (path, found)

    # The pipeline goes on without bringing Jo back; Bob's pending message is processed.
    Pipeline(store).catch_up(ws)
    assert not traces(store)
    with store.engine.connect() as conn:
        done_offsets = set(conn.scalars(sa.select(message_profiles.c.log_offset)))
    assert offsets["others"][-1] in done_offsets


def test_receipt_and_audit_hold_no_personal_data(world):
    populated(world)
    done = world.request("DELETE_ONLY", "USER_ID", ["user-jo-4411"])
    assert done["status"] == "FINISHED"
    assert done["receipt"]["requested_by"] == "tok_t"
    assert done["receipt"]["started_at"] <= done["receipt"]["finished_at"]
    assert not marked(orjson.dumps(done).decode())
    with world.store.engine.connect() as conn:
        stored = conn.execute(sa.select(privacy_requests)).one()._mapping
        records = audit.query(conn, world.ws, action="privacy")
    assert orjson.loads(stored["subject_hashes"]) == [
        identity_hash(world.ws, "user_id", "user-jo-4411")
    ]
    assert [r["action"] for r in records] == ["privacy.request.finished",
                                              "privacy.request.created"]  # fmt: skip
    assert all(r["actor"] == "tok_t" and r["target"] == done["id"] for r in records)
    assert records[0]["details"]["rows_removed"]["profiles"] >= 2
    assert not marked(repr(records))


def test_status_moves_from_initialized_through_running_to_finished(world, monkeypatch):
    world.feed(JO_PROCESSED[:3])
    created = privacy.create_request(world.store, world.ws, "DELETE_INTERNAL", "ANONYMOUS_ID",
                                     ["anon-jo-7f3a"], "cli:tester")  # fmt: skip
    assert created["status"] == "INITIALIZED" and created["subjects"] == 1
    seen = []

    def progress(step: str) -> None:
        with world.store.engine.connect() as conn:
            seen.append(privacy.get_request(conn, world.ws, created["id"])["status"])

    done = privacy.run_request(world.store, created["id"], ["anon-jo-7f3a"], progress=progress)
    assert set(seen) == {"RUNNING"} and done["status"] == "FINISHED"
    assert done["started_at"] and done["finished_at"] >= done["started_at"]
    with pytest.raises(ValueError, match="runs only once"):
        privacy.run_request(world.store, created["id"], ["anon-jo-7f3a"])
    other = privacy.create_request(world.store, world.ws, "DELETE_INTERNAL", "USER_ID", ["x-1"],
                                   "cli:tester")  # fmt: skip
    with pytest.raises(ValueError, match="not those"):
        privacy.run_request(world.store, other["id"], ["x-2"])


def test_a_failure_is_recorded_redacted_and_raised(world, monkeypatch):
    world.feed(JO_PROCESSED[:3])

    def broken(e):
        raise RuntimeError("disk on fire while deleting user-jo-4411")

    monkeypatch.setattr(erase, "ERASURE_STEPS", [*erase.ERASURE_STEPS, broken])
    created = privacy.create_request(world.store, world.ws, "DELETE_INTERNAL", "USER_ID",
                                     ["user-jo-4411"], "cli:tester")  # fmt: skip
    with pytest.raises(privacy.RequestFailed):
        privacy.run_request(world.store, created["id"], ["user-jo-4411"])
    with world.store.engine.connect() as conn:
        failed = privacy.get_request(conn, world.ws, created["id"])
        records = audit.query(conn, world.ws, action="privacy.request.failed")
    assert failed["status"] == "FAILED"
    assert failed["error"] == "RuntimeError: disk on fire while deleting [redacted]"
    assert len(records) == 1
    # Nothing was deleted: the transaction rolled back.
    assert world.profile("user_id:user-jo-4411")


def test_an_after_commit_failure_is_a_partial_success(world, monkeypatch):
    world.feed(JO_PROCESSED[:3])

    def unreachable(store, erasure):
        raise ConnectionError("destination down")

    steps = [("forwarded_to", unreachable), *privacy.AFTER_COMMIT_STEPS[1:]]
    monkeypatch.setattr(privacy, "AFTER_COMMIT_STEPS", steps)
    done = world.request("DELETE_ONLY", "USER_ID", ["user-jo-4411"])
    assert done["status"] == "PARTIAL_SUCCESS"
    assert done["receipt"]["errors"] == {"forwarded_to": "ConnectionError: destination down"}
    assert done["receipt"]["rows_removed"]["profiles"] >= 1
    assert "physical" in done["receipt"]


def test_a_subject_with_nothing_held_finishes(world):
    world.feed(OTHERS_PROCESSED)
    before = snapshot(world.store)["log_messages"]
    done = world.request("DELETE_INTERNAL", "EMAIL", ["nobody@example.com"])
    assert done["status"] == "FINISHED"
    assert done["receipt"]["subjects_found"] == 0 and done["receipt"]["profiles"] == 0
    assert snapshot(world.store)["log_messages"] == before


def test_many_subjects_in_one_request(world):
    world.feed(JO_PROCESSED[:3] + OTHERS_PROCESSED[:1])
    done = world.request("DELETE_INTERNAL", "USER_ID",
                         ["user-jo-4411", "user-bob-1", "never-seen", "user-bob-1"])  # fmt: skip
    assert done["subjects"] == 3
    assert done["receipt"]["subjects_found"] == 2 and done["receipt"]["profiles"] == 2
    with world.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar() == 0


def test_custom_identifier_types_are_subject_types(world):
    Workspaces(world.store).put_setting(
        world.ws, "identity", {"identifiers": {"crm_id": {"paths": ["traits.crm_id"]}}}
    )
    world.feed([{"type": "identify", "userId": "u-crm", "traits": {"crm_id": "CRM-77"},
                 "timestamp": T.format(1)}])  # fmt: skip
    done = world.request("DELETE_INTERNAL", "CRM_ID", ["CRM-77"])
    assert done["subject_type"] == "CRM_ID" and done["receipt"]["profiles"] == 1
    with pytest.raises(Invalid) as info:
        privacy.create_request(world.store, world.ws, "DELETE_INTERNAL", "SHOE_SIZE", ["4"], "t")
    assert info.value.field == "subjectType" and "CRM_ID" in info.value.message


@pytest.mark.parametrize(
    ("kind", "subject_type", "ids", "field"),
    [
        ("DELETE_EVERYTHING", "USER_ID", ["u"], "regulationType"),
        ("DELETE_INTERNAL", "OBJECT_ID", ["u"], "subjectType"),
        ("DELETE_INTERNAL", None, ["u"], "subjectType"),
        ("DELETE_INTERNAL", "USER_ID", [], "subjectIds"),
        ("DELETE_INTERNAL", "USER_ID", "u", "subjectIds"),
        ("DELETE_INTERNAL", "USER_ID", [f"u{i}" for i in range(5001)], "subjectIds"),
        ("DELETE_INTERNAL", "USER_ID", ["ok", 7], "subjectIds[1]"),
        ("DELETE_INTERNAL", "USER_ID", ["ok", "  "], "subjectIds[1]"),
        ("DELETE_INTERNAL", "USER_ID", ["x" * 257], "subjectIds[0]"),
        ("DELETE_INTERNAL", "EMAIL", ["not-an-email"], "subjectIds[0]"),
        ("DELETE_INTERNAL", "PHONE", ["12"], "subjectIds[0]"),
        ("DELETE_INTERNAL", "USER_ID", ["null"], "subjectIds[0]"),
    ],
)
def test_bad_requests_name_the_field(world, kind, subject_type, ids, field):
    with pytest.raises(Invalid) as info:
        privacy.create_request(world.store, world.ws, kind, subject_type, ids, "t")
    assert info.value.field == field
    with world.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(privacy_requests)).scalar() == 0


# Suppression ---------------------------------------------------------------------------


def suppressed_rows(store) -> list[tuple]:
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(suppressions.c.value_hash, suppressions.c.type, suppressions.c.request_id)
        ).all()


def test_suppress_only_suppresses_every_identifier_and_deletes_nothing(world):
    world.feed(JO_PROCESSED[:4] + OTHERS_PROCESSED[:1])
    before = snapshot(world.store)["log_messages"]
    cache = privacy.SuppressionCache(world.store, ttl_seconds=60)
    assert not cache.suppressed(world.ws, [("user_id", "user-jo-4411")])

    done = world.request("SUPPRESS_ONLY", "ANONYMOUS_ID", ["anon-jo-7f3a"])

    assert done["status"] == "FINISHED" and snapshot(world.store)["log_messages"] == before
    rows = suppressed_rows(world.store)
    expected = {("user_id", "user-jo-4411"), ("anonymous_id", "anon-jo-7f3a"),
                ("anonymous_id", "anon-jo-second-9c1d"), ("email", "jo.deleted@example.com"),
                ("phone", "+14155550199")}  # fmt: skip
    assert {(h, t) for h, t, _ in rows} == {(identity_hash(world.ws, *i), i[0]) for i in expected}
    assert {group for _, _, group in rows} == {f"{done['id']}#0"}
    assert done["receipt"]["suppressions_added"] == len(expected)
    # The request invalidated this process's caches: no wait for the ttl.
    assert cache.suppressed(world.ws, [("email", "jo.deleted@example.com")])
    assert not cache.suppressed(world.ws, [("user_id", "user-bob-1"), ("email", "bob@x.com")])
    again = world.request("SUPPRESS_ONLY", "USER_ID", ["user-jo-4411", "brand-new-id"])
    assert again["receipt"]["suppressions_added"] == 1  # only the never-seen id is new
    assert cache.suppressed(world.ws, [("user_id", "brand-new-id")])


def test_unsuppress_lifts_every_identity_suppressed_with_it(world):
    world.feed(JO_PROCESSED[:3] + OTHERS_PROCESSED[:1])
    world.request("SUPPRESS_WITH_DELETE_INTERNAL", "USER_ID", ["user-jo-4411"])
    world.request("SUPPRESS_ONLY", "USER_ID", ["user-bob-1"])
    # Jo: user_id, anonymous_id, email, phone; Bob: user_id, email.
    assert len(suppressed_rows(world.store)) == 6
    # Jo's profile is gone, yet lifting one of her identifiers lifts all of them.
    done = world.request("UNSUPPRESS", "EMAIL", ["jo.deleted@example.com"])
    assert done["status"] == "FINISHED" and done["receipt"]["suppressions_removed"] == 4
    assert sorted(r[1] for r in suppressed_rows(world.store)) == ["email", "user_id"]  # Bob's
    cache = privacy.SuppressionCache(world.store.engine, ttl_seconds=0)
    assert cache.suppressed(world.ws, [("user_id", "user-bob-1")])
    assert not cache.suppressed(world.ws, [("anonymous_id", "anon-jo-7f3a")])
    nothing = world.request("UNSUPPRESS", "USER_ID", ["never-suppressed"])
    assert nothing["receipt"]["suppressions_removed"] == 0


def test_suppression_cache_sees_other_processes_changes_after_its_ttl(world):
    cache = privacy.SuppressionCache(world.store, ttl_seconds=0.3)
    ident = ("user_id", "u-elsewhere")
    assert not cache.suppressed(world.ws, [ident])
    with world.store.engine.begin() as conn:  # as another process would, without invalidating
        conn.execute(suppressions.insert().values(
            workspace_id=world.ws, value_hash=identity_hash(world.ws, *ident), type="user_id",
            request_id="reg_x#0", created_at=0))  # fmt: skip
    assert not cache.suppressed(world.ws, [ident])
    time.sleep(0.35)
    assert cache.suppressed(world.ws, [ident])
    assert cache.hashes(world.ws) == {identity_hash(world.ws, *ident)}


def test_suppression_cache_is_cheap_without_suppressions(world):
    cache = privacy.SuppressionCache(world.store, ttl_seconds=60)
    ids = [("user_id", "u-1"), ("anonymous_id", "a-1")]
    cache.suppressed(world.ws, ids)
    started = time.perf_counter()
    for _ in range(10_000):
        cache.suppressed(world.ws, ids)
    per_call_us = (time.perf_counter() - started) / 10_000 * 1e6
    assert per_call_us < 20, per_call_us  # a dict lookup and a clock read (~0.3 us)


# Interrupted requests --------------------------------------------------------------------


def test_interrupted_requests_fail_at_startup_unless_still_running(world):
    make = lambda: privacy.create_request(  # noqa: E731
        world.store, world.ws, "DELETE_INTERNAL", "USER_ID", ["u-1"], "cli:tester"
    )
    waiting, running, live, finished = make(), make(), make(), make()
    with world.store.engine.begin() as conn:
        conn.execute(privacy_requests.update().where(privacy_requests.c.id == running["id"])
                     .values(status="RUNNING"))  # fmt: skip
    privacy.run_request(world.store, finished["id"], ["u-1"])
    with privacy._Lease(world.store, live["id"]):
        failed = privacy.fail_interrupted(world.store)
    assert sorted(failed) == sorted([waiting["id"], running["id"]])
    with world.store.engine.connect() as conn:
        status = {r["id"]: r for r in privacy.list_requests(conn, world.ws)}
    assert status[waiting["id"]]["status"] == status[running["id"]]["status"] == "FAILED"
    assert "file the request again" in status[running["id"]]["error"]
    assert status[live["id"]]["status"] == "INITIALIZED"
    assert status[finished["id"]]["status"] == "FINISHED"
    assert privacy.fail_interrupted(world.store) == [live["id"]]  # its lease is released


# Access requests --------------------------------------------------------------------------


def test_access_request_exports_everything_held_about_the_person(world):
    offsets = populated(world)
    with world.store.engine.connect() as conn:
        doc = export_person(conn, world.ws, "email:JO.Deleted@example.com")
        by_id = export_person(conn, world.ws, world.profile("email:jo.deleted@example.com"))
        nobody = export_person(conn, world.ws, "user_id:nobody")
    assert doc["found"] and not nobody["found"] and nobody["events"] == []
    assert by_id["events"] == doc["events"]
    idents = {(i["type"], i["value"]) for i in doc["identifiers"]}
    assert {("user_id", "user-jo-4411"), ("email", "jo.deleted@example.com"),
            ("phone", "+14155550199"), ("anonymous_id", "anon-jo-7f3a"),
            ("anonymous_id", "anon-jo-third")} <= idents  # fmt: skip
    assert all(i["first_seen"] for i in doc["identifiers"] if i["profile_id"])
    assert {t["key"]: t["value"] for t in doc["traits"]}["name"] == "Joanna Zyxwv"
    assert {t["value"] for t in doc["trait_history"] if t["key"] == "email"} == {
        "Jo.Deleted@Example.com", "jo.deleted@example.com"}  # fmt: skip
    assert [a["group_id"] for a in doc["accounts"]] == ["grp-acme-1"]
    assert doc["consent"][0]["category"].lower() == "advertising"
    assert doc["consent"][0]["allowed"] is True and len(doc["consent_history"]) == 1
    assert {entry["kind"] for entry in doc["lineage"]} == {"merge", "unmerge"}
    assert {v["kind"] for v in doc["violations"]} >= {"schema_violation", "unplanned_event"}
    states = [e["state"] for e in doc["events"]]
    assert len(doc["events"]) == len(offsets["jo"])
    assert states.count("unlinked") == 1 and states.count("not processed yet") == 3
    blocked = next(e for e in doc["events"] if e["state"] == "unlinked")
    assert (
        blocked["message"]["properties"]["note"] == "jo-blocked-secret" and blocked["quarantined"]
    )
    viewed = next(e for e in doc["events"] if e["message"].get("event") == "Product Viewed")
    assert viewed["governed_message"]["properties"]["color"] == "jo-teal"
    assert "colour" in viewed["message"]["properties"]
    assert not any("bob" in orjson.dumps(e).decode() for e in doc["events"])
    for ref in ("nonsense", "shoe:42", "group_id:grp-acme-1", "email:nope"):
        with pytest.raises(Invalid), world.store.engine.connect() as conn:
            export_person(conn, world.ws, ref)


# HTTP API ---------------------------------------------------------------------------------


@pytest.fixture
def fast_settle(monkeypatch):
    from plait.settings import get_settings

    monkeypatch.setenv("PLAIT_GOVERNANCE_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def wait_done(client: httpx.Client, regulate_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/regulations/{regulate_id}")
        assert r.status_code == 200, r.text
        regulation = r.json()["data"]["regulation"]
        if regulation["overallStatus"] in privacy.DONE:
            return regulation
        time.sleep(0.05)
    raise AssertionError("the regulation did not finish")


def test_regulations_api_suppresses_deletes_and_rejects_the_persons_messages(server, fast_settle):
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    client = httpx.Client(base_url=server.url, headers=headers, timeout=30)
    sdk = httpx.Client(base_url=server.url, auth=(server.write_key, ""), timeout=30)
    for msg in JO_PROCESSED[:3] + OTHERS_PROCESSED[:1]:
        assert sdk.post(f"/v1/{msg['type']}", json=msg).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server's pipeline processes them
        with server.store.engine.connect() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(message_profiles)).scalar() == 4:
                break
        time.sleep(0.05)
    else:
        pytest.fail("the server's pipeline did not process the 4 messages")

    body = {"regulationType": "SUPPRESS_WITH_DELETE", "subjectType": "USER_ID",
            "subjectIds": ["user-jo-4411"]}  # fmt: skip
    r = client.post("/api/v1/regulations", json=body)
    assert r.status_code == 200, r.text
    regulate_id = r.json()["data"]["regulateId"]
    regulation = wait_done(client, regulate_id)
    assert regulation["overallStatus"] == "FINISHED", regulation
    assert regulation["regulationType"] == "SUPPRESS_WITH_DELETE"
    assert regulation["subjectCount"] == 1 and regulation["finishedAt"].endswith("Z")
    assert regulation["receipt"]["forwarded_to"] == []
    assert not traces(server.store)

    # Ingestion now rejects Jo by any of her identifiers, and accepts others.
    r = sdk.post("/v1/track", json={"anonymousId": "anon-jo-7f3a", "event": "Back"})
    assert r.status_code == 403, r.text
    assert sdk.post("/v1/track", json={"userId": "user-bob-1", "event": "Hi"}).status_code == 200

    listing = client.get("/api/v1/regulations", params={"limit": 1}).json()["data"]
    assert [x["id"] for x in listing["regulations"]] == [regulate_id]
    assert listing["pagination"]["next"] is None
    assert client.get("/api/v1/regulations/reg_nope").status_code == 404

    records = client.get("/api/v1/audit", params={"action": "privacy.request"}).json()
    assert [r["action"] for r in records["records"]] == ["privacy.request.finished",
                                                         "privacy.request.created"]  # fmt: skip
    token_id = Workspaces(server.store).list_tokens(server.workspace_id)[0]["id"]
    assert {r["actor"] for r in records["records"]} == {token_id}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"regulationType": "NOPE", "subjectType": "USER_ID", "subjectIds": ["u"]},
         "regulationType"),
        ({"regulationType": "DELETE_ONLY", "subjectType": "USER_ID", "subjectIds": []},
         "subjectIds"),
        ({"regulationType": "DELETE_ONLY", "subjectType": "USER_ID",
          "subjectIds": [str(i) for i in range(1, 5002)]}, "subjectIds"),
        ({"regulationType": "DELETE_ONLY", "subjectType": "FOOT", "subjectIds": ["u"]},
         "subjectType"),
        ({"regulationType": "DELETE_ONLY", "subjectType": "USER_ID", "subjectIds": ["u"],
          "subject": "typo"}, "subject"),
    ],
)  # fmt: skip
def test_regulations_api_rejects_bad_input(server, body, field):
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    r = httpx.post(f"{server.url}/api/v1/regulations", json=body, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field


def test_privacy_scopes(server):
    repo = server.repo
    _, reader = repo.create_token(server.workspace_id, "reader", ["privacy:read"])
    _, auditor = repo.create_token(server.workspace_id, "auditor", ["audit:read"])
    body = {"regulationType": "DELETE_ONLY", "subjectType": "USER_ID", "subjectIds": ["u"]}

    def call(method, path, token, **kw):
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, f"{server.url}{path}", headers=headers, **kw).status_code

    assert call("POST", "/api/v1/regulations", reader, json=body) == 403
    assert call("GET", "/api/v1/regulations", reader) == 200
    assert call("GET", "/api/v1/audit", reader) == 403
    assert call("GET", "/api/v1/audit", auditor) == 200
    assert call("POST", "/api/v1/access-requests", auditor, json={"identifier": "user_id:u"}) == 403
    assert call("GET", "/api/v1/regulations", "plt_wrong") == 401


def test_access_request_api_is_audited(server):
    append(server.store, server.workspace_id, JO_PROCESSED[:3], server.source_id)
    Pipeline(server.store).catch_up(server.workspace_id)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    r = httpx.post(f"{server.url}/api/v1/access-requests", headers=headers,
                   json={"identifier": "email:jo.deleted@example.com"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert {t["key"] for t in r.json()["traits"]} >= {"email", "name", "phone"}
    bad = httpx.post(f"{server.url}/api/v1/access-requests", headers=headers,
                     json={"identifier": "email"})  # fmt: skip
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "identifier"
    records = httpx.get(f"{server.url}/api/v1/audit", headers=headers,
                        params={"action": "privacy.access"}).json()["records"]  # fmt: skip
    assert len(records) == 1
    assert records[0]["target"] == "identity:" + identity_hash(
        server.workspace_id, "email", "jo.deleted@example.com"
    )
    assert records[0]["details"]["events"] == 3 and not marked(repr(records))


# CLI ------------------------------------------------------------------------------------


@pytest.fixture
def plait(store_url, monkeypatch):
    from plait import cli
    from plait.settings import get_settings

    monkeypatch.setenv("PLAIT_DATABASE_URL", store_url)
    monkeypatch.setenv("PLAIT_GOVERNANCE_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    monkeypatch.setattr(cli.console, "_width", 200)  # tables unabridged (undone to None)
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(cli.app, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    yield run
    get_settings.cache_clear()


def test_privacy_cli(world, plait, tmp_path):
    populated(world)
    out = plait("privacy", "request", "--type", "SUPPRESS_WITH_DELETE", "--subject-type",
                "EMAIL", "jo.deleted@example.com", "-w", "acme", "--yes")  # fmt: skip
    assert "FINISHED" in out and "rows removed: log_messages" in out
    assert not traces(world.store)
    request_id = re.search(r"(reg_\w+)", out).group(1)
    listing = plait("privacy", "list", "-w", "acme")
    assert "SUPPRESS_WITH_DELETE" in listing and "FINISHED" in listing
    assert "FINISHED" in plait("privacy", "show", request_id, "-w", "acme")
    plait("privacy", "show", "reg_nope", "-w", "acme", code=1)
    plait("privacy", "request", "-t", "DELETE_ONLY", "-s", "EMAIL", "bad", "-w", "acme",
          "--yes", code=1)  # fmt: skip

    target = tmp_path / "bob.json"
    plait("privacy", "export", "user_id:user-bob-1", "--out", str(target), "-w", "acme")
    doc = orjson.loads(target.read_text())
    assert doc["found"] and {t["key"] for t in doc["traits"]} == {"email", "name"}
    audit_out = plait("audit", "-w", "acme", "--json")
    actions = [orjson.loads(line)["action"] for line in audit_out.splitlines()]
    assert actions[:3] == ["privacy.access", "privacy.request.finished",
                           "privacy.request.created"]  # fmt: skip
    assert all(orjson.loads(line)["actor"].startswith("cli:") for line in audit_out.splitlines())
