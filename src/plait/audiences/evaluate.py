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
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    walk,
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
    message: dict[str, Any] | None = None
    payload: str | None = None  # the message's JSON, parsed only when a value is read

    def fields(self) -> dict[str, Any]:
        if self.message is None:
            self.message = orjson.loads(self.payload) if self.payload else {}
        return self.message


@dataclass
class ProfileState:
    profile_id: str
    traits: dict[str, Any] = field(default_factory=dict)
    accounts: list[dict[str, Any]] = field(default_factory=list)  # each account's traits
    events: list[Event] = field(default_factory=list)
    # the matches of each list the definitions read (plait.audiences.engine keeps them
    # between evaluations); None: made from ``events``
    matched: dict | None = None
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # per evaluation


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


# The times ``in last`` reads: ISO-8601's extended form, a date or a date and time (hours
# 00-23) to the microsecond, in UTC or with an offset (the same pattern is checked in SQL,
# so both read the same strings as times).
TIME_PATTERN = (
    r"\d{4}-\d{2}-\d{2}([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?)?"
)
_TIME = re.compile(TIME_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time_ms(v: Any) -> int | None:
    """A time as ms (microseconds floored), or None when ``v`` is not one."""
    if type(v) is not str or not _TIME.fullmatch(v):
        return None
    try:
        return (parse_timestamp(v) - _EPOCH) // timedelta(milliseconds=1)
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
            return check(test, lookup(event.fields().get(path[0]), path[1:]), now)
        case And(items):
            return all(passes(i, event, now) for i in items)
        case Or(items):
            return any(passes(i, event, now) for i in items)
        case Not(item):
            return not passes(item, event, now)
    raise TypeError(f"not an event filter: {node!r}")


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


Match = tuple  # (timestamp, log offset, value): an event a behaviour or trait counts
MatchKey = tuple  # (selector, where, property path or None)


def match_key(behaviour: Performed, path: tuple | None = None) -> MatchKey:
    return (behaviour.selector, behaviour.where, path)


def match_keys(defs: Definitions) -> dict[MatchKey, int | None]:
    """Every list of matches the definitions read, with how far back it must reach (the
    longest window of its readers, ms; None: all of it)."""
    if "match_keys" not in defs.cache:
        keys: dict[MatchKey, int | None] = {}
        users = [(match_key(t.behaviour, t.path), t.behaviour.window, t.kind)
                 for t in defs.event_traits.values()]  # fmt: skip
        for audience in defs.audiences.values():
            users += [(match_key(n), n.window, "")
                      for n in walk(audience.tree) if isinstance(n, Performed)]  # fmt: skip
        for key, window, kind in users:
            # days_since_last reads the latest event whatever its age
            reach = None if window is None or kind == "days_since_last" else window.ms
            if key not in keys:
                keys[key] = reach
            elif keys[key] is not None:
                keys[key] = None if reach is None else max(keys[key], reach)
        defs.cache["match_keys"] = keys
    return defs.cache["match_keys"]


def matches(key: MatchKey, events: list[Event], now: int) -> list[Match]:
    """The events of ``key``'s selector passing its filter, with its property's value
    (events where it is not set are left out when a property is read)."""
    selector, where, path = key
    out = []
    for e in events:
        if selects(selector, e) and (where is None or passes(where, e, now)):
            if path is None:
                out.append((e.timestamp, e.offset, None))
            elif (v := lookup(e.fields().get(path[0]), path[1:])) is not None:
                out.append((e.timestamp, e.offset, v))
    return out


def value_of(trait: ComputedTrait, found: list[Match], now: int) -> Any:
    """The trait's value from the matches it counts at ``now``."""
    if not found:
        return None
    kind = trait.kind
    if kind == "count":
        return len(found)
    if kind == "days_since_last":
        return (now - max(m[0] for m in found)) // DAY_MS
    if kind in ("sum", "avg", "min", "max"):
        nums = [float(m[2]) for m in found if _is_num(m[2])]
        if not nums:
            return None
        try:
            total = math.fsum(nums) if kind in ("sum", "avg") else 0.0
        except OverflowError:  # past the largest float: no value (SQL's is infinite)
            return None
        if kind == "sum":
            result = total
        elif kind == "avg":
            result = total / len(nums)
        else:
            result = min(nums) if kind == "min" else max(nums)
        return normalize_number(result)
    if kind == "first":
        return min(found, key=lambda m: (m[0], m[1]))[2]
    if kind == "last":
        return max(found, key=lambda m: (m[0], m[1]))[2]
    texts = [orjson.dumps(m[2]) for m in found]
    if kind == "most_frequent":
        counts: dict[bytes, int] = {}
        for text in texts:
            counts[text] = counts.get(text, 0) + 1
        best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        return orjson.loads(best)
    if kind == "unique_list":
        return [orjson.loads(t) for t in sorted(set(texts))]
    raise ValueError(f"unknown computed trait kind {kind}")


class Compiled:
    """A workspace's definitions prepared for evaluation, once per set of definitions:
    match lists numbered, audience trees turned into closures, what time tests read."""

    def __init__(self, defs: Definitions):
        self.defs = defs
        self.keys = list(match_keys(defs))
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.windows: list[set[int]] = [set() for _ in self.keys]
        self.traits = []  # (key, trait, list index, window ms or None)
        for key, t in defs.event_traits.items():
            i = self.index[match_key(t.behaviour, t.path)]
            w = t.behaviour.window.ms if t.behaviour.window is not None else None
            if w is not None:
                self.windows[i].add(w)
            self.traits.append((key, t, i, w))
        self.time_tests = []
        self.audiences = {}
        self.trait_keys: set[str] = set()  # the profile traits and account traits read
        self.account_keys: set[str] = set()
        for audience in defs.audiences.values():
            for n in walk(audience.tree):
                if isinstance(n, Trait):
                    self.trait_keys.add(n.path[0])
                elif isinstance(n, AccountTrait):
                    self.account_keys.add(n.path[0])
                if isinstance(n, Performed) and n.window is not None:
                    self.windows[self.index[match_key(n)]].add(n.window.ms)
                if isinstance(n, Trait | AccountTrait) and n.test.op == "within":
                    self.time_tests.append((n.path, n.test.value, isinstance(n, AccountTrait)))
        for key, audience in defs.audiences.items():
            self.audiences[key] = self._closure(audience.tree)

    @classmethod
    def of(cls, defs: Definitions) -> Compiled:
        if "compiled" not in defs.cache:
            defs.cache["compiled"] = cls(defs)
        return defs.cache["compiled"]

    def _closure(self, node: Any):
        """``fn(ev) -> bool`` where ``ev`` is an evaluation of one profile (_Run)."""
        match node:
            case And(items):
                fns = [self._closure(i) for i in items]
                return lambda ev: all(f(ev) for f in fns)
            case Or(items):
                fns = [self._closure(i) for i in items]
                return lambda ev: any(f(ev) for f in fns)
            case Not(item):
                fn = self._closure(item)
                return lambda ev: not fn(ev)
            case Trait(path, test):
                return lambda ev: check(test, lookup(ev.state.traits, path), ev.now)
            case AccountTrait(path, test):
                return lambda ev: any(check(test, lookup(t, path), ev.now)
                                      for t in ev.state.accounts)  # fmt: skip
            case Computed(key, test):
                return lambda ev: check(test, ev.computed.get(key), ev.now)
            case InAudience(key):
                return lambda ev: ev.audience(key)
            case Performed(_, count_op, count, window):
                i, w = self.index[match_key(node)], window.ms if window is not None else None
                if count_op == "at least":
                    return lambda ev: len(ev.found(i, w)) >= count
                if count_op == "at most":
                    return lambda ev: len(ev.found(i, w)) <= count
                return lambda ev: len(ev.found(i, w)) == count
        raise TypeError(f"not an audience node: {node!r}")


class _Run:
    """One profile's evaluation at ``now``: what it found, memoized."""

    __slots__ = ("state", "now", "lists", "computed", "_found", "_audiences", "_compiled")

    def __init__(self, compiled: Compiled, state: ProfileState, lists: list, now: int):
        self._compiled, self.state, self.lists, self.now = compiled, state, lists, now
        self.computed: dict[str, Any] = {}
        self._found: dict[tuple[int, int | None], list[Match]] = {}
        self._audiences: dict[str, bool] = {}

    def found(self, i: int, window: int | None) -> list[Match]:
        key = (i, window)
        if key not in self._found:
            now, low = self.now, (self.now - window if window is not None else None)
            self._found[key] = [m for m in self.lists[i]
                                if m[0] <= now and (low is None or m[0] > low)]  # fmt: skip
        return self._found[key]

    def audience(self, key: str) -> bool:
        if key not in self._audiences:
            self._audiences[key] = self._compiled.audiences[key](self)
        return self._audiences[key]


class Evaluator:
    """Evaluates a workspace's definitions on profiles at one instant ``now`` (ms). A
    profile's matches come from its ``matched`` lists (kept between evaluations by the
    engine) or, when it has none, from its events."""

    def __init__(self, defs: Definitions, now: int):
        self.defs, self.now = defs, now
        self.compiled = Compiled.of(defs)

    def matched(self, state: ProfileState) -> dict[MatchKey, list[Match]]:
        """The profile's match lists, made from its events if it has none yet."""
        if state.matched is None:
            state.matched = {key: matches(key, state.events, self.now)
                             for key in self.compiled.keys}  # fmt: skip
        return state.matched

    def _run(self, state: ProfileState) -> _Run:
        run = state.cache.get(("run", self.now))
        if run is None:
            matched = self.matched(state)
            lists = [matched[key] for key in self.compiled.keys]
            run = state.cache[("run", self.now)] = _Run(self.compiled, state, lists, self.now)
        return run

    def computed(self, state: ProfileState) -> dict[str, Any]:
        run = self._run(state)
        return {key: value_of(t, run.found(i, w), self.now)
                for key, t, i, w in self.compiled.traits}  # fmt: skip

    def audiences(self, state: ProfileState, computed: dict[str, Any]) -> dict[str, bool]:
        run = self._run(state)
        run.computed, run._audiences = computed, {}
        return {key: run.audience(key) for key in self.compiled.audiences}

    def next_change(self, state: ProfileState) -> int | None:
        """The earliest time after ``now`` at which time alone may change a value: a
        counted event leaving a window (or, from the future, arriving), a day passing for
        ``days_since_last``, a trait's time entering or leaving ``in last``. Re-evaluating
        then may find nothing changed; it never misses a change."""
        now, due, run, c = self.now, [], self._run(state), self.compiled
        for i, found in enumerate(run.lists):
            if not found:
                continue
            future = [m[0] for m in found if m[0] > now]
            if future:
                due.append(min(future))
            for w in c.windows[i]:  # the earliest in the window leaves it first
                inside = [m[0] for m in found if now - w < m[0] <= now]
                if inside:
                    due.append(min(inside) + w)
        for _, t, i, w in c.traits:
            if t.kind == "days_since_last" and (found := run.found(i, w)):
                last = max(m[0] for m in found)
                due.append(last + ((now - last) // DAY_MS + 1) * DAY_MS)
        for path, window, accounts in c.time_tests:
            for traits in state.accounts if accounts else [state.traits]:
                t = _time_ms(lookup(traits, path))
                if t is not None:
                    due.extend(x for x in (t, t + window.ms) if x > now)
        due = [d for d in due if d > now]
        return min(due) if due else None
