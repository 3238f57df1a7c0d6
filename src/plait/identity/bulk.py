"""Resolving a whole log at once, for a rebuild: the Resolver's result, in bulk.

Message by message, the Resolver spends ~5 µs a link on dicts of identifier tuples. A
rebuild sees the whole log at once, so most of that work can be done on arrays:

1. Identifiers are numbered (one dict lookup each, column by column, as scipy's own
   clustering must). A message becomes its first (highest-priority) identifier, the
   anchor, and the others, each linked to the anchor: the Resolver's star of edges.
2. With numpy: the first message of every identifier and of every edge, and each
   identifier's last seen (the hour of its latest message: order-independent).
3. In Python, only the messages that change the graph, in log order: those that create a
   profile (all their identifiers new) and those carrying an edge never seen before (a
   new identifier joining, or profiles merging into the oldest, in age order, recorded
   with the message). Every other message repeats what is known.
4. Each cluster's profile is its founder's, found for every identifier with numpy.

That is the Resolver exactly where no limit, removal or alias could change a decision. A
cluster where one might is *unsafe*: it holds more values of some type than the type's
limit (only then can a limit refuse a join, in any window), an identifier or both ends of
a link an operator removed, or an alias (whose previousId is read against what was seen
before it, so its cluster is joined with both readings first). The messages of unsafe
clusters are resolved again by the Resolver, in order; clusters share no identifier, so
the two sides cannot see each other. tests/test_identity_bulk.py holds the result equal
to the Resolver's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from plait.identity.identifiers import Identifier
from plait.identity.resolver import (
    LAST_SEEN_GRANULARITY_MS,
    Changes,
    Graph,
    Merge,
    Profile,
    Resolver,
    edge,
    profile_id_for,
    with_previous_id,
)
from plait.identity.rules import Rules


@dataclass
class LogIdentities:
    """A workspace's messages as resolution needs them, in columns, in log order. Messages
    with no identifier (and no alias) are left out: they belong to no profile."""

    offsets: list[int] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)  # ms
    anchors: list[Identifier] = field(default_factory=list)  # each message's first identifier
    others: list[Identifier] = field(default_factory=list)  # the rest, message after message
    ends: list[int] = field(default_factory=list)  # where each message's others end
    aliases: dict[int, str] = field(default_factory=dict)  # message index -> previousId
    stand_ins: set[int] = field(default_factory=set)  # aliases with no identifier of their own

    def add(
        self, offset: int, message_id: str, timestamp_ms: int, identifiers: list[Identifier],
        previous_id: str | None = None,
    ) -> None:  # fmt: skip
        if not identifiers and previous_id is None:
            return
        index = len(self.offsets)
        if previous_id is not None:
            self.aliases[index] = previous_id
        if not identifiers:  # its previousId stands in as the anchor (an alias: unsafe)
            self.stand_ins.add(index)
            identifiers = [("user_id", previous_id)]
        self.offsets.append(offset)
        self.message_ids.append(message_id)
        self.timestamps.append(timestamp_ms)
        self.anchors.append(identifiers[0])
        self.others += identifiers[1:]
        self.ends.append(len(self.others))

    def identifiers(self, index: int) -> list[Identifier]:
        """A message's identifiers as it carried them."""
        if index in self.stand_ins:
            return []
        start = self.ends[index - 1] if index else 0
        return [self.anchors[index], *self.others[start : self.ends[index]]]

    def __len__(self) -> int:
        return len(self.offsets)


class ProfilesByOffset:
    """Each resolved message's final profile id, looked up by log offset."""

    def __init__(self, offsets: np.ndarray, roots: np.ndarray, profile_of_root: dict[int, str]):
        self._offsets, self._roots, self._profile_of_root = offsets, roots, profile_of_root
        self.resolved_again: dict[int, str] = {}  # unsafe clusters' messages, by offset

    def profiles(self, offsets: list[int]) -> list[str | None]:
        """The final profile id (None: no profile) of each message at ``offsets``."""
        indexes = np.searchsorted(self._offsets, offsets).tolist()
        found: list[str | None] = []
        for offset, index in zip(offsets, indexes, strict=True):
            again = self.resolved_again.get(offset)
            if again is None and index < len(self._offsets) and self._offsets[index] == offset:
                again = self._profile_of_root.get(int(self._roots[index]))
            found.append(again)
        return found


def resolve_all(graph: Graph, rules: Rules, log: LogIdentities) -> tuple[Changes, ProfilesByOffset]:
    """Resolve ``log`` (a workspace's whole log) into ``graph``, which holds only the
    workspace's removals: returns the changes to save, as the Resolver's, and each
    message's final profile."""
    changes = Changes()
    n_messages = len(log)
    number: dict[Identifier, int] = {}
    code = number.setdefault
    anchor_codes = np.fromiter((code(x, len(number)) for x in log.anchors), np.int64, n_messages)
    other_codes = np.fromiter((code(x, len(number)) for x in log.others), np.int64, len(log.others))
    idents = list(number)
    n_codes = len(idents)
    ends = np.asarray(log.ends, np.int64)
    other_message = np.repeat(np.arange(n_messages), np.diff(ends, prepend=0))
    message_index = np.arange(n_messages)

    # The first message of every identifier, and the messages that found a profile.
    first = np.full(n_codes, n_messages, np.int64)
    np.minimum.at(first, anchor_codes, message_index)
    np.minimum.at(first, other_codes, other_message)
    old_other = first[other_codes] < other_message
    founding = (first[anchor_codes] == message_index) & (
        np.bincount(other_message[old_other], minlength=n_messages) == 0
    )
    # The first message of every edge (the anchor with each other identifier).
    anchors_of = anchor_codes[other_message]
    low, high = np.minimum(anchors_of, other_codes), np.maximum(anchors_of, other_codes)
    _, first_link = np.unique(low * n_codes + high, return_index=True)
    first_link.sort()  # in log order: others are stored message after message
    changing = founding.copy()  # the messages that change the graph
    changing[other_message[first_link]] = True
    events = np.flatnonzero(changing)

    # Union-find over the identifiers, in log order, through the messages that change it.
    parent = list(range(n_codes))
    founder: dict[int, Profile] = {}  # a root -> the profile its cluster founded
    link_messages = other_message[first_link].tolist()
    link_others = other_codes[first_link].tolist()
    offsets, message_ids, timestamps = log.offsets, log.message_ids, log.timestamps
    workspace_id = graph.workspace_id
    anchor_list, first_list, founding_list = (
        anchor_codes.tolist(),
        first.tolist(),
        founding.tolist(),
    )
    row_codes: list[int] = []  # the identifier behind each new_identifiers row
    edge_codes: list[int] = []  # ... and each new_edges row (its anchor)
    link = 0
    for m in events.tolist():
        offset, message_id, ts = offsets[m], message_ids[m], timestamps[m]
        anchor = anchor_list[m]
        new_links = []
        while link < len(link_messages) and link_messages[link] == m:
            new_links.append(link_others[link])
            link += 1
        if founding_list[m]:
            root = anchor
            profile = founder[root] = Profile(profile_id_for(workspace_id, offset), offset, ts)
            changes.new_profiles.append(profile)
        else:
            roots = []
            for c in (anchor, *new_links):
                if first_list[c] < m:
                    while parent[c] != c:
                        parent[c] = parent[parent[c]]
                        c = parent[c]
                    if c not in roots:
                        roots.append(c)
            if len(roots) > 1:
                roots.sort(key=lambda r: founder[r].first_offset)
            root = roots[0]
            profile = founder[root]
            for merged in roots[1:]:
                parent[merged] = root
                changes.merges.append(
                    Merge(profile.id, founder[merged].id, offset, message_id, ts,
                          log.identifiers(m))
                )  # fmt: skip
        for c in (anchor, *new_links):
            if first_list[c] == m:  # new: joins the message's profile
                parent[c] = root
                changes.new_identifiers.append((idents[c], profile.id, ts, offset, message_id))
                row_codes.append(c)
        for c in new_links:
            a, b = edge(idents[anchor], idents[c])
            changes.new_edges.append((a, b, profile.id, offset, message_id, ts))
            edge_codes.append(anchor)

    # Every identifier's final cluster: pointer jumping on the parent array.
    final = np.asarray(parent, np.int64)
    while True:
        jumped = final[final]
        if np.array_equal(jumped, final):
            break
        final = jumped
    hours = np.asarray(timestamps, np.int64)
    hours -= hours % LAST_SEEN_GRANULARITY_MS  # seen_hour, for every message at once
    last_seen = np.full(n_codes, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(last_seen, anchor_codes, hours)
    np.maximum.at(last_seen, other_codes, hours[other_message])

    unsafe = _unsafe_roots(graph, rules, log, idents, number, final, anchor_codes)
    if unsafe.any():
        safe_rows = ~unsafe[final[np.asarray(row_codes, np.int64)]]
        changes.new_identifiers = list(_where(changes.new_identifiers, safe_rows))
        safe_rows = ~unsafe[final[np.asarray(edge_codes, np.int64)]]
        changes.new_edges = list(_where(changes.new_edges, safe_rows))
        changes.new_profiles = [p for r, p in founder.items() if not unsafe[final[r]]]
        changes.merges = [
            mg for mg in changes.merges if not unsafe[final[number[mg.identifiers[0]]]]
        ]

    # The safe clusters' graph, as the Resolver would leave it.
    profile_of_root: dict[int, str] = {}
    final_list, last_list, unsafe_list = final.tolist(), last_seen.tolist(), unsafe.tolist()
    profiles = graph.profiles
    for c, ident in enumerate(idents):
        root = final_list[c]
        if unsafe_list[root]:
            continue
        profile = founder[root]
        if root not in profile_of_root:
            profile_of_root[root] = profile.id
            profiles[profile.id] = profile
        profile.identifiers[ident] = last_list[c]
        graph.owner[ident] = profile
    for merge in changes.merges:
        graph.merged_into[merge.merged] = merge.survivor

    found = ProfilesByOffset(np.asarray(offsets, np.int64), final[anchor_codes], profile_of_root)
    again = np.flatnonzero(unsafe[final[anchor_codes]]).tolist()
    if again:
        found.resolved_again = _resolve_in_order(graph, rules, log, again, changes)
    return changes, found


def _where(rows: list, mask: np.ndarray):
    return (row for row, keep in zip(rows, mask.tolist(), strict=True) if keep)


def _unsafe_roots(
    graph: Graph, rules: Rules, log: LogIdentities, idents: list[Identifier],
    number: dict[Identifier, int], final: np.ndarray, anchor_codes: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """A mask over roots: the clusters the Resolver must decide (see the module's doc)."""
    n_codes = len(idents)
    type_index = {name: i for i, name in enumerate(sorted({ident[0] for ident in idents}))}
    types = np.fromiter((type_index[ident[0]] for ident in idents), np.int64, n_codes)
    counts = np.bincount(final * len(type_index) + types, minlength=n_codes * len(type_index))
    counts = counts.reshape(n_codes, len(type_index))
    unsafe = np.zeros(n_codes, bool)
    for name, i in type_index.items():
        kind = rules.types.get(name)
        if kind is not None:
            unsafe |= counts[:, i] > kind.limit
    for ident in graph.removed_identifiers:
        c = number.get(ident)
        if c is not None:
            unsafe[final[c]] = True
    for a, b in graph.removed_links:
        ca, cb = number.get(a), number.get(b)
        if ca is not None and cb is not None and final[ca] == final[cb]:
            unsafe[final[ca]] = True
    for m, previous in log.aliases.items():  # the alias's cluster and both readings'
        unsafe[final[anchor_codes[m]]] = True
        for reading in (("user_id", previous), ("anonymous_id", previous)):
            c = number.get(reading)
            if c is not None:
                unsafe[final[c]] = True
    return unsafe


def _resolve_in_order(
    graph: Graph, rules: Rules, log: LogIdentities, indexes: list[int], changes: Changes
) -> dict[int, str]:
    """The Resolver over the messages at ``indexes`` (clusters of their own), into the
    same graph and changes; their final profile ids by offset."""
    resolver = Resolver(graph, rules, changes)
    found = {}
    for m in indexes:
        ids = log.identifiers(m)
        previous = log.aliases.get(m)
        if previous is not None:
            ids = with_previous_id(ids, resolver.classify_previous_id(previous), rules)
        profile_id = resolver.resolve(ids, log.offsets[m], log.message_ids[m], log.timestamps[m])
        if profile_id is not None:
            found[log.offsets[m]] = profile_id
    return {offset: graph.resolve_id(pid) for offset, pid in found.items()}
