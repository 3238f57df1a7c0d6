"""Identity resolution: which profile a message belongs to, merging profiles when its
identifiers join them, within the workspace's limits.

For each message, with its identifiers highest priority first (identifiers.py):

1. Identifiers an operator removed (unmerge) are left out.
2. The profiles owning any of the identifiers are looked up.
3. If those profiles together with the message's new identifiers would hold more values
   of a type than its limit allows (counting, for a windowed limit, the values seen in
   that window before the message's timestamp), the message's lowest-priority identifier
   is dropped and step 2 runs again: merge protection, as Segment does it. A message
   always keeps its highest-priority identifier.
4. No profile: a new one is created. One: the message joins it. Several: they merge into
   the oldest (the one created by the earliest log offset), and the others' ids keep
   resolving to it. The merge is recorded with its evidence.
5. The message's remaining identifiers become the profile's, linked to each other (a star
   from the highest-priority one: the graph's edges, each kept with the first message that
   made it).

An operator's unmerge is a rule too: a removed identifier is never used again, and two
identifiers whose link was removed are never joined again (step 3 treats that like a
limit).

An alias's previousId is a user_id if the graph knows that user id, else an anonymous_id.
The resolver works on a Graph that holds the part of the identity graph it needs; the
pipeline loads it per batch from the store (graph_store.py) or, in a rebuild, keeps all of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from plait.identity.identifiers import Identifier
from plait.identity.rules import Rules

# An identifier's last seen is the hour (UTC, rounded down) of its latest message: windows
# are a day or longer, an exact time would be written for every identifier of every
# batch, and the latest hour does not depend on the order messages are resolved in (so a
# rebuild can compute it in bulk).
LAST_SEEN_GRANULARITY_MS = 3_600_000


def seen_hour(timestamp_ms: int) -> int:
    return timestamp_ms - timestamp_ms % LAST_SEEN_GRANULARITY_MS


@dataclass(eq=False)
class Profile:
    id: str
    first_offset: int  # the log offset that created it: the oldest survives a merge
    created_at: int  # the creating message's timestamp, ms
    identifiers: dict[Identifier, int] = field(default_factory=dict)  # -> seen_hour (ms)


@dataclass
class Merge:
    survivor: str
    merged: str
    offset: int
    message_id: str
    timestamp_ms: int
    identifiers: list[Identifier]


@dataclass
class Changes:
    """What resolving a batch did, for the store to write."""

    new_profiles: list[Profile] = field(default_factory=list)
    # (identifier, profile id, timestamp ms, offset, message id)
    new_identifiers: list[tuple[Identifier, str, int, int, str]] = field(default_factory=list)
    last_seen: dict[Identifier, int] = field(default_factory=dict)
    # (a, b, profile id, offset, message id, timestamp ms)
    new_edges: list[tuple[Identifier, Identifier, str, int, str, int]] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)


class Graph:
    """The identity graph of one workspace, or the part of it a batch touches."""

    def __init__(self, workspace_id: str):
        self.workspace_id = workspace_id
        self.owner: dict[Identifier, Profile] = {}
        self.profiles: dict[str, Profile] = {}
        self.edges: set[tuple[Identifier, Identifier]] = set()
        self.merged_into: dict[str, str] = {}  # merged-away id -> survivor
        self.removed_identifiers: set[Identifier] = set()
        self.removed_links: set[tuple[Identifier, Identifier]] = set()

    def add_profile(self, profile: Profile) -> None:
        self.profiles[profile.id] = profile
        for ident in profile.identifiers:
            self.owner[ident] = profile

    def resolve_id(self, profile_id: str) -> str:
        while profile_id in self.merged_into:
            profile_id = self.merged_into[profile_id]
        return profile_id


def edge(a: Identifier, b: Identifier) -> tuple[Identifier, Identifier]:
    return (a, b) if a <= b else (b, a)


def with_previous_id(ids: list[Identifier], previous: Identifier, rules: Rules) -> list:
    """An alias's identifiers with its previousId read as ``previous``, in priority order."""
    return sorted(dict.fromkeys([*ids, previous]), key=lambda ident: rules.rank(ident[0]))


def derived_id(prefix: str, workspace_id: str, key: object) -> str:
    """Deterministic: a rebuild over the same log gives the same ids."""
    digest = hashlib.blake2b(f"{workspace_id}:{key}".encode(), digest_size=12).hexdigest()
    return f"{prefix}_{digest}"


def profile_id_for(workspace_id: str, offset: int) -> str:
    return derived_id("prf", workspace_id, offset)


class Resolver:
    def __init__(self, graph: Graph, rules: Rules, changes: Changes | None = None):
        self.graph = graph
        self.rules = rules
        self.changes = changes if changes is not None else Changes()

    def classify_previous_id(self, value: str) -> Identifier:
        as_user = ("user_id", value)
        return as_user if as_user in self.graph.owner else ("anonymous_id", value)

    def resolve(
        self, identifiers: list[Identifier], offset: int, message_id: str, timestamp_ms: int
    ) -> str | None:
        """The profile of a message (None if it carries no usable identifier)."""
        graph = self.graph
        removed = graph.removed_identifiers
        ids = [i for i in identifiers if i not in removed] if removed else identifiers
        if not ids:
            return None
        owner = graph.owner
        profile = owner.get(ids[0])
        if profile is not None:
            for ident in ids[1:]:
                if owner.get(ident) is not profile:
                    break
            else:
                # The common case: a known person's known identifiers. Nothing can break
                # a limit; this runs once per message.
                self._touch(profile, ids, offset, message_id, timestamp_ms)
                return profile.id
        ids = list(ids)
        while True:
            owners = sorted(
                {owner[i] for i in ids if i in owner}, key=lambda p: (p.first_offset, p.id)
            )
            if len(ids) == 1 or not self._exceeds_a_limit(ids, owners, timestamp_ms):
                break
            ids.pop()  # the lowest priority: ids are sorted highest first
        if not owners:
            profile = Profile(profile_id_for(graph.workspace_id, offset), offset, timestamp_ms)
            graph.add_profile(profile)
            self.changes.new_profiles.append(profile)
        else:
            profile = owners[0]
            for other in owners[1:]:
                self._merge(profile, other, ids, offset, message_id, timestamp_ms)
        self._attach(profile, ids, offset, message_id, timestamp_ms)
        return profile.id

    def _exceeds_a_limit(self, ids: list[Identifier], profiles: list[Profile], ts: int) -> bool:
        """Would joining ``ids`` and the ``profiles`` break a limit or an unmerged link?"""
        graph, types = self.graph, self.rules.types
        # Only a type that gains values can go over its limit: joining one profile, the
        # types of the message's new identifiers; merging, any type.
        gaining = None if len(profiles) > 1 else {i[0] for i in ids if i not in graph.owner}
        values: dict[str, set[str]] = {}
        for profile in profiles:
            for ident, last_seen in profile.identifiers.items():
                type_name = ident[0]
                if gaining is not None and type_name not in gaining:
                    continue
                kind = types.get(type_name)
                window = kind.window_seconds if kind is not None else None
                if window is None or last_seen >= ts - window * 1000:
                    values.setdefault(type_name, set()).add(ident[1])
        for type_name, value in ids:
            values.setdefault(type_name, set()).add(value)
        if any(len(found) > types[name].limit for name, found in values.items() if name in types):
            return True
        if not graph.removed_links:
            return False
        # An operator split these two: new messages must not join them again.
        union = set(ids).union(*(p.identifiers for p in profiles))
        return any(a in union and b in union for a, b in graph.removed_links)

    def _merge(self, survivor: Profile, merged: Profile, ids, offset, message_id, ts) -> None:
        graph = self.graph
        for ident, last_seen in merged.identifiers.items():
            survivor.identifiers[ident] = max(last_seen, survivor.identifiers.get(ident, 0))
            graph.owner[ident] = survivor
        del graph.profiles[merged.id]
        graph.merged_into[merged.id] = survivor.id
        self.changes.merges.append(Merge(survivor.id, merged.id, offset, message_id, ts, list(ids)))

    def _attach(self, profile: Profile, ids, offset: int, message_id: str, ts: int) -> None:
        graph, changes, seen = self.graph, self.changes, profile.identifiers
        for ident in ids:
            if ident not in seen:
                seen[ident] = seen_hour(ts)
                graph.owner[ident] = profile
                changes.new_identifiers.append((ident, profile.id, ts, offset, message_id))
        self._touch(profile, ids, offset, message_id, ts)

    def _touch(self, profile: Profile, ids, offset: int, message_id: str, ts: int) -> None:
        """``ids``, all the profile's, seen in one message: their last seen, and the
        message's edges (a star from its highest-priority identifier)."""
        seen, hour = profile.identifiers, seen_hour(ts)
        for ident in ids:
            if hour > seen[ident]:
                seen[ident] = hour
                self.changes.last_seen[ident] = hour
        anchor, edges = ids[0], self.graph.edges
        for other in ids[1:]:
            key = (anchor, other) if anchor <= other else (other, anchor)  # as edge() orders
            if key not in edges:
                edges.add(key)
                self.changes.new_edges.append((*key, profile.id, offset, message_id, ts))
