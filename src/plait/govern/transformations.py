"""Declarative transformations: rename, drop, derive and map what a source sends before anything
downstream sees it (or, for a destination, before it is delivered there).

In the workspace YAML::

    transformations:
      - name: tidy orders
        sources: [Website]          # names or ids; omit sources and destinations: every source
        where: "type == 'track'"    # optional: the rules run only when it holds
        rules:
          - rename_event: {from: Order Done, to: Order Completed}
          - rename_property: {from: properties.price_usd, to: properties.price}
          - drop_property: properties.debug                  # or a list of paths
          - derive_property: {name: properties.cents, expr: "round(properties.revenue * 100)"}
          - map_values: {property: properties.plan, map: {pro: Pro, free: Free}, default: Other}
          - drop_event: "event == 'Test Event' or properties.internal == true"

Transformations run in file order, their rules in order; a ``drop_event`` that holds stops
everything and drops the event. Expressions are ``plait.govern.expressions``. Rules only write
under ``properties``, ``traits``, ``context`` and ``integrations`` (never ``type``,
``messageId``, ``userId``...: identity and deduplication depend on those).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from plait.govern.expressions import (
    Expression,
    ExpressionError,
    Path,
    compile_expression,
    copy_json,
    format_path,
    parse_path,
    path_getter,
)
from plait.store.workspaces import Invalid

RULE_KINDS = (
    "rename_event", "rename_property", "drop_property", "derive_property", "map_values",
    "drop_event",
)  # fmt: skip
WRITABLE_ROOTS = frozenset({"properties", "traits", "context", "integrations"})
_KEYS = ("name", "sources", "destinations", "where", "enabled", "rules")
_ABSENT = object()

Rule = Callable[[dict], Any]  # applies itself to a message: _DROP, _CHANGED or None
_CHANGED, _DROP = 1, 2


@dataclass(frozen=True, slots=True, eq=False)
class Transformation:
    name: str
    sources: tuple[str, ...] | None  # source ids; None: every source (unless destinations)
    destinations: tuple[str, ...] | None  # destination names: runs at delivery, not at intake
    where: Expression | None
    enabled: bool
    rules: tuple[Rule, ...]
    doc: dict[str, Any]  # the normalized configuration (sources as ids; see to_dicts)


class TransformationSet:
    """Compiled transformations, indexed by source id and by destination name."""

    def __init__(self, transformations: list[Transformation], sources: dict[str, str]):
        self.transformations = tuple(transformations)
        self._names = {source_id: name for name, source_id in sources.items()}
        live = [t for t in self.transformations if t.enabled]
        intake = [t for t in live if t.destinations is None]
        self._every = tuple(t for t in intake if t.sources is None)
        ids = set(sources.values()) | {s for t in intake for s in t.sources or ()}
        self._by_source = {
            sid: tuple(t for t in intake if t.sources is None or sid in t.sources) for sid in ids
        }
        names = {d for t in live for d in t.destinations or ()}
        self._by_destination = {
            d: tuple(t for t in live if t.destinations and d in t.destinations) for d in names
        }

    def __iter__(self) -> Iterator[Transformation]:
        return iter(self.transformations)

    def __len__(self) -> int:
        return len(self.transformations)

    @property
    def empty(self) -> bool:
        """True when nothing would ever run (no transformation, or none enabled)."""
        return not self._every and not any(self._by_source.values()) and not self._by_destination

    def for_source(self, source_id: str) -> tuple[Transformation, ...]:
        return self._by_source.get(source_id, self._every)

    def for_destination(self, name: str) -> tuple[Transformation, ...]:
        return self._by_destination.get(name, ())

    def apply(self, msg: dict, source_id: str) -> dict | None:
        """Transform ``msg`` in place for its source: the message, or None when dropped."""
        return self.transform(msg, source_id)[0]

    def transform(self, msg: dict, source_id: str) -> tuple[dict | None, bool]:
        """``apply``, and whether a rule changed the message (the pipeline serializes a
        message again only then)."""
        todo = self._by_source.get(source_id, self._every)
        if not todo:
            return msg, False
        return _run(msg, todo, None)

    def apply_for_destination(self, msg: dict, name: str) -> dict | None:
        """``msg`` as destination ``name`` should receive it, or None when dropped for it.

        Unlike ``apply`` this never changes ``msg``, which other destinations share: when a
        transformation is configured for ``name`` it works on a copy and returns that.
        """
        todo = self._by_destination.get(name)
        if not todo:
            return msg
        return _run(copy_json(msg), todo, None)[0]

    def to_dicts(self) -> list[dict[str, Any]]:
        """The normalized configuration: ``compile_transformations`` of it gives the same set,
        and exporting it gives back what was applied (sources by name, paths canonical)."""
        out = []
        for t in self.transformations:
            doc = dict(t.doc)
            if t.sources is not None:
                doc["sources"] = [self._names.get(s, s) for s in t.sources]
            out.append(doc)
        return copy.deepcopy(out)


def _run(
    msg: dict, todo: tuple[Transformation, ...], applied: list[str] | None
) -> tuple[dict | None, bool]:
    changed = False
    for t in todo:
        if t.where is not None and not t.where.evaluate(msg):
            continue
        if applied is not None:
            applied.append(t.name)
        for rule in t.rules:
            outcome = rule(msg)
            if outcome is _DROP:
                return None, True
            changed = changed or outcome is _CHANGED
    return msg, changed


def compile_transformations(
    docs: list[dict[str, Any]] | None, sources: dict[str, str]
) -> TransformationSet:
    """Compile the ``transformations`` section; ``sources`` maps source name -> source id.

    Raises ``Invalid(field, message)`` naming the bad entry, e.g.
    ``transformations[0].rules[2].derive_property.expr``."""
    if docs is None:
        docs = []
    if not isinstance(docs, list):
        raise Invalid("transformations", "must be a list")
    seen: dict[str, int] = {}
    compiled = []
    for index, doc in enumerate(docs):
        t = _compile_one(doc, f"transformations[{index}]", sources)
        if t.name in seen:
            raise Invalid(
                f"transformations[{index}].name",
                f"{t.name!r} is already the name of transformations[{seen[t.name]}]",
            )
        seen[t.name] = index
        compiled.append(t)
    return TransformationSet(compiled, sources)


def dry_run(
    docs: list[dict[str, Any]] | None,
    message: dict[str, Any],
    sources: dict[str, str],
    source_id: str | None = None,
    destination: str | None = None,
) -> dict[str, Any]:
    """What the transformations would do to ``message``, which is left unchanged.

    With ``source_id`` (an id or a source name) the transformations of that source run; with
    ``destination`` those of that destination; with neither, every enabled source
    transformation runs whatever its ``sources`` (to try one out while writing it).
    Returns ``{"before", "after" (None when dropped), "dropped", "applied": [names]}``."""
    tset = compile_transformations(docs, sources)
    if not isinstance(message, dict):
        raise Invalid("message", "must be an object")
    if destination is not None:
        todo = tset.for_destination(destination)
    elif source_id is not None:
        todo = tset.for_source(sources.get(source_id, source_id))
    else:
        todo = tuple(t for t in tset if t.enabled and t.destinations is None)
    applied: list[str] = []
    after = _run(copy.deepcopy(message), todo, applied)[0]
    return {
        "before": copy.deepcopy(message),
        "after": after,
        "dropped": after is None,
        "applied": applied,
    }


def destination_mapping(docs: list[Any] | None, name: str) -> dict[str, list[dict]]:
    """Destination ``name``'s transformations in ``docs``: ``own``, those for it alone (its
    mapping, edited on its page), and ``shared``, those it shares with other destinations."""
    own, shared = [], []
    for doc in docs or []:
        targets = doc.get("destinations") if isinstance(doc, dict) else None
        if targets == [name] or targets == name:
            own.append(doc)
        elif isinstance(targets, list) and name in targets:
            shared.append(doc)
    return {"own": own, "shared": shared}


def with_destination_mapping(
    docs: list[Any] | None, name: str, mapping: Any, sources: dict[str, str]
) -> list[Any]:
    """``docs`` with destination ``name``'s own transformations replaced by ``mapping`` (a
    list of transformations without ``sources``/``destinations``: each is given
    ``destinations: [name]``), where the first of them stood, else at the end.

    The mapping is checked on its own first, so an error names ``mapping[i]...``."""
    if not isinstance(mapping, list):
        raise Invalid("mapping", "must be a list of transformations")
    placed = []
    for index, doc in enumerate(mapping):
        if not isinstance(doc, dict):
            raise Invalid(f"mapping[{index}]", "must be a mapping with a name and rules")
        for key in ("sources", "destinations"):
            if key in doc and doc[key] not in (None, [name], name):
                raise Invalid(f"mapping[{index}].{key}",
                              f"a destination's mapping runs for {name!r} alone")  # fmt: skip
        placed.append({**{k: v for k, v in doc.items() if k != "sources"}, "destinations": [name]})
    try:
        compile_transformations(placed, sources)
    except Invalid as exc:
        raise Invalid(exc.field.replace("transformations", "mapping", 1), exc.message) from None
    own = destination_mapping(docs, name)["own"]
    others = {
        d.get("name") for d in docs or [] if isinstance(d, dict) and not any(d is o for o in own)
    }
    for index, doc in enumerate(placed):
        if doc.get("name") in others:
            taken = f"{doc['name']!r} is already the name of another transformation"
            raise Invalid(f"mapping[{index}].name", taken)
    out, put = [], False
    for doc in docs or []:
        if any(doc is o for o in own):
            if not put:
                out.extend(placed)
                put = True
            continue
        out.append(doc)
    return out if put else out + placed


# -- compiling one transformation ---------------------------------------------------------------


def _compile_one(doc: Any, at: str, sources: dict[str, str]) -> Transformation:
    if not isinstance(doc, dict):
        raise Invalid(at, "must be a mapping with a name and rules")
    for key in doc:
        if key not in _KEYS:
            raise Invalid(f"{at}.{key}", f"unknown key (the keys are: {', '.join(_KEYS)})")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Invalid(f"{at}.name", "each transformation needs a name")
    norm: dict[str, Any] = {"name": name}

    source_ids = None
    if "sources" in doc:
        source_ids = _source_ids(doc["sources"], f"{at}.sources", sources)
        norm["sources"] = list(source_ids)
    destinations = None
    if "destinations" in doc:
        destinations = tuple(_names(doc["destinations"], f"{at}.destinations", "destination"))
        norm["destinations"] = list(destinations)
    if source_ids is not None and destinations is not None:
        raise Invalid(
            f"{at}.destinations",
            "give sources or destinations, not both (use where: to narrow a destination's events)",
        )
    where = None
    if "where" in doc:
        where = _expression(doc["where"], f"{at}.where")
        norm["where"] = where.text
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise Invalid(f"{at}.enabled", "must be true or false")
    if not enabled:
        norm["enabled"] = False

    docs = doc.get("rules")
    if not isinstance(docs, list) or not docs:
        raise Invalid(f"{at}.rules", "must be a non-empty list of rules")
    rules, norm_rules = [], []
    for index, rule_doc in enumerate(docs):
        rule, norm_rule = _compile_rule(rule_doc, f"{at}.rules[{index}]")
        rules.append(rule)
        norm_rules.append(norm_rule)
    norm["rules"] = norm_rules
    return Transformation(name, source_ids, destinations, where, enabled, tuple(rules), norm)


def _names(value: Any, at: str, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise Invalid(at, f"must be a non-empty list of {what} names (omit it for every {what})")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise Invalid(f"{at}[{index}]", f"must be a {what} name")
    return list(dict.fromkeys(value))


def _source_ids(value: Any, at: str, sources: dict[str, str]) -> tuple[str, ...]:
    ids = set(sources.values())
    out = []
    for index, ref in enumerate(_names(value, at, "source")):
        if ref in sources:
            out.append(sources[ref])
        elif ref in ids:
            out.append(ref)
        else:
            known = ", ".join(sorted(sources)) or "none"
            raise Invalid(f"{at}[{index}]", f"unknown source {ref!r} (the sources are: {known})")
    return tuple(dict.fromkeys(out))


def _expression(value: Any, at: str) -> Expression:
    if not isinstance(value, str):
        raise Invalid(at, "must be an expression in a string (quote it in YAML)")
    try:
        return compile_expression(value)
    except ExpressionError as exc:
        raise Invalid(at, str(exc)) from None


def _path(value: Any, at: str, writable: bool) -> Path:
    if not isinstance(value, str):
        raise Invalid(at, 'must be a path such as properties.plan or properties["order id"]')
    try:
        segments = parse_path(value)
    except ExpressionError as exc:
        raise Invalid(at, str(exc)) from None
    if writable:
        if len(segments) < 2 or segments[0] not in WRITABLE_ROOTS:
            roots = ", ".join(sorted(WRITABLE_ROOTS))
            raise Invalid(at, f"must be a path inside one of: {roots} (e.g. properties.plan)")
        if any(isinstance(s, int) for s in segments):
            raise Invalid(at, "cannot write into a list element")
    return segments


def _args(value: Any, at: str, required: tuple[str, ...], optional: tuple[str, ...] = ()):
    if not isinstance(value, dict):
        raise Invalid(at, f"must be a mapping with {', '.join(required)}")
    for key in value:
        if key not in required and key not in optional:
            raise Invalid(f"{at}.{key}", f"unknown key (expected {', '.join(required + optional)})")
    for key in required:
        if key not in value:
            raise Invalid(f"{at}.{key}", "is required")
    return value


def _compile_rule(doc: Any, at: str) -> tuple[Rule, dict[str, Any]]:
    if not isinstance(doc, dict) or len(doc) != 1:
        raise Invalid(at, f"a rule is a mapping with one key, one of: {', '.join(RULE_KINDS)}")
    ((kind, value),) = doc.items()
    at = f"{at}.{kind}"
    if kind == "rename_event":
        args = _args(value, at, ("from", "to"))
        for key in ("from", "to"):
            if not isinstance(args[key], str) or not args[key]:
                raise Invalid(f"{at}.{key}", "must be an event name")
        norm = {"from": args["from"], "to": args["to"]}
        return _rename_event(args["from"], args["to"]), {kind: norm}
    if kind == "rename_property":
        args = _args(value, at, ("from", "to"))
        old = _path(args["from"], f"{at}.from", writable=True)
        new = _path(args["to"], f"{at}.to", writable=True)
        if old == new:
            raise Invalid(f"{at}.to", "is the same path as from")
        norm = {"from": format_path(old), "to": format_path(new)}
        return _rename_property(old, new), {kind: norm}
    if kind == "drop_property":
        paths = value if isinstance(value, list) else [value]
        if not paths:
            raise Invalid(at, "must be a path or a non-empty list of paths")
        at_of = (lambda i: f"{at}[{i}]") if isinstance(value, list) else (lambda i: at)
        segments = [_path(p, at_of(i), writable=True) for i, p in enumerate(paths)]
        texts = [format_path(s) for s in segments]
        return _drop_properties(segments), {kind: texts if isinstance(value, list) else texts[0]}
    if kind == "derive_property":
        args = _args(value, at, ("name", "expr"))
        target = _path(args["name"], f"{at}.name", writable=True)
        expr = _expression(args["expr"], f"{at}.expr")
        norm = {"name": format_path(target), "expr": expr.text}
        return _derive(target, expr), {kind: norm}
    if kind == "map_values":
        args = _args(value, at, ("property", "map"), ("default",))
        target = _path(args["property"], f"{at}.property", writable=True)
        if not isinstance(args["map"], dict) or not args["map"]:
            raise Invalid(f"{at}.map", "must be a non-empty mapping of value: replacement")
        table = {_key_text(k): v for k, v in args["map"].items()}
        norm = {"property": format_path(target), "map": table}
        default = args.get("default", _ABSENT)
        if default is not _ABSENT:
            norm["default"] = default
        return _map_values(target, table, default), {kind: norm}
    if kind == "drop_event":
        expr = _expression(value, at)
        evaluate = expr.evaluate
        return (lambda msg: _DROP if evaluate(msg) else None), {kind: expr.text}
    raise Invalid(at, f"unknown rule (the rules are: {', '.join(RULE_KINDS)})")


# -- the rules ----------------------------------------------------------------------------------


def _parent(msg: dict, segments: Path) -> dict | None:
    """The existing object that holds the last segment, or None."""
    v: Any = msg
    for seg in segments[:-1]:
        v = v.get(seg) if isinstance(v, dict) else None
    return v if isinstance(v, dict) else None


def _make_parent(msg: dict, segments: Path) -> dict | None:
    """The object that holds the last segment, creating missing objects on the way; None (and
    nothing created) when something that is not an object is in the way."""
    v = msg
    for i, seg in enumerate(segments[:-1]):
        nxt = v.get(seg, _ABSENT)
        if nxt is _ABSENT or nxt is None:
            for rest in segments[i:-1]:  # from here on everything is new
                v[rest] = v = {}
            return v
        if not isinstance(nxt, dict):
            return None
        v = nxt
    return v


def _rename_event(old: str, new: str) -> Rule:
    def rule(msg: dict) -> int | None:
        if msg.get("event") == old:
            msg["event"] = new
            return _CHANGED
        return None

    return rule


def _rename_property(old: Path, new: Path) -> Rule:
    old_last, new_last = old[-1], new[-1]

    def rule(msg: dict) -> int | None:
        parent = _parent(msg, old)
        if parent is None or old_last not in parent:
            return None
        target = _make_parent(msg, new)
        if target is None:
            return None
        target[new_last] = parent.pop(old_last)
        return _CHANGED

    return rule


def _drop_properties(paths: list[Path]) -> Rule:
    if all(len(p) == 2 for p in paths):  # the usual properties.x: no loop over segments
        pairs = tuple((a, b) for a, b in paths)

        def drop2(msg: dict) -> int | None:
            outcome = None
            for a, b in pairs:
                parent = msg.get(a)
                if isinstance(parent, dict) and parent.pop(b, _ABSENT) is not _ABSENT:
                    outcome = _CHANGED
            return outcome

        return drop2

    def rule(msg: dict) -> int | None:
        outcome = None
        for path in paths:
            parent = _parent(msg, path)
            if parent is not None and parent.pop(path[-1], _ABSENT) is not _ABSENT:
                outcome = _CHANGED
        return outcome

    return rule


def _derive(target: Path, expr: Expression) -> Rule:
    evaluate, last = expr.evaluate, target[-1]

    def rule(msg: dict) -> int | None:
        value = evaluate(msg)
        if value is None:  # nothing to say: leave the property as it is
            return None
        parent = _make_parent(msg, target)
        if parent is None:
            return None
        # a copy, so two paths of the message never share one list or object
        parent[last] = copy_json(value) if type(value) in (dict, list) else value
        return _CHANGED

    return rule


def _key_text(value: Any) -> str:
    """map_values compares values as text: a string as itself, numbers, booleans and null as
    they are written in JSON (so a YAML key 1 matches the number 1 and the string "1")."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _map_values(target: Path, table: dict[str, Any], default: Any) -> Rule:
    get, last = path_getter(target[:-1]), target[-1]

    def rule(msg: dict) -> int | None:
        parent = get(msg)
        if not isinstance(parent, dict):
            return None
        value = parent.get(last, _ABSENT)
        if value is _ABSENT:
            return None
        if type(value) is str:
            new = table.get(value, default)
        elif type(value) in (dict, list):
            new = default
        else:
            new = table.get(_key_text(value), default)
        if new is _ABSENT:
            return None
        parent[last] = copy_json(new) if type(new) in (dict, list) else new
        return _CHANGED

    return rule
