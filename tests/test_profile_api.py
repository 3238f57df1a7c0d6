"""The Profile API against a real server, on SQLite and PostgreSQL: people identified
through segment-analytics-python, processed by the pipeline, read back the way Segment's
Profile API is read (Basic auth with the token as username, Segment's paths and shapes).

One world per backend (module scope: every test only reads it):

- ``anon-1`` views a page (profile A); ``u-1`` identifies with an email (profile B); an
  identify carrying both merges B into A (the older survives);
- ``u-1`` tracks five "Viewed k" events an hour apart, joins account ``org-1`` and adds a
  seat there (``context.groupId``); ``u-2`` (with a phone) joins ``org-1`` too;
- workspace ``other`` has its own person with the same email and its own token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa
from conftest import require, start_server
from segment.analytics import Client as SegmentClient

from plait.pipeline.runner import Pipeline
from plait.store import open_store
from plait.store.schema import metadata, profiles
from plait.store.workspaces import Workspaces

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SPACE = "acme"


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


@dataclass
class World:
    url: str
    workspace_id: str
    source_id: str
    reader: str  # profiles:read
    admin: str
    no_scope: str  # sources:read only
    other_reader: str  # profiles:read in workspace "other"
    sent: dict[str, dict] = field(default_factory=dict)  # name -> the SDK's message
    survivor: str = ""
    merged: str = ""
    http: requests.Session = field(default_factory=requests.Session)

    def get(self, path: str, token: str | None = None, auth: str = "basic", **params):
        token = self.reader if token is None else token
        kwargs: dict = {"params": params, "timeout": 10}
        if auth == "basic":
            kwargs["auth"] = (token, "")
        elif auth == "bearer":
            kwargs["headers"] = {"Authorization": f"Bearer {token}"}
        return self.http.get(f"{self.url}/v1/spaces/{path}", **kwargs)

    def ok(self, path: str, **params) -> dict:
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        assert response.headers["Request-Id"]
        return response.json()

    def user(self, ref: str, resource: str, **params) -> dict:
        return self.ok(f"{SPACE}/collections/users/profiles/{ref}/{resource}", **params)


def empty_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('profile-api') / 'plait.db'}"
    else:
        url, reason = request.getfixturevalue("postgres_database")
        require(url is not None, reason or "PostgreSQL unavailable")
        empty_postgres(url)
    store = open_store(url, sqlite_synchronous="NORMAL")
    repo = Workspaces(store)
    ws = repo.create_workspace(SPACE)["id"]
    source, key = repo.create_source(ws, "Website", "python")
    other = repo.create_workspace("other")["id"]
    _, other_key = repo.create_source(other, "Website", "python")
    thread, base = start_server(store, pipeline=False)
    w = World(
        base, ws, source["id"],
        reader=repo.create_token(ws, "reader", ["profiles:read"])[1],
        admin=repo.create_token(ws, "admin", ["admin"])[1],
        no_scope=repo.create_token(ws, "no scope", ["sources:read"])[1],
        other_reader=repo.create_token(other, "reader", ["profiles:read"])[1],
    )  # fmt: skip
    try:
        send_messages(w, SegmentClient(key, host=base, sync_mode=True))
        SegmentClient(other_key, host=base, sync_mode=True).identify(
            "o-1", {"email": "jo@example.com", "plan": "other"}
        )
        Pipeline(store).catch_up()
        with store.engine.connect() as conn:
            w.merged, w.survivor = conn.execute(
                sa.select(profiles.c.id, profiles.c.merged_into).where(
                    profiles.c.merged_into.is_not(None)
                )
            ).one()
        yield w
    finally:
        thread.stop()
        store.dispose()


# (name, SDK method, arguments), one an hour from T0
MESSAGES = [
    ("page", "page", {"anonymous_id": "anon-1", "name": "Pricing"}),
    (
        "identify-u1",
        "identify",
        {"user_id": "u-1", "traits": {"email": "Jo@Example.com", "plan": "free"}},
    ),
    (
        "identify-both",
        "identify",
        {"user_id": "u-1", "anonymous_id": "anon-1", "traits": {"plan": "pro", "seats": 3}},
    ),
    *(
        (f"viewed-{k}", "track", {"user_id": "u-1", "event": f"Viewed {k}", "properties": {"k": k}})
        for k in range(5)
    ),
    (
        "group-u1",
        "group",
        {"user_id": "u-1", "group_id": "org-1", "traits": {"name": "Acme Inc", "employees": 12}},
    ),
    ("seat", "track", {"user_id": "u-1", "event": "Seat Added", "context": {"groupId": "org-1"}}),
    ("identify-u2", "identify", {"user_id": "u-2", "traits": {"phone": "+1 415 555 0100"}}),
    ("group-u2", "group", {"user_id": "u-2", "group_id": "org-1"}),
]
U1_EVENTS = [name for name, _, args in MESSAGES if args.get("user_id") != "u-2"]
AT = {name: hours(n) for n, (name, _, _) in enumerate(MESSAGES)}


def send_messages(w: World, client: SegmentClient) -> None:
    for name, method, args in MESSAGES:
        queued, msg = getattr(client, method)(timestamp=AT[name], **args)
        assert queued
        w.sent[name] = msg


def near(iso: str, expected: datetime) -> bool:
    """Timestamps are corrected by the SDK's sentAt: equal up to the clock skew."""
    got = datetime.fromisoformat(iso)
    return iso.endswith("Z") and abs(got - expected) < timedelta(seconds=5)


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    return body["error"]["message"]


# Traits -------------------------------------------------------------------------------


def test_traits(world):
    body = world.user("user_id:u-1", "traits")
    assert body == {
        "traits": {"email": "Jo@Example.com", "plan": "pro", "seats": 3},
        "cursor": {
            "url": f"/v1/spaces/{SPACE}/collections/users/profiles/user_id:u-1/traits",
            "has_more": False,
            "next": "",
        },
    }
    assert world.user("user_id:u-1", "traits", include="plan,seats")["traits"] == {
        "plan": "pro",
        "seats": 3,
    }
    assert world.user("user_id:u-1", "traits", **{"class": "trait"})["traits"]["seats"] == 3
    assert world.user("user_id:u-1", "traits", **{"class": "audience"})["traits"] == {}


def test_traits_verbose(world):
    traits = world.user("user_id:u-1", "traits", verbose="true")["traits"]
    assert set(traits) == {"email", "plan", "seats"}
    plan = traits["plan"]
    assert set(plan) == {"value", "source_id", "updated_at", "message_id"}
    assert plan["value"] == "pro" and plan["source_id"] == world.source_id
    assert plan["message_id"] != traits["email"]["message_id"]  # set by different messages
    assert near(plan["updated_at"], AT["identify-both"])
    assert near(traits["email"]["updated_at"], AT["identify-u1"])


def test_traits_pages_by_key(world):
    first = world.user("user_id:u-1", "traits", limit=2)
    assert first["traits"] == {"email": "Jo@Example.com", "plan": "pro"}
    assert first["cursor"]["has_more"] is True and first["cursor"]["next"] == "seats"
    rest = world.user("user_id:u-1", "traits", limit=2, next="seats")
    assert rest["traits"] == {"seats": 3} and rest["cursor"]["has_more"] is False


# Lookups ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    ["email:JO@EXAMPLE.COM", "email: jo@example.com ", "anonymous_id:anon-1", "user_id:u-1"],
)
def test_any_identifier_finds_the_person(world, ref):
    assert world.user(ref, "traits")["traits"]["plan"] == "pro"


def test_segment_id_of_a_merged_away_profile_answers_for_the_survivor(world):
    assert world.survivor != world.merged
    for ref in (world.merged, world.survivor):
        assert world.user(f"segment_id:{ref}", "traits")["traits"]["plan"] == "pro"
    ids = world.user(f"segment_id:{world.merged}", "external_ids")["data"]
    assert {(i["type"], i["id"]) for i in ids} == {
        ("anonymous_id", "anon-1"),
        ("user_id", "u-1"),
        ("email", "jo@example.com"),
    }


def test_phone_is_normalized_like_the_pipeline(world):
    for ref in ("phone:%2B14155550100", "phone:(415) 555-0100"):
        ids = world.user(ref, "external_ids")["data"]
        assert ("user_id", "u-2") in {(i["type"], i["id"]) for i in ids}


@pytest.mark.parametrize(
    "path",
    [
        "users/profiles/email:nobody@example.com/traits",
        "users/profiles/user_id:nobody/events",
        "users/profiles/segment_id:prf_000000000000000000000000/metadata",
        "users/profiles/group_id:org-1/traits",  # an account is not a user
        "accounts/profiles/user_id:u-1/traits",
        "users/profiles/user_id:u-1/everything",
    ],
)
def test_not_found(world, path):
    response = world.get(f"{SPACE}/collections/{path}")
    assert error_of(response, 404, "not_found").endswith("was not found.")


# External ids -------------------------------------------------------------------------


def test_external_ids(world):
    body = world.user("user_id:u-1", "external_ids")
    assert body["cursor"]["has_more"] is False
    data = body["data"]
    assert [(i["type"], i["id"]) for i in data] == [
        ("anonymous_id", "anon-1"),  # oldest first
        ("email", "jo@example.com"),
        ("user_id", "u-1"),
    ]
    first = data[0]
    assert set(first) == {"source_id", "collection", "id", "type", "created_at", "encoding",
                          "first_message_id"}  # fmt: skip
    assert first["source_id"] == world.source_id and first["collection"] == "users"
    assert first["encoding"] == "none"
    assert first["first_message_id"] == world.sent["page"]["messageId"]
    assert near(first["created_at"], AT["page"])
    only = world.user("user_id:u-1", "external_ids", include="email,user_id")["data"]
    assert [i["type"] for i in only] == ["email", "user_id"]


def test_external_ids_page_with_cursors(world):
    seen, params = [], {"limit": 1}
    while True:
        body = world.user("anonymous_id:anon-1", "external_ids", **params)
        seen += [i["type"] for i in body["data"]]
        if not body["cursor"]["has_more"]:
            break
        params["next"] = body["cursor"]["next"]
    assert seen == ["anonymous_id", "email", "user_id"]


# Events -------------------------------------------------------------------------------


def walk_events(world, ref: str, collection: str = "users", **params) -> list[dict]:
    events, params = [], {"limit": 3, **params}
    path = f"{SPACE}/collections/{collection}/profiles/{ref}/events"
    while True:
        body = world.ok(path, **params)
        assert len(body["data"]) <= 3
        events += body["data"]
        cursor = body["cursor"]
        assert cursor["url"] == f"/v1/spaces/{path}"
        if not cursor["has_more"]:
            assert cursor["next"] == ""
            return events
        params["next"] = cursor["next"]


def test_events_whole_history_newest_first_in_pages(world):
    events = walk_events(world, "user_id:u-1")
    ids = [e["message_id"] for e in events]
    assert ids == [world.sent[name]["messageId"] for name in reversed(U1_EVENTS)]
    times = [e["timestamp"] for e in events]
    assert times == sorted(times, reverse=True)
    assert world.user("user_id:u-1", "events")["cursor"]["has_more"] is False  # 10 of 10


def test_events_ascending_and_shapes(world):
    events = walk_events(world, "user_id:u-1", sort="asc")
    assert [e["message_id"] for e in events] == [world.sent[n]["messageId"] for n in U1_EVENTS]
    page = events[0]
    assert page["type"] == "page" and page["event"] == "Pricing"
    assert page["external_ids"] == [
        {"collection": "users", "type": "anonymous_id", "id": "anon-1", "encoding": "none"}
    ]
    assert page["related"] == {"users": world.survivor}
    track = events[3]
    assert set(track) == {"external_ids", "context", "type", "message_id", "source_id",
                          "timestamp", "properties", "event", "related"}  # fmt: skip
    assert (track["type"], track["event"], track["properties"]) == ("track", "Viewed 0", {"k": 0})
    assert track["source_id"] == world.source_id
    assert track["context"]["library"]["name"] == "analytics-python"
    assert near(track["timestamp"], AT["viewed-0"])
    identify = events[2]
    assert identify["traits"] == {"plan": "pro", "seats": 3}
    group = events[8]
    assert {"collection": "accounts", "type": "group_id", "id": "org-1", "encoding": "none"} in (
        group["external_ids"]
    )
    assert set(group["related"]) == {"users", "accounts"}


def test_events_between_start_and_end(world):
    events = walk_events(
        world, "user_id:u-1", start=hours(2.5).isoformat(), end=hours(5.5).isoformat()
    )
    assert [e["event"] for e in events] == ["Viewed 2", "Viewed 1", "Viewed 0"]
    assert walk_events(world, "user_id:u-1", start="2024-03-02") == []
    assert len(walk_events(world, "user_id:u-1", end="2024-03-02")) == len(U1_EVENTS)


def test_events_include_and_exclude_by_name(world):
    events = walk_events(world, "user_id:u-1", include="Viewed 1,Viewed 3", sort="asc")
    assert [e["event"] for e in events] == ["Viewed 1", "Viewed 3"]
    rest = walk_events(world, "user_id:u-1", exclude="Pricing,Seat Added")
    assert len(rest) == len(U1_EVENTS) - 2


# Links, accounts, metadata ------------------------------------------------------------


def test_links_between_users_and_accounts(world):
    (link,) = world.user("user_id:u-1", "links")["data"]
    assert link["to_collection"] == "accounts"
    (account_id,) = link["external_ids"]
    assert (account_id["type"], account_id["id"], account_id["collection"]) == (
        "group_id", "org-1", "accounts")  # fmt: skip
    assert account_id["first_message_id"] == world.sent["group-u1"]["messageId"]

    body = world.ok(f"{SPACE}/collections/accounts/profiles/group_id:org-1/links")
    assert [link["to_collection"] for link in body["data"]] == ["users", "users"]
    members = [{(i["type"], i["id"]) for i in link["external_ids"]} for link in body["data"]]
    assert ("user_id", "u-1") in members[0] and ("anonymous_id", "anon-1") in members[0]
    assert members[1] == {("user_id", "u-2"), ("phone", "+14155550100")}

    first = world.ok(f"{SPACE}/collections/accounts/profiles/group_id:org-1/links", limit=1)
    assert len(first["data"]) == 1 and first["cursor"]["has_more"] is True
    second = world.ok(f"{SPACE}/collections/accounts/profiles/group_id:org-1/links", limit=1,
                      next=first["cursor"]["next"])  # fmt: skip
    assert second["data"] == body["data"][1:] and second["cursor"]["has_more"] is False


def test_account_traits_events_and_metadata(world):
    path = f"{SPACE}/collections/accounts/profiles/group_id:org-1"
    assert world.ok(f"{path}/traits")["traits"] == {"name": "Acme Inc", "employees": 12}
    events = walk_events(world, "group_id:org-1", collection="accounts")
    # group calls naming it and its members' events with context.groupId, newest first
    assert [e["message_id"] for e in events] == [
        world.sent[n]["messageId"] for n in ("group-u2", "seat", "group-u1")
    ]
    meta = world.ok(f"{path}/metadata")["metadata"]
    assert meta["first_message_id"] == world.sent["group-u1"]["messageId"]
    assert meta["last_message_id"] == world.sent["group-u2"]["messageId"]
    assert near(meta["created_at"], AT["group-u1"]) and near(meta["updated_at"], AT["group-u2"])
    account_ids = world.ok(f"{path}/external_ids")["data"]
    assert [(i["collection"], i["type"], i["id"]) for i in account_ids] == [
        ("accounts", "group_id", "org-1")
    ]


def test_metadata(world):
    meta = world.user("email:jo@example.com", "metadata")
    assert meta == {
        "metadata": {
            "created_at": meta["metadata"]["created_at"],
            "updated_at": meta["metadata"]["updated_at"],
            "expires_at": None,
            "first_message_id": world.sent["page"]["messageId"],
            "first_source_id": world.source_id,
            "last_message_id": world.sent["seat"]["messageId"],
            "last_source_id": world.source_id,
        }
    }
    assert near(meta["metadata"]["created_at"], AT["page"])
    assert near(meta["metadata"]["updated_at"], AT["seat"])


# Search -------------------------------------------------------------------------------


def test_search_by_identifier_or_value(world):
    path = f"{SPACE}/collections/users/profiles"
    (found,) = world.ok(path, identifier="email:JO@example.com")["data"]
    assert found["segment_id"] == world.survivor and found["collection"] == "users"
    assert {i["type"] for i in found["external_ids"]} == {"anonymous_id", "email", "user_id"}
    assert near(found["created_at"], AT["page"])
    assert [p["segment_id"] for p in world.ok(path, q="anon-1")["data"]] == [world.survivor]
    assert [p["segment_id"] for p in world.ok(path, q="Jo@Example.com")["data"]] == [world.survivor]
    by_merged = world.ok(path, identifier=f"segment_id:{world.merged}")["data"]
    assert [p["segment_id"] for p in by_merged] == [world.survivor]
    assert world.ok(path, q="nobody")["data"] == []
    (account,) = world.ok(f"{SPACE}/collections/accounts/profiles", q="org-1")["data"]
    assert account["collection"] == "accounts" and account["segment_id"].startswith("acc_")


def test_search_lists_profiles_in_pages(world):
    path = f"{SPACE}/collections/users/profiles"
    everyone = world.ok(path)["data"]
    assert len(everyone) == 2 and world.survivor in {p["segment_id"] for p in everyone}
    first = world.ok(path, limit=1)
    assert first["cursor"]["has_more"] is True
    second = world.ok(path, limit=1, next=first["cursor"]["next"])
    assert first["data"] + second["data"] == everyone and second["cursor"]["has_more"] is False


# Validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "params", "param"),
    [
        ("traits", {"limit": "0"}, "limit"),
        ("traits", {"limit": "201"}, "limit"),
        ("traits", {"limit": "ten"}, "limit"),
        ("events", {"limit": "101"}, "limit"),
        ("links", {"limit": "21"}, "limit"),
        ("traits", {"include": "plan,,seats"}, "include"),
        ("traits", {"include": ",".join(f"t{i}" for i in range(201))}, "include"),
        ("external_ids", {"include": " "}, "include"),
        ("traits", {"class": "segment"}, "class"),
        ("traits", {"verbose": "maybe"}, "verbose"),
        ("events", {"sort": "up"}, "sort"),
        ("events", {"start": "yesterday"}, "start"),
        ("events", {"start": "2024-03-02", "end": "2024-03-01"}, "end"),
        ("events", {"next": "not-a-cursor"}, "next"),
        ("external_ids", {"next": "WzFd"}, "next"),  # base64 of [1]: another list's shape
    ],
)
def test_bad_parameters_are_400_validation_errors(world, resource, params, param):
    response = world.get(f"{SPACE}/collections/users/profiles/user_id:u-1/{resource}", **params)
    assert f"`{param}`" in error_of(response, 400, "validation_error")


def test_bad_paths_are_400_validation_errors(world):
    for path, param in [
        ("users/profiles/u-1/traits", "id"),
        ("things/profiles/user_id:u-1/traits", "collection"),
        ("users/profiles", "identifier"),
    ]:
        params = {"identifier": "no-colon"} if param == "identifier" else {}
        response = world.get(f"{SPACE}/collections/{path}", **params)
        assert f"`{param}`" in error_of(response, 400, "validation_error")
    assert world.get(f"{SPACE}/collections/users/profiles/user_id:u-1/traits", limit="200").ok


# Auth ---------------------------------------------------------------------------------

TRAITS = f"{SPACE}/collections/users/profiles/user_id:u-1/traits"


def test_missing_or_wrong_token_is_401(world):
    assert error_of(world.get(TRAITS, auth="none"), 401, "authentication_error")
    assert error_of(world.get(TRAITS, token="plt_wrong"), 401, "authentication_error")
    assert error_of(world.get(TRAITS, token=""), 401, "authentication_error")
    assert error_of(world.get(TRAITS, token="plt_wrong", auth="bearer"), 401,
                    "authentication_error")  # fmt: skip


def test_bearer_and_admin_tokens_are_accepted(world):
    assert world.get(TRAITS, auth="bearer").json()["traits"]["plan"] == "pro"
    assert world.get(TRAITS, token=world.admin).json()["traits"]["plan"] == "pro"
    by_id = world.get(f"{world.workspace_id}/collections/users/profiles/user_id:u-1/traits")
    assert by_id.json()["traits"]["plan"] == "pro"


def test_token_without_the_scope_is_403(world):
    message = error_of(world.get(TRAITS, token=world.no_scope), 403, "forbidden")
    assert "profiles:read" in message


def test_another_workspaces_token_sees_no_data(world):
    other = world.other_reader
    for path in (
        TRAITS,
        f"{world.workspace_id}/collections/users/profiles/user_id:u-1/traits",
        f"{SPACE}/collections/users/profiles?q=jo@example.com",
        "nowhere/collections/users/profiles/user_id:u-1/traits",
    ):
        assert error_of(world.get(path, token=other), 404, "not_found") == "Space was not found."
    # its own space: its own person only, even for the same email or our profile's id
    mine = "other/collections/users/profiles"
    assert world.get(f"{mine}/email:jo@example.com/traits", token=other).json()["traits"] == {
        "email": "jo@example.com",
        "plan": "other",
    }
    response = world.get(f"{mine}/segment_id:{world.survivor}/traits", token=other)
    assert error_of(response, 404, "not_found")
    assert error_of(world.get(f"{mine}/user_id:u-1/traits", token=other), 404, "not_found")
