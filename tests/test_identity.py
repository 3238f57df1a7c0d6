"""Identity resolution: rules, identifiers, limits, priority, blocked values, merges,
unmerge, explain, and the pipeline's guarantees (idempotent, concurrent, rebuildable)."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from log_messages import append

from plait.identity.explain import explain, find_profile
from plait.identity.identifiers import extract
from plait.identity.rules import RulesError, default_rules, from_dict
from plait.log import backend_for
from plait.pipeline.maintenance import rebuild, unmerge
from plait.pipeline.runner import Pipeline, consumer_name
from plait.store.schema import (
    account_members,
    identifiers,
    identity_edges,
    lineage,
    message_profiles,
    profiles,
    traits,
)
from plait.store.workspaces import Workspaces

DAY = "2024-03-{:02d}T10:00:00Z"


@pytest.fixture
def ws(store):
    return Workspaces(store).create_workspace("acme")["id"]


def run(store, ws_id, messages, rules=None):
    if rules is not None:
        Workspaces(store).put_setting(ws_id, "identity", rules)
    stored = append(store, ws_id, messages)
    Pipeline(store).catch_up(ws_id)
    return stored


def clusters(store, ws_id) -> list[set[tuple[str, str]]]:
    """Each live person profile's identifiers."""
    query = sa.select(identifiers.c.profile_id, identifiers.c.type, identifiers.c.value).where(
        identifiers.c.workspace_id == ws_id, identifiers.c.type != "group_id"
    )
    found: dict[str, set] = {}
    with store.engine.connect() as conn:
        for pid, type_name, value in conn.execute(query):
            found.setdefault(pid, set()).add((type_name, value))
    return sorted(found.values(), key=sorted)


def profile_of(store, ws_id, ref) -> str:
    with store.engine.connect() as conn:
        return find_profile(conn, ws_id, ref, default_rules())


def trait_values(store, profile_id) -> dict:
    query = sa.select(traits.c.key, traits.c.value).where(traits.c.profile_id == profile_id)
    with store.engine.connect() as conn:
        return {key: value for key, value in conn.execute(query)}


# Rules ---------------------------------------------------------------------------------


def test_default_rules_are_segments():
    rules = default_rules()
    assert {t: k.limit for t, k in rules.types.items()} == {
        "user_id": 1, "anonymous_id": 5, "email": 5, "phone": 5,
    }  # fmt: skip
    assert rules.priority == ("user_id", "email", "anonymous_id", "phone")
    for value in ("0", "000-000", "-1", "null", "NULL", "undefined", "anonymous", ""):
        assert rules.is_blocked(value), value
    assert not rules.is_blocked("u-1")
    assert from_dict(rules.to_dict()) == rules


def test_custom_rules_order_unlisted_types_after_the_listed_ones():
    rules = from_dict({
        "default_region": "DE",
        "identifiers": {"crm_id": {"limit": 1, "paths": ["traits.crm_id"]},
                        "anonymous_id": {"limit": 2, "window": "weekly"}},
        "priority": ["email", "crm_id"],
        "blocked": {"values": ["void"], "patterns": ["^test-"]},
    })  # fmt: skip
    assert rules.priority == ("email", "crm_id", "user_id", "anonymous_id", "phone")
    assert rules.types["anonymous_id"].window_seconds == 7 * 86_400
    assert rules.is_blocked("VOID") and rules.is_blocked("test-1") and not rules.is_blocked("null")


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"limits": {}}, "identity.limits"),
        ({"identifiers": {"crm_id": {"limit": 0}}}, "identity.identifiers.crm_id.limit"),
        ({"identifiers": {"crm_id": {"window": "hourly"}}}, "identity.identifiers.crm_id.window"),
        ({"identifiers": {"Bad Name": {}}}, "identity.identifiers.Bad Name"),
        ({"identifiers": {"group_id": {}}}, "identity.identifiers.group_id"),
        ({"identifiers": {"email": {"paths": ["x.y"]}}}, "identity.identifiers.email.paths"),
        ({"priority": ["nope"]}, "identity.priority"),
        ({"priority": ["email", "email"]}, "identity.priority"),
        ({"blocked": {"patterns": ["("]}}, "identity.blocked.patterns"),
        ({"default_region": "usa"}, "identity.default_region"),
    ],
)
def test_bad_rules_name_the_field(doc, field):
    with pytest.raises(RulesError) as info:
        from_dict(doc)
    assert info.value.field == field


# Identifiers ---------------------------------------------------------------------------


def test_identifiers_are_normalized_blocked_and_ordered_by_priority():
    rules = from_dict({"identifiers": {"crm_id": {"paths": ["properties.crm"]},
                                       "device_id": {"paths": ["context.device.id"]}}})  # fmt: skip
    msg = {
        "userId": "anonymous",  # blocked: stays in the payload, never an identifier
        "anonymousId": "a-1",
        "traits": {"email": "  Jo@Example.COM ", "phone": "(415) 555-0100"},
        "context": {
            "traits": {"phone": "not a phone"},
            "device": {"id": "dev-9"},
            "externalIds": [
                {"id": "c-7", "type": "crm_id", "collection": "users", "encoding": "none"},
                {"id": "x", "type": "undeclared", "collection": "users", "encoding": "none"},
                {"id": "acct", "type": "crm_id", "collection": "accounts", "encoding": "none"},
            ],
        },
        "properties": {"crm": 42},
    }
    assert extract(msg, rules) == [
        ("email", "jo@example.com"),
        ("anonymous_id", "a-1"),
        ("crm_id", "c-7"),
        ("crm_id", "42"),
        ("device_id", "dev-9"),
        ("phone", "+14155550100"),
    ]
    german = from_dict({"default_region": "DE"})
    assert extract({"anonymousId": "a", "traits": {"phone": "030 1234567"}}, german)[1] == (
        "phone", "+49301234567",
    )  # fmt: skip


# Resolution ----------------------------------------------------------------------------


def test_anonymous_activity_joins_the_known_profile_and_merges_devices(store, ws):
    run(store, ws, [
        {"type": "page", "anonymousId": "phone", "timestamp": DAY.format(1)},
        {"type": "page", "anonymousId": "laptop", "timestamp": DAY.format(2)},
        {"type": "identify", "anonymousId": "phone", "userId": "u1",
         "traits": {"email": "jo@x.com", "name": "Jo"}, "timestamp": DAY.format(3)},
        {"type": "track", "anonymousId": "laptop", "event": "Clicked",
         "context": {"traits": {"email": "JO@x.com"}}, "timestamp": DAY.format(4)},
    ])  # fmt: skip
    assert clusters(store, ws) == [
        {("anonymous_id", "phone"), ("anonymous_id", "laptop"), ("user_id", "u1"),
         ("email", "jo@x.com")},
    ]  # fmt: skip
    survivor = profile_of(store, ws, "user_id:u1")
    with store.engine.connect() as conn:
        merged = conn.execute(sa.select(profiles.c.id, profiles.c.merged_into)).all()
        timeline = conn.scalars(
            sa.select(message_profiles.c.profile_id).order_by(message_profiles.c.timestamp)
        ).all()
        merge = conn.execute(sa.select(lineage)).mappings().one()
    # The older profile (the phone's, created first) survives; the laptop's points to it.
    assert sorted(m for _, m in merged if m) == [survivor]
    assert profile_of(store, ws, f"segment_id:{merge['other_id']}") == survivor
    assert timeline == [survivor] * 4
    assert merge["profile_id"] == survivor and merge["log_offset"] is not None


def test_a_second_user_id_is_not_merged_the_lowest_priority_identifier_is_dropped(store, ws):
    # Segment's example: a profile with user_id abc123 and an email; an event with a new
    # user_id and the same email. user_id allows 1 value: email (lower) is dropped.
    run(store, ws, [
        {"type": "identify", "userId": "abc123", "traits": {"email": "jane@example1.com"}},
        {"type": "identify", "userId": "abc456", "traits": {"email": "jane@example1.com"}},
    ])  # fmt: skip
    assert clusters(store, ws) == [
        {("user_id", "abc123"), ("email", "jane@example1.com")},
        {("user_id", "abc456")},
    ]


def test_priority_decides_which_identifier_is_dropped(store, ws):
    # With email above user_id, the conflicting user_id goes and the email still joins.
    run(store, ws, [
        {"type": "identify", "userId": "abc123", "traits": {"email": "jane@example1.com"}},
        {"type": "identify", "userId": "abc456", "traits": {"email": "jane@example1.com"}},
    ], rules={"priority": ["email", "user_id"]})  # fmt: skip
    # [email, user_id:abc456]: user_id is lower, dropped; the message joins by email.
    assert clusters(store, ws) == [{("user_id", "abc123"), ("email", "jane@example1.com")}]
    with store.engine.connect() as conn:
        profile_ids = set(conn.scalars(sa.select(message_profiles.c.profile_id)))
    assert len(profile_ids) == 1


def test_a_windowed_limit_counts_only_values_seen_in_the_window(store, ws):
    rules = {"identifiers": {"anonymous_id": {"limit": 2, "window": "weekly"}}}
    run(store, ws, [
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "timestamp": DAY.format(1)},
        {"type": "identify", "userId": "u1", "anonymousId": "a2", "timestamp": DAY.format(2)},
        # A third anonymous id in the same week: the limit drops it from the message.
        {"type": "identify", "userId": "u1", "anonymousId": "a3", "timestamp": DAY.format(3)},
        # Two weeks on, a1 and a2 are outside the window: a4 joins.
        {"type": "identify", "userId": "u1", "anonymousId": "a4", "timestamp": DAY.format(20)},
    ], rules=rules)  # fmt: skip
    found = clusters(store, ws)
    assert {("user_id", "u1"), ("anonymous_id", "a1"), ("anonymous_id", "a2"),
            ("anonymous_id", "a4")} in found  # fmt: skip
    assert ("anonymous_id", "a3") not in set().union(*found)  # a3 alone never made a profile


def test_blocked_values_stay_in_the_payload_but_link_nothing(store, ws):
    stored = run(store, ws, [
        {"type": "identify", "userId": "null", "anonymousId": "a1"},
        {"type": "identify", "userId": "null", "anonymousId": "a2"},
        {"type": "identify", "userId": "void", "anonymousId": "a3"},
        {"type": "identify", "userId": "void", "anonymousId": "a4"},
    ], rules={"blocked": {"values": ["void"], "patterns": ["^[0-]*$"]}})  # fmt: skip
    # "void" is blocked here; "null" is not (this list replaces the default one).
    assert sorted(map(sorted, clusters(store, ws))) == [
        [("anonymous_id", "a1"), ("anonymous_id", "a2"), ("user_id", "null")],
        [("anonymous_id", "a3")],
        [("anonymous_id", "a4")],
    ]
    assert stored[2]["userId"] == "void"  # still in the stored message


def test_alias_links_the_previous_id_and_group_makes_an_account(store, ws):
    run(store, ws, [
        {"type": "track", "anonymousId": "anon-1", "event": "Viewed"},
        {"type": "alias", "userId": "u1", "previousId": "anon-1"},
        {"type": "group", "userId": "u1", "groupId": "acme-co", "traits": {"plan": "pro"}},
        {"type": "group", "userId": "u2", "groupId": "acme-co", "traits": {"seats": 5}},
    ])  # fmt: skip
    assert {("anonymous_id", "anon-1"), ("user_id", "u1")} in clusters(store, ws)
    account = profile_of(store, ws, "group_id:acme-co")
    assert account.startswith("acc_")
    assert trait_values(store, account) == {"plan": '"pro"', "seats": "5"}
    with store.engine.connect() as conn:
        members = set(conn.scalars(sa.select(account_members.c.profile_id)))
    assert members == {profile_of(store, ws, "user_id:u1"), profile_of(store, ws, "user_id:u2")}


def test_traits_follow_event_time_not_arrival_and_keep_their_provenance(store, ws):
    run(store, ws, [
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro", "city": "Oslo"},
         "timestamp": DAY.format(5)},
        {"type": "identify", "userId": "u1", "traits": {"plan": "free"},  # older, late
         "timestamp": DAY.format(1)},
        {"type": "identify", "userId": "u1", "context": {"traits": {"city": "Bergen"}},
         "timestamp": DAY.format(9)},  # RudderStack's SDKs send traits in context
    ])  # fmt: skip
    pid = profile_of(store, ws, "user_id:u1")
    assert trait_values(store, pid) == {"plan": '"pro"', "city": '"Bergen"'}
    with store.engine.connect() as conn:
        plan = conn.execute(sa.select(traits).where(traits.c.key == "plan")).mappings().one()
    assert plan["source_id"] == "src_test" and plan["log_offset"] > 0 and plan["message_id"]


def test_two_people_sharing_a_device_stay_two(store, ws):
    run(store, ws, [
        {"type": "identify", "anonymousId": "family-ipad", "userId": "mum",
         "traits": {"email": "mum@x.com"}},
        {"type": "track", "anonymousId": "family-ipad", "userId": "mum", "event": "Bought"},
        {"type": "identify", "anonymousId": "family-ipad", "userId": "son",
         "traits": {"email": "son@x.com"}},
        {"type": "track", "anonymousId": "family-ipad", "userId": "son", "event": "Played"},
    ])  # fmt: skip
    found = clusters(store, ws)
    assert len(found) == 2
    assert {("user_id", "son"), ("email", "son@x.com")} in found


# Pipeline guarantees -------------------------------------------------------------------


def derived_state(store, ws_id) -> dict:
    """Everything the pipeline derived, comparable across runs (no autoincrement ids)."""
    out = {}
    with store.engine.connect() as conn:
        for table in (profiles, identifiers, identity_edges, message_profiles):
            rows = conn.execute(sa.select(table).where(table.c.workspace_id == ws_id))
            out[table.name] = sorted(map(tuple, rows), key=repr)
        ids = sa.select(profiles.c.id).where(profiles.c.workspace_id == ws_id)
        for table in (traits, account_members):
            rows = conn.execute(sa.select(table).where(table.c.profile_id.in_(ids)))
            out[table.name] = sorted(map(tuple, rows), key=repr)
        rows = conn.execute(
            sa.select(lineage.c.kind, lineage.c.profile_id, lineage.c.other_id,
                      lineage.c.log_offset, lineage.c.details)
            .where(lineage.c.workspace_id == ws_id)
        )  # fmt: skip
        out["lineage"] = sorted(map(tuple, rows), key=repr)
    return out


JOURNEY = [
    {"type": "page", "anonymousId": "d1"},
    {"type": "identify", "anonymousId": "d1", "userId": "u1", "traits": {"email": "a@x.com"}},
    {"type": "page", "anonymousId": "d2"},
    {"type": "track", "anonymousId": "d2", "event": "E",
     "context": {"traits": {"email": "a@x.com"}}},
    {"type": "identify", "userId": "u2", "traits": {"email": "a@x.com"}},
    {"type": "group", "userId": "u1", "groupId": "g", "traits": {"n": 1}},
    {"type": "alias", "userId": "u3", "previousId": "d3"},
] * 3  # fmt: skip


def test_reprocessing_an_offset_range_changes_nothing(store, ws):
    run(store, ws, JOURNEY)
    before = derived_state(store, ws)
    pipeline = Pipeline(store)
    pipeline.log.save_checkpoint(consumer_name(ws), 3)  # as if offsets after 3 were new
    assert pipeline.catch_up(ws) > 0
    assert derived_state(store, ws) == before


def test_incremental_state_equals_a_rebuild(store, ws):
    append(store, ws, JOURNEY)
    small = Pipeline(store, batch_size=3)  # many small batches
    small.catch_up(ws)
    incremental = derived_state(store, ws)
    assert rebuild(store, ws) == len(JOURNEY)
    assert derived_state(store, ws) == incremental


def test_messages_arriving_during_a_rebuild_are_resolved_as_usual(store, ws):
    append(store, ws, JOURNEY)
    Pipeline(store).catch_up(ws)
    arrivals = [
        {"type": "identify", "anonymousId": "d9", "userId": "u1", "traits": {"late": True}},
        {"type": "track", "anonymousId": "d9", "event": "Late"},
    ]
    passes = []

    def progress(name: str, count: int) -> None:
        if name == "profiles" and name not in passes:  # the new graph is saved by now
            append(store, ws, arrivals)
        passes.append(name)

    assert rebuild(store, ws, progress) == len(JOURNEY) + len(arrivals)
    assert {"identity", "profiles"} <= set(passes)
    during = derived_state(store, ws)
    assert profile_of(store, ws, "anonymous_id:d9") == profile_of(store, ws, "user_id:u1")
    rebuild(store, ws)  # all of it in one go this time
    assert derived_state(store, ws) == during


def test_a_merge_keeps_the_earliest_group_call_as_the_membership(store, ws):
    append(store, ws, [
        {"type": "page", "anonymousId": "d1"},  # the older profile
        {"type": "group", "anonymousId": "d2", "groupId": "g"},  # the younger joins first
        {"type": "group", "anonymousId": "d1", "groupId": "g"},
        {"type": "identify", "anonymousId": "d1", "userId": "u1"},
        {"type": "identify", "anonymousId": "d2", "userId": "u1"},  # merges them
    ])  # fmt: skip
    Pipeline(store, batch_size=1).catch_up(ws)
    with store.engine.connect() as conn:
        offsets = conn.scalars(sa.select(account_members.c.log_offset)).all()
    first_group_call = min(r.offset for r in backend_for(store).read(0, 10) if r.type == "group")
    assert offsets == [first_group_call]
    incremental = derived_state(store, ws)
    rebuild(store, ws)
    assert derived_state(store, ws) == incremental


def test_concurrent_workers_never_process_a_message_twice(store, ws):
    append(store, ws, JOURNEY * 10)
    workers = [Pipeline(store, batch_size=7) for _ in range(3)]
    errors = []

    def work(pipeline):
        try:
            pipeline.catch_up(ws)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    concurrent = derived_state(store, ws)
    assert len(concurrent["message_profiles"]) == len(JOURNEY) * 10
    rebuild(store, ws)
    assert derived_state(store, ws) == concurrent


# Explain and unmerge -------------------------------------------------------------------


def test_explain_shows_the_identifiers_edges_and_merges_with_their_messages(store, ws):
    stored = run(store, ws, JOURNEY[:4])
    pid = profile_of(store, ws, "email:A@X.COM")
    with store.engine.connect() as conn:
        why = explain(conn, ws, pid)
    assert {(i["type"], i["value"]) for i in why["identifiers"]} == {
        ("anonymous_id", "d1"), ("user_id", "u1"), ("email", "a@x.com"), ("anonymous_id", "d2"),
    }  # fmt: skip
    assert {(e["from"]["value"], e["to"]["value"], e["message_id"]) for e in why["edges"]} == {
        ("d1", "u1", stored[1]["messageId"]),
        ("a@x.com", "u1", stored[1]["messageId"]),
        ("d2", "a@x.com", stored[3]["messageId"]),
    }
    (merge,) = why["lineage"]
    assert merge["kind"] == "merge" and merge["message_id"] == stored[3]["messageId"]
    assert len(why["merged_ids"]) == 1


def test_unmerge_splits_a_profile_into_what_remains_and_it_stays_split(store, ws):
    run(store, ws, [
        {"type": "page", "anonymousId": "family-pc"},
        {"type": "identify", "anonymousId": "family-pc", "userId": "ann",
         "traits": {"name": "Ann"}},
        {"type": "identify", "anonymousId": "family-pc", "traits": {"email": "bob@x.com",
                                                                    "name": "Bob"}},
        {"type": "track", "userId": "ann", "event": "Bought"},
    ])  # fmt: skip
    assert len(clusters(store, ws)) == 1
    result = unmerge(store, ws, "user_id:ann", "anonymous_id:family-pc", reason="shared PC")
    assert len(result.profiles) == 2 and result.messages == 4
    assert clusters(store, ws) == [{("email", "bob@x.com")}, {("user_id", "ann")}]
    ann, bob = profile_of(store, ws, "user_id:ann"), profile_of(store, ws, "email:bob@x.com")
    assert trait_values(store, ann) == {"name": '"Ann"'}
    assert trait_values(store, bob) == {"name": '"Bob"', "email": '"bob@x.com"'}
    with store.engine.connect() as conn:
        why = explain(conn, ws, ann)
        events = conn.execute(
            sa.select(message_profiles.c.profile_id, message_profiles.c.type)
            .order_by(message_profiles.c.log_offset)
        ).all()  # fmt: skip
    assert [h["kind"] for h in why["lineage"]] == ["unmerge"]
    assert why["lineage"][0]["removed"] == {"type": "anonymous_id", "value": "family-pc"}
    assert events == [(None, "page"), (ann, "identify"), (bob, "identify"), (ann, "track")]
    # New messages from the removed device join nobody; a rebuild keeps the split.
    run(store, ws, [{"type": "identify", "anonymousId": "family-pc", "userId": "ann"}])
    assert ("anonymous_id", "family-pc") not in set().union(*clusters(store, ws))
    split = derived_state(store, ws)
    rebuild(store, ws)
    assert derived_state(store, ws)["identifiers"] == split["identifiers"]


def test_removing_a_link_keeps_both_identifiers_apart(store, ws):
    run(store, ws, [{"type": "identify", "userId": "u1", "anonymousId": "kiosk"}])
    unmerge(store, ws, "user_id:u1", "anonymous_id:kiosk", linked_to="user_id:u1")
    # The one message goes to its highest-priority identifier; the kiosk is dropped from it.
    assert clusters(store, ws) == [{("user_id", "u1")}]
    run(store, ws, [
        {"type": "page", "anonymousId": "kiosk"},
        {"type": "track", "userId": "u1", "anonymousId": "kiosk", "event": "E"},
    ])  # fmt: skip
    assert clusters(store, ws) == [{("anonymous_id", "kiosk")}, {("user_id", "u1")}]


def test_unmerge_refuses_an_identifier_the_profile_does_not_have(store, ws):
    run(store, ws, [{"type": "identify", "userId": "u1"}])
    with pytest.raises(ValueError, match="not an identifier"):
        unmerge(store, ws, "user_id:u1", "email:other@x.com")
    with pytest.raises(ValueError, match="type:value"):
        unmerge(store, ws, "user_id:u1", "u1")
