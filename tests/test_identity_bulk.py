"""A rebuild's bulk resolution (plait.identity.bulk) against the Resolver message by
message: the same profiles, identifiers, edges, merges and assignments, on random streams
that hit limits, removals and aliases (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from plait.identity.bulk import LogIdentities, resolve_all
from plait.identity.resolver import Graph, Resolver, edge, with_previous_id
from plait.identity.rules import default_rules, from_dict

HOUR = 3_600_000

ident = st.one_of(
    st.tuples(st.just("user_id"), st.sampled_from(["u1", "u2", "u3", "a1"])),
    st.tuples(st.just("anonymous_id"), st.sampled_from(["a1", "a2", "a3", "a4", "u1"])),
    st.tuples(st.just("email"), st.sampled_from(["e1", "e2", "e3"])),
)
messages = st.lists(
    st.tuples(
        st.lists(ident, min_size=0, max_size=4, unique=True),
        st.integers(0, 200),  # hours: last seen moves, windows expire
        # an alias's previousId, now and then: an alias sends its cluster to the Resolver
        st.sampled_from([None] * 12 + ["u1", "a1", "a2", "zz"]),
    ),
    min_size=1,
    max_size=30,
)
RULES = [
    from_dict({"identifiers": {t: {"limit": 1000} for t in ("user_id", "anonymous_id", "email")}}),
    default_rules(),
    from_dict({"identifiers": {"anonymous_id": {"limit": 2}, "email": {"limit": 1}}}),
    from_dict({"identifiers": {"anonymous_id": {"limit": 2, "window": "weekly"}}}),
]
NO_REMOVALS = {"identifiers": [], "links": []}
REMOVALS = st.one_of(
    st.just(NO_REMOVALS),
    st.just(NO_REMOVALS),
    st.fixed_dictionaries(
        {
            "identifiers": st.lists(ident, max_size=1),
            "links": st.lists(st.tuples(ident, ident), max_size=1),
        }
    ),
)


def stream(raw, rules) -> list[tuple]:
    """(offset, message id, timestamp, identifiers by priority, alias previousId)s."""
    return [
        (offset, f"m{offset}", hours * HOUR // 3, sorted(ids, key=lambda i: rules.rank(i[0])),
         previous)
        for offset, (ids, hours, previous) in enumerate(raw, 1)
    ]  # fmt: skip


def columns(msgs) -> LogIdentities:
    log = LogIdentities()
    for msg in msgs:
        log.add(*msg)
    return log


def graph_with(removals) -> Graph:
    graph = Graph("ws_t")
    graph.removed_identifiers.update(removals["identifiers"])
    graph.removed_links.update(edge(a, b) for a, b in removals["links"] if a != b)
    return graph


def one_by_one(graph: Graph, rules, msgs):
    resolver = Resolver(graph, rules)
    found = {}
    for offset, message_id, ts, ids, previous in msgs:
        if previous is not None:
            ids = with_previous_id(ids, resolver.classify_previous_id(previous), rules)
        pid = resolver.resolve(ids, offset, message_id, ts)
        if pid is not None:
            found[offset] = pid
    return resolver.changes, {offset: graph.resolve_id(pid) for offset, pid in found.items()}


def state(graph: Graph, changes, assigned, offsets) -> dict:
    return {
        "assigned": {offset: assigned.get(offset) for offset in offsets},
        "owner": {i: p.id for i, p in graph.owner.items()},
        "last_seen": {i: p.identifiers[i] for i, p in graph.owner.items()},
        "profiles": sorted(graph.profiles),
        "merged_into": {m: graph.resolve_id(m) for m in graph.merged_into},
        "new_profiles": sorted((p.id, p.first_offset, p.created_at) for p in changes.new_profiles),
        "new_identifiers": sorted(changes.new_identifiers),
        "new_edges": sorted(changes.new_edges),
        "merges": sorted(
            (m.survivor, m.merged, m.offset, m.timestamp_ms, tuple(m.identifiers))
            for m in changes.merges
        ),
    }


@settings(max_examples=300, deadline=None)
@given(raw=messages, rules_index=st.integers(0, len(RULES) - 1), removals=REMOVALS)
def test_bulk_resolution_equals_the_resolver(raw, rules_index, removals):
    rules = RULES[rules_index]
    msgs = stream(raw, rules)
    expected_graph = graph_with(removals)
    offsets = [msg[0] for msg in msgs]
    expected = state(expected_graph, *one_by_one(expected_graph, rules, msgs), offsets)
    graph = graph_with(removals)
    changes, assigned = resolve_all(graph, rules, columns(msgs))
    assigned = dict(zip(offsets, assigned.profiles(offsets), strict=True))
    assert state(graph, changes, assigned, offsets) == expected


def test_a_limit_sends_only_its_cluster_to_the_resolver():
    rules = default_rules()  # one user_id per profile
    msgs = stream(
        [
            ([("user_id", "u1"), ("anonymous_id", "a1")], 0, None),
            ([("user_id", "u2"), ("anonymous_id", "a1")], 1, None),  # refused: 2 user ids
            ([("user_id", "u3"), ("anonymous_id", "a3")], 2, None),
            ([("anonymous_id", "a4"), ("anonymous_id", "a3")], 3, None),
        ],
        rules,
    )
    graph = Graph("ws_t")
    changes, assigned = resolve_all(graph, rules, columns(msgs))
    owner = {i: p.id for i, p in graph.owner.items()}
    assert owner[("user_id", "u1")] == owner[("anonymous_id", "a1")] != owner[("user_id", "u2")]
    assert owner[("user_id", "u3")] == owner[("anonymous_id", "a4")]
    assert assigned.profiles([2]) == [owner[("user_id", "u2")]]
    assert set(assigned.resolved_again) == {1, 2}  # the Resolver did u1-u2's cluster only
    assert len(changes.new_profiles) == 3 and not changes.merges
