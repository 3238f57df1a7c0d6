"""Properties of identity resolution over random message streams (hypothesis): with no
limit hit, profiles are the connected components of the identifier graph whatever the
order of the messages, and the incremental state equals a rebuild's."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from log_messages import append
from test_identity import clusters, derived_state

from plait.pipeline.maintenance import rebuild
from plait.pipeline.runner import Pipeline
from plait.store import open_store
from plait.store.workspaces import Workspaces

NO_LIMITS = {"identifiers": {t: {"limit": 1000} for t in ("user_id", "anonymous_id", "email")}}

message = st.fixed_dictionaries(
    {"anonymousId": st.sampled_from([f"a{i}" for i in range(6)])},
    optional={
        "userId": st.sampled_from([f"u{i}" for i in range(4)]),
        "email": st.sampled_from([f"e{i}@x.com" for i in range(4)]),
        "type": st.sampled_from(["identify", "track", "page"]),
    },
).map(
    lambda m: {
        "type": m.get("type", "track"),
        "anonymousId": m["anonymousId"],
        "event": "E",
        **({"userId": m["userId"]} if "userId" in m else {}),
        **({"context": {"traits": {"email": m["email"]}}} if "email" in m else {}),
    }
)
streams = st.lists(message, min_size=1, max_size=25)


def components(messages) -> list[set]:
    """Connected components of the graph whose edges join the identifiers of a message."""
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for msg in messages:
        ids = [("anonymous_id", msg["anonymousId"])]
        if "userId" in msg:
            ids.append(("user_id", msg["userId"]))
        if "context" in msg:
            ids.append(("email", msg["context"]["traits"]["email"]))
        for a, b in itertools.pairwise(ids):
            parent[find(a)] = find(b)
        find(ids[0])
    groups: dict = {}
    for node in parent:
        groups.setdefault(find(node), set()).add(node)
    return sorted(groups.values(), key=sorted)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('props') / 'p.db'}", "OFF")
    yield store
    store.dispose()


def new_workspace(store, rules: dict | None = NO_LIMITS) -> str:
    repo = Workspaces(store)
    ws = repo.create_workspace(f"w-{len(repo.list_workspaces())}")["id"]
    if rules is not None:
        repo.put_setting(ws, "identity", rules)
    return ws


SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(stream=streams, order=st.randoms(use_true_random=False))
def test_profiles_are_the_connected_components_in_any_order(shared_store, stream, order):
    expected = components(stream)
    shuffled = list(stream)
    order.shuffle(shuffled)
    for messages in (stream, shuffled):
        ws = new_workspace(shared_store)
        append(shared_store, ws, messages)
        Pipeline(shared_store).catch_up(ws)
        assert clusters(shared_store, ws) == expected


@SETTINGS
@given(stream=streams, batch_size=st.integers(1, 8))
def test_incremental_state_equals_rebuilt_state(shared_store, stream, batch_size):
    ws = new_workspace(shared_store)
    half = len(stream) // 2
    append(shared_store, ws, stream[:half])
    Pipeline(shared_store, batch_size=batch_size).catch_up(ws)
    append(shared_store, ws, stream[half:])  # more arrives after the first catch-up
    Pipeline(shared_store, batch_size=batch_size).catch_up(ws)
    incremental = derived_state(shared_store, ws)
    rebuild(shared_store, ws)
    assert derived_state(shared_store, ws) == incremental


alias = st.fixed_dictionaries(
    {
        "type": st.just("alias"),
        "previousId": st.sampled_from(["a0", "a1", "u0", "u9"]),
        "userId": st.sampled_from([f"u{i}" for i in range(4)]),
    }
)


group = st.fixed_dictionaries(
    {
        "type": st.just("group"),
        "anonymousId": st.sampled_from([f"a{i}" for i in range(6)]),
        "groupId": st.sampled_from(["g0", "g1"]),
    }
)


@SETTINGS
@given(stream=st.lists(st.one_of(message, alias, group), min_size=1, max_size=25))
def test_a_rebuild_equals_the_incremental_state_where_limits_refuse_merges(shared_store, stream):
    ws = new_workspace(shared_store, rules=None)  # Segment's limits: one user id a profile
    append(shared_store, ws, stream)
    Pipeline(shared_store, batch_size=3).catch_up(ws)
    incremental = derived_state(shared_store, ws)
    rebuild(shared_store, ws)
    assert derived_state(shared_store, ws) == incremental
