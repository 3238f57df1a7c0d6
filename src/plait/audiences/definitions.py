"""A workspace's computed traits and audiences, checked and compiled from its documents
(the workspace file's ``computed_traits:`` and ``audiences:``, or the API).

    computed_traits:
      - {key: orders_90d, kind: count, event: Order Completed, window: 90 days}
      - {key: lifetime_revenue, kind: sum, event: Order Completed, property: revenue}
      - {key: favourite_category, kind: most_frequent, type: page, property: category}
      - {key: big_spenders, kind: sql, schedule: 1 hour,
         sql: "SELECT profile_id, sum(...) AS value FROM tracks GROUP BY 1"}
    audiences:
      - key: frequent_buyers
        name: Frequent buyers
        definition: performed "Order Completed" at least 2 times in last 30 days
        emit: identify        # identify (default) | track | both | none

A definition is the text form or the JSON form (plait.audiences.language). Keys are
snake_case; an audience may name other audiences and computed traits, never in a cycle.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson

from plait.audiences.language import (
    AccountTrait,
    AudienceSyntaxError,
    Field,
    Performed,
    Selector,
    Trait,
    Window,
    from_json,
    parse,
    parse_filter,
    parse_window,
    references,
    to_json,
    walk,
)
from plait.govern.expressions import ExpressionError, parse_path
from plait.lake.query import LakeQueryError, check_select
from plait.store.workspaces import Invalid

SECTIONS = ("computed_traits", "audiences")
EVENT_KINDS = ("count", "sum", "avg", "min", "max", "first", "last", "most_frequent",
               "unique_list", "days_since_last")  # fmt: skip
NEEDS_PROPERTY = ("sum", "avg", "min", "max", "first", "last", "most_frequent", "unique_list")
KINDS = (*EVENT_KINDS, "sql")
AUDIENCE_EMITS = ("identify", "track", "both", "none")
TRAIT_EMITS = ("identify", "track", "none")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
MAX_DEFINITIONS = 500


@dataclass(frozen=True)
class ComputedTrait:
    key: str
    kind: str
    emit: str = "identify"
    # event kinds: which events, the property read, the window
    behaviour: Performed | None = None  # selector, window and where (its count is unused)
    path: tuple[str | int, ...] | None = None  # the property read
    # sql kind
    sql: str | None = None
    schedule_ms: int | None = None

    @property
    def window(self) -> Window | None:
        return self.behaviour.window if self.behaviour else None


@dataclass(frozen=True)
class Audience:
    key: str
    name: str
    tree: Any
    emit: str = "identify"
    text: str | None = None  # as written, when written as text

    @property
    def definition_json(self) -> dict[str, Any]:
        return to_json(self.tree)


@dataclass
class Definitions:
    traits: dict[str, ComputedTrait] = field(default_factory=dict)
    audiences: dict[str, Audience] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)  # key -> hash of its meaning
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # derived structures

    @property
    def empty(self) -> bool:
        return not self.traits and not self.audiences

    @property
    def event_traits(self) -> dict[str, ComputedTrait]:
        return {k: t for k, t in self.traits.items() if t.kind != "sql"}

    def closure(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """The audiences and computed traits ``keys`` need, themselves included."""
        audiences: list[str] = []
        traits: list[str] = []

        def visit(key: str) -> None:
            if key in audiences:
                return
            audiences.append(key)
            names, computed = references(self.audiences[key].tree)
            for name in sorted(names):
                visit(name)
            for trait in sorted(computed):
                if trait not in traits:
                    traits.append(trait)

        for key in keys:
            visit(key)
        return audiences, traits


def _fail(at: str, message: str) -> Invalid:
    return Invalid(at, message)


def _key(doc: dict, at: str, seen: set[str]) -> str:
    key = doc.get("key")
    if not isinstance(key, str) or not _KEY.match(key):
        raise _fail(f"{at}.key", "must be snake_case: a lower-case letter, then a-z, 0-9, _")
    if key in seen:
        raise _fail(f"{at}.key", f"{key!r} is defined twice")
    seen.add(key)
    return key


def _choice(doc: dict, name: str, allowed: tuple[str, ...], default: str, at: str) -> str:
    value = doc.get(name, default)
    if value not in allowed:
        raise _fail(f"{at}.{name}", f"must be one of {', '.join(allowed)}")
    return value


def _window(value: Any, at: str) -> Window | None:
    if value is None:
        return None
    try:
        return parse_window(str(value))
    except AudienceSyntaxError as exc:
        raise _fail(at, f"a window such as '30 days' ({exc.message})") from None


def _selector(doc: dict, at: str) -> Selector:
    kind, event, name = doc.get("type"), doc.get("event"), doc.get("name")
    if event is not None:
        if not isinstance(event, str) or not event or kind not in (None, "track"):
            raise _fail(f"{at}.event", "a track event's name (with no other type)")
        return Selector("track", event)
    if kind is None:
        raise _fail(f"{at}.event", "name the event, or give a type (track, page, screen, "
                                   "identify, group or any)")  # fmt: skip
    if kind not in ("track", "page", "screen", "identify", "group", "any"):
        raise _fail(f"{at}.type", "must be track, page, screen, identify, group or any")
    if name is not None and (not isinstance(name, str) or kind == "any"):
        raise _fail(f"{at}.name", "a page or screen name (not with type any)")
    return Selector(None if kind == "any" else kind, name)


def _check_path(path: tuple, at: str) -> None:
    """SQL reads paths with DuckDB's JSON paths, whose quoted names cannot hold a quote."""
    for seg in path:
        if isinstance(seg, str) and '"' in seg:
            raise _fail(at, f"a name in a path cannot hold a double quote: {seg!r}")


def _check_where(where: Any, at: str) -> None:
    """An event condition must not depend on the time of evaluation: what an event
    matched is kept between evaluations. Time limits are the behaviour's window."""
    for node in walk(where):
        if isinstance(node, Field):
            _check_path(node.path, at)
        if isinstance(node, Field) and node.test.op == "within":
            raise _fail(at, "'in last' compares a profile trait's time; to count recent "
                            "events give the behaviour a window (in last N days)")  # fmt: skip


def compile_trait(doc: Any, at: str, seen: set[str]) -> ComputedTrait:
    if not isinstance(doc, dict):
        raise _fail(at, "must be a mapping")
    key = _key(doc, at, seen)
    kind = _choice(doc, "kind", KINDS, "", at)
    emit = _choice(doc, "emit", TRAIT_EMITS, "identify", at)
    if kind == "sql":
        sql = doc.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise _fail(f"{at}.sql", "a SELECT returning profile_id and value columns")
        _check_sql(sql, f"{at}.sql")
        schedule = _window(doc.get("schedule", "1 hour"), f"{at}.schedule")
        return ComputedTrait(key, kind, emit, sql=sql, schedule_ms=schedule.ms)
    where = None
    if doc.get("where") is not None:
        try:
            where = parse_filter(str(doc["where"]))
        except AudienceSyntaxError as exc:
            raise _fail(f"{at}.where", exc.message) from None
        _check_where(where, f"{at}.where")
    behaviour = Performed(_selector(doc, at), window=_window(doc.get("window"), f"{at}.window"),
                          where=where)  # fmt: skip
    prop = None
    if kind in NEEDS_PROPERTY:
        text = doc.get("property")
        if not isinstance(text, str) or not text:
            raise _fail(f"{at}.property", f"{kind} reads a property, e.g. revenue")
        try:
            prop = parse_path(text)
        except ExpressionError as exc:
            raise _fail(f"{at}.property", exc.message) from None
        if prop[0] not in ("properties", "context", "traits"):
            prop = ("properties", *prop)
        _check_path(prop, f"{at}.property")
    return ComputedTrait(key, kind, emit, behaviour=behaviour, path=prop)


def _check_sql(sql: str, at: str) -> None:
    """One SELECT, as the lake runs it (its columns are checked when it runs)."""
    con = duckdb.connect(":memory:")
    try:
        check_select(con, sql)
    except LakeQueryError as exc:
        raise _fail(at, str(exc)) from None
    finally:
        con.close()


def compile_audience(doc: Any, at: str, seen: set[str]) -> Audience:
    if not isinstance(doc, dict):
        raise _fail(at, "must be a mapping")
    key = _key(doc, at, seen)
    definition = doc.get("definition")
    try:
        if isinstance(definition, str):
            tree = parse(definition)
        elif isinstance(definition, dict):
            tree = from_json(definition)
        else:
            raise AudienceSyntaxError("the audience language's text, or its JSON form")
    except AudienceSyntaxError as exc:
        raise _fail(f"{at}.definition", exc.message) from None
    for node in walk(tree):
        if isinstance(node, Performed) and node.where is not None:
            _check_where(node.where, f"{at}.definition")
        if isinstance(node, Trait | AccountTrait):
            _check_path(node.path, f"{at}.definition")
    name = doc.get("name", key)
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"{at}.name", "must be a non-empty string")
    emit = _choice(doc, "emit", AUDIENCE_EMITS, "identify", at)
    text = definition if isinstance(definition, str) else None
    return Audience(key, name, tree, emit, text)


def compile_definitions(traits_doc: Any, audiences_doc: Any) -> Definitions:
    """Raises Invalid naming the field (``audiences[2].definition``...)."""
    defs = Definitions()
    for name, doc in (("computed_traits", traits_doc), ("audiences", audiences_doc)):
        if doc is not None and not isinstance(doc, list):
            raise _fail(name, "must be a list")
        if doc is not None and len(doc) > MAX_DEFINITIONS:
            raise _fail(name, f"at most {MAX_DEFINITIONS}")
    seen: set[str] = set()
    for i, doc in enumerate(traits_doc or []):
        trait = compile_trait(doc, f"computed_traits[{i}]", seen)
        defs.traits[trait.key] = trait
    seen = set()
    for i, doc in enumerate(audiences_doc or []):
        audience = compile_audience(doc, f"audiences[{i}]", seen)
        defs.audiences[audience.key] = audience
    for i, audience in enumerate(defs.audiences.values()):
        check_references(defs, audience.tree, f"audiences[{i}].definition")
    _check_cycles(defs)
    for key, trait in defs.traits.items():
        defs.fingerprints[f"trait:{key}"] = _hash(repr(trait))
    for key in defs.audiences:
        audiences, traits = defs.closure([key])
        meaning = [repr(defs.audiences[a].tree) for a in audiences]
        meaning += [repr(defs.traits[t]) for t in traits]
        defs.fingerprints[f"audience:{key}"] = _hash("\n".join(meaning))
    return defs


def check_references(defs: Definitions, tree: Any, at: str) -> None:
    """Every audience and computed trait ``tree`` names is defined."""
    names, computed = references(tree)
    for name in sorted(names - set(defs.audiences)):
        raise _fail(at, f"no audience {name!r}")
    for trait in sorted(computed - set(defs.traits)):
        raise _fail(at, f"no computed trait {trait!r}")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_cycles(defs: Definitions) -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    order = list(defs.audiences)

    def visit(key: str, trail: list[str]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            cycle = " -> ".join([*trail[trail.index(key) :], key])
            raise _fail(f"audiences[{order.index(key)}].definition",
                        f"audiences name each other in a cycle: {cycle}")  # fmt: skip
        state[key] = 1
        for name in sorted(references(defs.audiences[key].tree)[0]):
            visit(name, [*trail, key])
        state[key] = 2

    for key in order:
        visit(key, [])


def from_documents(docs: dict[str, Any]) -> Definitions:
    """From the stored documents (JSON text or parsed)."""

    def doc(key: str) -> Any:
        value = docs.get(key)
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    return compile_definitions(doc("computed_traits"), doc("audiences"))
