"""Audiences and computed traits evaluated in memory, on one profile at a time: what the
pipeline does as events arrive. ``plait.audiences.sql`` compiles the same meaning to
DuckDB SQL over the lake; the two must agree (tests/test_audiences_differential.py).

The semantics both follow:

- An event counts at ``now`` when its corrected timestamp is at or before ``now`` and, with
  a window of W, after ``now - W`` (an event exactly W old has left the window).
- ``=`` and ``in`` compare like with like: a string literal equals only a string, a number
  only a number (``1 = 1.0``), a boolean only a boolean. ``!=`` is ``not =``, so a
  missing value is "not equal". ``<``, ``>``... compare numbers with numbers and strings
  with strings; anything else is false. ``contains`` is a substring of a string, or an
  element of an array whose JSON is the literal's. ``in last N days`` reads an ISO-8601
  string as a time. A missing value fails every test but ``!=`` and ``not ...``.
- A computed trait is absent (None) for a profile with no matching events; ``count`` is a
  number of events, ``sum``/``avg``/``min``/``max`` read the property's numbers (others are
  skipped), ``first``/``last`` the earliest/latest event's value (by time, then log offset)
  where the property is set, ``most_frequent`` the value most events carry (a tie goes to
  the smallest JSON text), ``unique_list`` the distinct values sorted by their JSON text,
  ``days_since_last`` the whole days since the latest matching event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from plait.audiences.definitions import ComputedTrait, Definitions
from plait.audiences.language import (
    AccountTrait,
    And,
    Computed,
    Field,
    InAudience,
    Not,
    Or,
    Performed,
    Selector,
    Test,
    Trait,
)
from plait.spec.timestamps import parse_timestamp

DAY_MS = 86_400_000
_MISSING = object()


@dataclass(slots=True)
class Event:
    timestamp: int  # corrected event time, ms
    offset: int
    type: str
    name: str | None  # track's event, page's or screen's name
    message: dict[str, Any]


@dataclass
class ProfileState:
    profile_id: str
    traits: dict[str, Any] = field(default_factory=dict)
    accounts: list[dict[str, Any]] = field(default_factory=list)  # each account's traits
    events: list[Event] = field(default_factory=list)


def lookup(value: Any, path: tuple) -> Any:
    for seg in path:
        if isinstance(seg, str):
            if not isinstance(value, dict):
                return None
            value = value.get(seg)
        elif isinstance(value, list) and -len(value) <= seg < len(value) and seg >= 0:
            value = value[seg]
        else:
            return None
        if value is None:
            return None
    return value


def _is_num(v: Any) -> bool:
    return type(v) in (int, float)


def _eq(v: Any, lit: Any) -> bool:
    if isinstance(lit, bool):
        return v is lit
    if isinstance(lit, str):
        return type(v) is str and v == lit
    return _is_num(v) and float(v) == float(lit)


def _time_ms(v: Any) -> int | None:
    if type(v) is not str:
        return None
    try:
        return int(parse_timestamp(v).timestamp() * 1000)
    except (ValueError, OverflowError):
        return None


def check(test: Test, v: Any, now: int) -> bool:
    op, lit = test.op, test.value
    if op == "exists":
        return v is not None
    if op == "=":
        return _eq(v, lit)
    if op == "!=":
        return not _eq(v, lit)
    if op == "in":
        return any(_eq(v, x) for x in lit)
    if op in (">", ">=", "<", "<="):
        if isinstance(lit, str):
            if type(v) is not str:
                return False
            a, b = v, lit
        else:
            if not _is_num(v):
                return False
            a, b = float(v), float(lit)
        return a > b if op == ">" else a >= b if op == ">=" else a < b if op == "<" else a <= b
    if op == "contains":
        if type(v) is str:
            return isinstance(lit, str) and lit in v
        if type(v) is list:
            wanted = orjson.dumps(lit)
            return any(orjson.dumps(e) == wanted for e in v)
        return False
    if op == "starts_with":
        return type(v) is str and v.startswith(lit)
    if op == "ends_with":
        return type(v) is str and v.endswith(lit)
    if op == "within":
        t = _time_ms(v)
        return t is not None and now - lit.ms < t <= now
    raise ValueError(f"unknown test {op}")


def selects(selector: Selector, event: Event) -> bool:
    return (selector.type is None or event.type == selector.type) and (
        selector.name is None or event.name == selector.name
    )


def passes(node: Any, event: Event, now: int) -> bool:
    """An event filter (Field conditions under and/or/not)."""
    match node:
        case Field(path, test):
            return check(test, lookup(event.message.get(path[0]), path[1:]), now)
        case And(items):
            return all(passes(i, event, now) for i in items)
        case Or(items):
            return any(passes(i, event, now) for i in items)
        case Not(item):
            return not passes(item, event, now)
    raise TypeError(f"not an event filter: {node!r}")


def matching(behaviour: Performed, events: list[Event], now: int) -> list[Event]:
    """The events a behaviour (or a computed trait) counts at ``now``."""
    low = now - behaviour.window.ms if behaviour.window is not None else None
    where = behaviour.where
    return [
        e
        for e in events
        if e.timestamp <= now
        and (low is None or e.timestamp > low)
        and selects(behaviour.selector, e)
        and (where is None or passes(where, e, now))
    ]


def normalize_number(value: float | None) -> int | float | None:
    """Whole numbers as integers (SQL sums are doubles, Python's may be ints)."""
    if value is None or not math.isfinite(value):
        return None
    if float(value).is_integer() and abs(value) < 2**53:
        return int(value)
    return float(value)


def plain_value(trait: ComputedTrait, value: Any) -> Any:
    """A value read back from SQL as the in-memory path gives it: aggregates' doubles
    that are whole become integers; values read from events stay as they were sent."""
    if trait.kind in ("sum", "avg", "min", "max") and isinstance(value, float):
        return normalize_number(value)
    return value


def trait_value(trait: ComputedTrait, events: list[Event], now: int) -> Any:
    found = matching(trait.behaviour, events, now)
    if not found:
        return None
    kind = trait.kind
    if kind == "count":
        return len(found)
    if kind == "days_since_last":
        return (now - max(e.timestamp for e in found)) // DAY_MS
    root, rest = trait.path[0], trait.path[1:]
    values = [(e, v) for e in found if (v := lookup(e.message.get(root), rest)) is not None]
    if not values:
        return None
    if kind in ("sum", "avg", "min", "max"):
        nums = [float(v) for _, v in values if _is_num(v)]
        if not nums:
            return None
        if kind == "sum":
            result = math.fsum(nums)
        elif kind == "avg":
            result = math.fsum(nums) / len(nums)
        else:
            result = min(nums) if kind == "min" else max(nums)
        return normalize_number(result)
    if kind == "first":
        return min(values, key=lambda ev: (ev[0].timestamp, ev[0].offset))[1]
    if kind == "last":
        return max(values, key=lambda ev: (ev[0].timestamp, ev[0].offset))[1]
    texts = [orjson.dumps(v) for _, v in values]
    if kind == "most_frequent":
        counts: dict[bytes, int] = {}
        for text in texts:
            counts[text] = counts.get(text, 0) + 1
        best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        return orjson.loads(best)
    if kind == "unique_list":
        return [orjson.loads(t) for t in sorted(set(texts))]
    raise ValueError(f"unknown computed trait kind {kind}")


class Evaluator:
    """Evaluates a workspace's definitions on profiles at one instant ``now`` (ms)."""

    def __init__(self, defs: Definitions, now: int):
        self.defs, self.now = defs, now

    def computed(self, state: ProfileState) -> dict[str, Any]:
        return {
            key: trait_value(trait, state.events, self.now)
            for key, trait in self.defs.event_traits.items()
        }

    def audiences(self, state: ProfileState, computed: dict[str, Any]) -> dict[str, bool]:
        cache: dict[Any, bool] = {}
        return {
            key: self._holds(aud.tree, state, computed, cache)
            for key, aud in self.defs.audiences.items()
        }

    def _holds(self, node: Any, state: ProfileState, computed: dict, cache: dict) -> bool:
        now = self.now
        match node:
            case And(items):
                return all(self._holds(i, state, computed, cache) for i in items)
            case Or(items):
                return any(self._holds(i, state, computed, cache) for i in items)
            case Not(item):
                return not self._holds(item, state, computed, cache)
            case Trait(path, test):
                return check(test, lookup(state.traits, path), now)
            case AccountTrait(path, test):
                return any(check(test, lookup(traits, path), now) for traits in state.accounts)
            case Computed(key, test):
                return check(test, computed.get(key), now)
            case InAudience(key):
                if ("aud", key) not in cache:
                    tree = self.defs.audiences[key].tree
                    cache[("aud", key)] = self._holds(tree, state, computed, cache)
                return cache[("aud", key)]
            case Performed():
                if node not in cache:
                    n = len(matching(node, state.events, now))
                    if node.count_op == "at least":
                        cache[node] = n >= node.count
                    elif node.count_op == "at most":
                        cache[node] = n <= node.count
                    else:
                        cache[node] = n == node.count
                return cache[node]
        raise TypeError(f"not an audience node: {node!r}")

    def next_change(self, state: ProfileState) -> int | None:
        """The earliest time after ``now`` at which time alone may change a value: an
        event leaving (or, from the future, entering) a window, a day passing for
        ``days_since_last``, a trait's time entering or leaving ``in last``. Re-evaluating
        then may find nothing changed; it never misses a change."""
        now, due = self.now, []
        for behaviour in self._behaviours():
            events = [e for e in state.events if selects(behaviour.selector, e)]
            for e in events:
                if e.timestamp > now:
                    due.append(e.timestamp)
                elif behaviour.window is not None and e.timestamp + behaviour.window.ms > now:
                    due.append(e.timestamp + behaviour.window.ms)
        for trait in self.defs.event_traits.values():
            if trait.kind == "days_since_last":
                found = matching(trait.behaviour, state.events, now)
                if found:
                    last = max(e.timestamp for e in found)
                    due.append(last + ((now - last) // DAY_MS + 1) * DAY_MS)
        for path, window, accounts in self._time_tests():
            sources = state.accounts if accounts else [state.traits]
            for traits in sources:
                t = _time_ms(lookup(traits, path))
                if t is not None:
                    due.extend(x for x in (t, t + window.ms) if x > now)
        due = [d for d in due if d > now]
        return min(due) if due else None

    def _behaviours(self) -> list[Performed]:
        found = [t.behaviour for t in self.defs.event_traits.values()]
        for audience in self.defs.audiences.values():
            found.extend(n for n in walk(audience.tree) if isinstance(n, Performed))
        return found

    def _time_tests(self):
        for audience in self.defs.audiences.values():
            for n in walk(audience.tree):
                if isinstance(n, Trait | AccountTrait) and n.test.op == "within":
                    yield n.path, n.test.value, isinstance(n, AccountTrait)


def walk(node: Any):
    yield node
    match node:
        case And(items) | Or(items):
            for i in items:
                yield from walk(i)
        case Not(item):
            yield from walk(item)
