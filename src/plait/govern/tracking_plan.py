"""Tracking plans with Segment Protocols semantics: which events, properties and traits a
source may send, what a violation is, and what happens to the message (allow, omit, block).

``compile_plans`` checks the workspace's ``tracking_plans`` section once (every JSON Schema
compiled by fastjsonschema for the common, valid path); ``Plans.check`` runs per message and
only when the fast validator fails asks jsonschema for every error with its path. Violations
are recorded in ``context.protocols`` the way Segment does ({sourceId, violations:
[{type, field, description}], omitted, omitted_on_violation}), and ``violation_event`` builds
Segment's "Violation Generated" track message."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import jsonschema
import orjson
from fastjsonschema.draft07 import CodeGeneratorDraft07

from plait.govern.naming import compile_naming
from plait.store.workspaces import Invalid

# Segment's schema controls: what each kind of violation may do to the message.
MODES = {
    "unplanned_event": ("allow", "block"),
    # Segment offers allow and omit; block (the event) is Plait's, as the issue asks.
    "unplanned_property": ("allow", "omit", "block"),
    "schema_violation": ("allow", "omit", "block"),
}
CALLS = ("track", "identify", "group", "page", "screen")
SECTIONS = {"identify": "traits", "group": "traits", "page": "properties", "screen": "properties"}
PLAN_KEYS = frozenset(
    "id name description version sources modes forward_violations naming events".split()
) | frozenset(SECTIONS)
DEFAULT_FORWARD_SOURCE = "Protocols Violations"  # forward_violations: true sends them here
VIOLATION_USER_ID = "schema-violations"  # Segment's: one MTU for all forwarded violations
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
_PII_CLASS = re.compile(r"[a-z][a-z0-9_]{0,63}")
_NAME_CACHE_MAX = 50_000


# Formats: one checker for both validators, so the fast path and the error listing agree.
def _regex_format(pattern: re.Pattern[str]) -> Callable[[object], bool]:
    return lambda value: not isinstance(value, str) or pattern.match(value) is not None


FORMATS = jsonschema.FormatChecker(())
FORMATS.checkers.update(jsonschema.Draft7Validator.FORMAT_CHECKER.checkers)
for _name, _regex in CodeGeneratorDraft07.FORMAT_REGEXS.items():
    if _name not in FORMATS.checkers:
        FORMATS.checks(_name)(_regex_format(re.compile(_regex)))
_FAST_FORMATS = {
    name: (lambda value, name=name: FORMATS.conforms(value, name)) for name in FORMATS.checkers
}


@dataclass(slots=True)
class Violation:
    type: str  # Segment's violationType: Required, Invalid Type, Invalid Value, ...
    field: str  # dotted path in the message: properties.products.0.price, traits.email, event
    description: str  # never echoes the offending value (violations are forwarded)
    event_name: str
    event_type: str
    plan_id: str
    plan_version: int
    kind: str  # unplanned_event | unplanned_property | schema_violation | naming
    action: str  # allowed | omitted | blocked
    plan_name: str = ""


@dataclass(slots=True)
class Verdict:
    blocked: bool
    violations: list[Violation]
    omitted: list[str]  # paths removed from the message
    forward: bool = False  # the plan asks for "Violation Generated" events


@dataclass(slots=True, eq=False)
class _Schema:
    prefix: str  # where the checked object lives in the message: properties or traits
    fast: Callable[[Any], Any]
    slow: jsonschema.Draft7Validator
    known: frozenset[str] | None  # declared top-level names; None: every name is planned
    patterns: tuple[re.Pattern[str], ...]  # patternProperties: matching names are planned
    # A schema of independent top-level properties (see _PartsExplainer) is explained a
    # property at a time; None: by jsonschema over the whole object.
    parts: _PartsExplainer | None = None


class _Plan:
    def __init__(self, doc: dict, at: str, sources: dict[str, str], naming: dict):
        self.id = _slug(doc.get("id"), f"{at}.id")
        self.name = _string(doc.get("name", self.id), f"{at}.name")
        version = doc.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise Invalid(f"{at}.version", "must be a positive integer")
        self.version = version
        self.source_ids = _sources(doc.get("sources", []), f"{at}.sources", sources)
        self.modes = _modes(doc.get("modes"), f"{at}.modes")
        # Where "Violation Generated" events go: false, true (the default source) or a source.
        target = doc.get("forward_violations", False)
        if target is True:
            target = DEFAULT_FORWARD_SOURCE
        if target is False:
            self.forward_to = None
        elif isinstance(target, str) and target in sources:
            self.forward_to = sources[target]
        elif isinstance(target, str) and target in sources.values():
            self.forward_to = target
        else:
            raise Invalid(
                f"{at}.forward_violations",
                f"true, false or a source name; no source named {target!r} in this workspace",
            )
        self.forward = self.forward_to is not None
        self.naming = compile_naming(doc.get("naming"), f"{at}.naming") or naming
        self._good_names: dict[str, set[str]] = {what: set() for what in self.naming}
        self.pii: dict[str, str] = {}
        self.events: dict[str, _Schema] | None = None  # None: track calls are not checked
        events = doc.get("events")
        if events is not None:
            if not isinstance(events, dict):
                raise Invalid(f"{at}.events", "must be a mapping of event names to events")
            self.events = {}
            for name, spec in events.items():
                field = f"{at}.events.{name}"
                if not isinstance(name, str) or not name.strip():
                    raise Invalid(field, "an event name must be a non-empty string")
                spec = {} if spec is None else spec
                _only(spec, {"description", "properties"}, field)
                self.events[name] = self._schema(
                    spec.get("properties"), f"{field}.properties", "properties"
                )
        self.sections: dict[str, _Schema] = {}  # a missing section: that call is not checked
        for call, key in SECTIONS.items():
            spec = doc.get(call)
            if spec is None:
                continue
            _only(spec, {"description", key}, f"{at}.{call}")
            if key not in spec:
                raise Invalid(f"{at}.{call}.{key}", f"{call} needs a {key} schema")
            self.sections[call] = self._schema(spec[key], f"{at}.{call}.{key}", key)

    def _schema(self, schema: object, field: str, prefix: str) -> _Schema:
        compiled = _compile_schema(schema, field, prefix)
        for path, label, where in _pii_labels(schema or {}, prefix, field):
            if self.pii.setdefault(path, label) != label:
                raise Invalid(where, f"{path} is classified {self.pii[path]!r} elsewhere")
        return compiled

    # The per-message check --------------------------------------------------------------

    def check(self, msg: dict, source_id: str) -> Verdict:
        call = msg.get("type")
        violations: list[Violation] = []
        if call == "track":
            name = msg.get("event")
            if self.naming.get("events") is not None and isinstance(name, str):
                if name not in self._good_names["events"] and not self._follows("events", name):
                    violations.append(
                        self._violation(
                            msg,
                            "Naming",
                            "event",
                            f"event name {name!r} is not {self.naming['events'].name}",
                            "naming",
                        )
                    )
            if self.events is None:
                schema = None
            else:
                schema = self.events.get(name) if isinstance(name, str) else None
                if schema is None:
                    return self._unplanned_event(msg, source_id, violations)
        elif call in SECTIONS:
            schema = self.sections.get(call)
        else:  # alias and anything else: no plan applies
            return Verdict(False, violations, [], self.forward)
        prefix = schema.prefix if schema is not None else SECTIONS.get(call, "properties")
        data = msg.get(prefix)
        if self.naming and isinstance(data, dict):
            self._name_violations(msg, prefix, data, violations)
        if schema is None:
            return self._finish(msg, source_id, violations, False, [], [])
        modes = self.modes[call]
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            found = [
                ("Invalid Type", (prefix,), f"{prefix} must be object, got {_json_type(data)}")
            ]
            blocked = modes[2] == "block"
            return self._schema_result(
                msg, source_id, violations, [], found, blocked, modes, prefix
            )
        extra: list[str] = []
        if schema.known is not None and len(data) and not data.keys() <= schema.known:
            extra = sorted(
                k
                for k in data.keys() - schema.known
                if not any(p.search(k) for p in schema.patterns)
            )
        checked = data
        if extra and modes[1] == "omit":  # validate what will remain; omit only if not blocked
            checked = {k: v for k, v in data.items() if k not in extra}
        try:
            schema.fast(checked)
        except fastjsonschema.JsonSchemaValueException:
            found = _errors(schema, checked)
        else:
            if not extra and not violations:  # the common case: nothing to record
                return Verdict(False, violations, [], self.forward)
            found = []
        blocked = (bool(found) and modes[2] == "block") or (bool(extra) and modes[1] == "block")
        return self._schema_result(msg, source_id, violations, extra, found, blocked, modes, prefix)

    def _unplanned_event(self, msg: dict, source_id: str, violations: list) -> Verdict:
        data = msg.get("properties")
        if self.naming and isinstance(data, dict):
            self._name_violations(msg, "properties", data, violations)
        blocked = self.modes["track"][0] == "block"
        violations.append(
            self._violation(
                msg,
                "Unplanned Event",
                "event",
                f"event {msg.get('event')!r} is not in tracking plan {self.id!r}",
                "unplanned_event",
                "blocked" if blocked else "allowed",
            )
        )
        return self._finish(msg, source_id, violations, blocked, [], [])

    def _schema_result(
        self, msg, source_id, violations, extra, found, blocked, modes, prefix
    ) -> Verdict:
        omitted: list[str] = []
        on_violation: list[str] = []
        unplanned_action = (
            "blocked" if blocked else ("omitted" if modes[1] == "omit" else "allowed")
        )
        container = msg.get(prefix)
        for key in extra:
            field = f"{prefix}.{key}"
            violations.append(
                self._violation(
                    msg,
                    "Unplanned Property",
                    field,
                    f"{field} is not in the tracking plan",
                    "unplanned_property",
                    unplanned_action,
                )
            )
            if unplanned_action == "omitted":
                del container[key]
                omitted.append(field)
        removed: list[tuple] = []
        for vtype, path, description in found:
            action = "blocked" if blocked else "allowed"
            if not blocked and modes[2] == "omit":
                if any(path[: len(r)] == r for r in removed):
                    action = "omitted"  # an enclosing property is already gone
                else:
                    target = _omit(msg, path)
                    if target is not None:
                        removed.append(target)
                        on_violation.append(_dotted(target))
                        action = "omitted"
            violations.append(
                self._violation(msg, vtype, _dotted(path), description, "schema_violation", action)
            )
        return self._finish(msg, source_id, violations, blocked, omitted, on_violation)

    def _finish(self, msg, source_id, violations, blocked, omitted, on_violation) -> Verdict:
        if violations:
            violations.sort(key=lambda v: v.kind == "naming")  # stable: naming findings last
            context = msg.get("context")
            if not isinstance(context, dict):
                context = msg["context"] = {}
            protocols = context.get("protocols")
            if not isinstance(protocols, dict):
                protocols = context["protocols"] = {}
            protocols["sourceId"] = source_id
            protocols["violations"] = [
                {"type": v.type, "field": v.field, "description": v.description} for v in violations
            ]
            if omitted:
                protocols["omitted"] = omitted
            if on_violation:
                protocols["omitted_on_violation"] = on_violation
        return Verdict(blocked, violations, omitted + on_violation, self.forward)

    def _violation(self, msg, vtype, field, description, kind, action="allowed") -> Violation:
        call = msg.get("type")
        name = msg.get("event") if call == "track" else msg.get("name")
        return Violation(
            vtype,
            field,
            description,
            name if isinstance(name, str) else "",
            call,
            self.id,
            self.version,
            kind,
            action,
            self.name,
        )

    def _follows(self, what: str, name: str) -> bool:
        """Whether ``name`` follows the standard; names that do are remembered (bounded)."""
        if self.naming[what].fullmatch(name) is None:
            return False
        good = self._good_names[what]
        if len(good) >= _NAME_CACHE_MAX:
            good.clear()
        good.add(name)
        return True

    def _name_violations(self, msg: dict, prefix: str, data: dict, violations: list) -> None:
        what = "traits" if prefix == "traits" else "properties"
        pattern = self.naming.get(what)
        if pattern is None or data.keys() <= self._good_names[what]:
            return
        good = self._good_names[what]
        for key in data:  # in the message's order: the same message, the same violations
            if key not in good and not self._follows(what, key):
                violations.append(
                    self._violation(
                        msg,
                        "Naming",
                        f"{prefix}.{key}",
                        f"{what} name {key!r} is not {pattern.name}",
                        "naming",
                    )
                )


class Plans:
    """The workspace's compiled tracking plans, looked up by source id."""

    def __init__(self, plans: list[_Plan]):
        self.plans = {plan.id: plan for plan in plans}
        self._by_source = {sid: plan for plan in plans for sid in plan.source_ids}

    def __bool__(self) -> bool:
        return bool(self._by_source)

    def plan_for(self, source_id: str) -> _Plan | None:
        return self._by_source.get(source_id)

    def forwarding_source(self, source_id: str) -> str | None:
        """The id of the source the plan connected to ``source_id`` forwards its violations
        to ("Violation Generated" events), None when it does not."""
        plan = self._by_source.get(source_id)
        return None if plan is None else plan.forward_to

    def check(self, msg: dict, source_id: str) -> Verdict | None:
        """The plan's verdict on ``msg`` (mutated for omit), None when no plan is connected."""
        plan = self._by_source.get(source_id)
        return None if plan is None else plan.check(msg, source_id)

    def pii_fields(self, source_id: str) -> dict[str, str]:
        """``{"properties.email": "email", "traits.phone": "phone", ...}`` from the ``pii:``
        keywords of the source's plan (every event, identify, group, page and screen merged;
        ``[]`` marks array items: ``properties.products[].sku``)."""
        plan = self._by_source.get(source_id)
        return dict(plan.pii) if plan is not None else {}


def compile_plans(
    docs: list | None, sources: dict[str, str], *, naming: dict | None = None
) -> Plans:
    """Check and compile the workspace's ``tracking_plans``; ``sources`` maps source names to
    ids and ``naming`` is the workspace's default naming standard. Raises Invalid."""
    if docs is None:
        return Plans([])
    if not isinstance(docs, list):
        raise Invalid("tracking_plans", "must be a list of tracking plans")
    workspace_naming = compile_naming(naming, "naming")
    plans: list[_Plan] = []
    owner: dict[str, str] = {}
    for i, doc in enumerate(docs):
        at = f"tracking_plans[{i}]"
        _only(doc, PLAN_KEYS, at)
        plan = _Plan(doc, at, sources, workspace_naming)
        if any(p.id == plan.id for p in plans):
            raise Invalid(f"{at}.id", f"another tracking plan has id {plan.id!r}")
        for j, sid in enumerate(plan.source_ids):
            if sid in owner:  # as in Segment: one plan per source
                raise Invalid(
                    f"{at}.sources[{j}]",
                    f"source {doc['sources'][j]!r} is already "
                    f"connected to tracking plan {owner[sid]!r}",
                )
            owner[sid] = plan.id
        plans.append(plan)
    for i, plan in enumerate(plans):  # checked again there, violations would beget violations
        if plan.forward_to in owner:
            raise Invalid(
                f"tracking_plans[{i}].forward_violations",
                "violations cannot go to "
                f"a source connected to a tracking plan ({owner[plan.forward_to]!r})",
            )
    return Plans(plans)


def violation_event(
    v: Violation, msg: dict, source_id: str, *, source_name: str | None = None
) -> dict:
    """Segment's "Violation Generated" track message for one violation. Its messageId is
    derived from the original messageId, field and type, so re-emitting is idempotent."""
    original = msg.get("messageId")
    if not isinstance(original, str) or not original:
        original = orjson.dumps(msg, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(f"{original}\x1f{v.field}\x1f{v.type}\x1f{v.kind}".encode())
    context = msg.get("context") if isinstance(msg.get("context"), dict) else {}
    app = context.get("app") if isinstance(context.get("app"), dict) else None
    properties = {
        "appVersion": (app or {}).get("version") or "",
        "eventMessageID": msg.get("messageId"),
        "eventName": v.event_name,
        "eventSentAt": msg.get("sentAt"),
        "eventTimestamp": msg.get("timestamp"),
        "eventType": v.event_type,
        "sourceID": source_id,
        "trackingPlanID": v.plan_id,
        "trackingPlanName": v.plan_name or v.plan_id,
        "trackingPlanVersion": v.plan_version,
        "violationAction": v.action,
        "violationDescription": v.description,
        "violationField": v.field,
        "violationKind": v.kind,
        "violationType": v.type,
    }
    if source_name is not None:
        properties["sourceName"] = source_name
        properties["sourceSlug"] = re.sub(r"[^a-z0-9]+", "_", source_name.lower()).strip("_")
    return {
        "type": "track",
        "event": "Violation Generated",
        "userId": VIOLATION_USER_ID,
        "messageId": "sch-" + digest.hexdigest()[:32],
        # The violating event's time, not the check's: replaying the log gives the same message.
        "timestamp": msg.get("receivedAt") or msg.get("timestamp"),
        "context": {"app": app, "library": context.get("library")},
        "integrations": {},
        "properties": properties,
        "forwardedFromProject": source_id,
    }


# Compilation helpers ----------------------------------------------------------------------


def _compile_schema(schema: object, field: str, prefix: str) -> _Schema:
    if schema is None:
        schema = {"type": "object"}  # nothing planned: every property is unplanned
    if not isinstance(schema, dict):
        raise Invalid(field, "must be a JSON Schema (a mapping)")
    kind = schema.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and "object" in kind):
        raise Invalid(f"{field}.type", f"the {prefix} of a message are an object")
    _local_refs_only(schema, field)
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise Invalid(_dotted((field, *exc.absolute_path)), exc.message) from None
    additional = schema.get("additionalProperties")
    validated = schema
    if additional is False:  # unplanned properties: the mode decides, not a schema error
        validated = {k: v for k, v in schema.items() if k != "additionalProperties"}
    patterns = []
    for pattern in schema.get("patternProperties", {}):
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            raise Invalid(f"{field}.patternProperties", f"bad pattern {pattern!r}: {exc}") from None
    try:
        fast = fastjsonschema.compile(
            validated, formats=_FAST_FORMATS, use_default=False, detailed_exceptions=False
        )
    except (fastjsonschema.JsonSchemaDefinitionException, re.error) as exc:
        raise Invalid(field, f"cannot compile the schema: {exc}") from None
    open_ = additional is True or isinstance(additional, dict)
    known = None if open_ else frozenset(schema.get("properties", {}))
    return _Schema(
        prefix,
        fast,
        jsonschema.Draft7Validator(validated, format_checker=FORMATS),
        known,
        tuple(patterns),
        _PartsExplainer.of(validated),
    )


# Keywords of an object schema that constrain each property on its own: with only these at
# the top (and no $ref anywhere), a property's errors depend on that property alone.
_INDEPENDENT = frozenset(
    "type properties required title description $comment examples default pii".split()
)


class _PartsExplainer:
    """Lists a failing object's errors as jsonschema does, in its order, but runs jsonschema
    only on the properties that fail: each property is first checked by a fastjsonschema
    validator of its own (compiled when the property first fails). jsonschema over a whole
    event took ~93 µs; most violating events have one bad or missing property."""

    def __init__(self, schema: dict):
        self.schema = schema
        self.properties: dict[str, Any] = schema.get("properties", {})
        self._fast: dict[str, Callable[[Any], Any]] = {}
        self._slow: dict[str, jsonschema.Draft7Validator] = {}

    @classmethod
    def of(cls, schema: dict) -> _PartsExplainer | None:
        if not schema.keys() <= _INDEPENDENT or b'"$ref"' in orjson.dumps(schema):
            return None
        return cls(schema)

    def iter_errors(self, data: dict):
        for keyword in self.schema:  # jsonschema's order: the schema's keywords in turn
            if keyword == "properties":
                for name, sub in self.properties.items():
                    if name in data and not self._passes(name, sub, data[name]):
                        for error in self._validator(name, sub).iter_errors(data[name]):
                            error.path.appendleft(name)
                            yield error
            elif keyword == "required" and any(n not in data for n in self.schema[keyword]):
                yield jsonschema.ValidationError(
                    "required", validator="required", validator_value=self.schema[keyword],
                    instance=data, schema=self.schema,
                )  # fmt: skip

    def _passes(self, name: str, sub: Any, value: Any) -> bool:
        fast = self._fast.get(name)
        if fast is None:
            fast = self._fast[name] = fastjsonschema.compile(
                sub, formats=_FAST_FORMATS, use_default=False, detailed_exceptions=False
            )
        try:
            fast(value)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def _validator(self, name: str, sub: Any) -> jsonschema.Draft7Validator:
        if name not in self._slow:
            self._slow[name] = jsonschema.Draft7Validator(sub, format_checker=FORMATS)
        return self._slow[name]


def _local_refs_only(node: object, field: str) -> None:
    """No remote $ref or $id: compiling a plan never fetches anything."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                raise Invalid(f"{field}.$ref", "only local references (#/...) are supported")
            if key == "$id" and isinstance(value, str):
                raise Invalid(f"{field}.$id", "$id is not supported in tracking plans")
            _local_refs_only(value, f"{field}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _local_refs_only(value, f"{field}[{i}]")


def _pii_labels(schema: dict, path: str, field: str, depth: int = 0):
    """(message path, classification, YAML field) for every property marked ``pii:``."""
    if not isinstance(schema, dict) or depth > 32:
        return
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            if not isinstance(sub, dict):
                continue
            where = f"{field}.properties.{name}"
            if "pii" in sub:
                label = sub["pii"]
                if not isinstance(label, str) or not _PII_CLASS.fullmatch(label):
                    raise Invalid(f"{where}.pii", "must be a classification such as email")
                yield f"{path}.{name}", label, f"{where}.pii"
            yield from _pii_labels(sub, f"{path}.{name}", where, depth + 1)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _pii_labels(items, f"{path}[]", f"{field}.items", depth + 1)


def _modes(value: object, at: str) -> dict[str, tuple[str, str, str]]:
    """Per call: (unplanned_event, unplanned_property, schema_violation)."""
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise Invalid(at, "must be a mapping of violation kinds to allow/omit/block")
    base = {kind: "allow" for kind in MODES}
    per_call: dict[str, dict[str, str]] = {call: {} for call in CALLS}
    for key, mode in value.items():
        if key in MODES:
            base[key] = _mode(key, mode, f"{at}.{key}")
        elif key in CALLS:  # Segment's per-call controls: identify: {unplanned_property: omit}
            if not isinstance(mode, dict):
                raise Invalid(f"{at}.{key}", "must be a mapping of violation kinds to modes")
            for kind, sub in mode.items():
                if kind not in MODES or (kind == "unplanned_event" and key != "track"):
                    raise Invalid(f"{at}.{key}.{kind}", "unknown violation kind for this call")
                per_call[key][kind] = _mode(kind, sub, f"{at}.{key}.{kind}")
        else:
            raise Invalid(
                f"{at}.{key}",
                f"unknown violation kind; use {', '.join(MODES)} (or a call: {', '.join(CALLS)})",
            )
    return {call: tuple(per_call[call].get(kind, base[kind]) for kind in MODES) for call in CALLS}


def _mode(kind: str, mode: object, field: str) -> str:
    if mode not in MODES[kind]:
        if kind == "unplanned_event" and mode == "omit":
            raise Invalid(field, "omit is not meaningful for an unplanned event: allow or block")
        raise Invalid(field, f"must be one of {', '.join(MODES[kind])}")
    return mode  # type: ignore[return-value]


def _sources(value: object, field: str, sources: dict[str, str]) -> list[str]:
    if not isinstance(value, list):
        raise Invalid(field, "must be a list of source names or ids")
    ids = set(sources.values())
    resolved = []
    for j, ref in enumerate(value):
        if isinstance(ref, str) and ref in sources:
            resolved.append(sources[ref])
        elif isinstance(ref, str) and ref in ids:
            resolved.append(ref)
        else:
            raise Invalid(f"{field}[{j}]", f"no source named {ref!r} in this workspace")
    return resolved


def _only(spec: object, allowed: set | frozenset, field: str) -> None:
    if not isinstance(spec, dict):
        raise Invalid(field, "must be a mapping")
    for key in spec:
        if key not in allowed:
            raise Invalid(f"{field}.{key}", f"unknown key; use {', '.join(sorted(allowed))}")


def _slug(value: object, field: str) -> str:
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise Invalid(field, "use lower-case letters, digits, dashes and underscores (1-100)")
    return value


def _string(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(field, "must be a non-empty string")
    return value


# Violations from the slow path ------------------------------------------------------------

_TYPE_NAMES = {
    "null": "null",
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "str": "string",
    "dict": "object",
    "list": "array",
}
_DESCRIBE = {
    "const": lambda v: f"must be {_short(v)}",
    "enum": lambda v: f"must be one of {_short(v)}",
    "pattern": lambda v: f"must match the pattern {_short(v)}",
    "format": lambda v: f"must be a valid {v}",
    "minimum": lambda v: f"must be >= {v}",
    "maximum": lambda v: f"must be <= {v}",
    "exclusiveMinimum": lambda v: f"must be > {v}",
    "exclusiveMaximum": lambda v: f"must be < {v}",
    "multipleOf": lambda v: f"must be a multiple of {v}",
    "minLength": lambda v: f"must have at least {v} characters",
    "maxLength": lambda v: f"must have at most {v} characters",
    "minItems": lambda v: f"must have at least {v} items",
    "maxItems": lambda v: f"must have at most {v} items",
    "uniqueItems": lambda v: "must not contain duplicate items",
    "minProperties": lambda v: f"must have at least {v} properties",
    "maxProperties": lambda v: f"must have at most {v} properties",
    "anyOf": lambda v: "must match at least one of the allowed schemas (anyOf)",
    "oneOf": lambda v: "must match exactly one of the allowed schemas (oneOf)",
    "allOf": lambda v: "must match all of the schemas (allOf)",
    "not": lambda v: "must not match the excluded schema (not)",
    "contains": lambda v: "must contain an item matching the schema (contains)",
    "propertyNames": lambda v: "has a property name that is not allowed (propertyNames)",
    "dependencies": lambda v: "is missing a property that another one depends on",
}


def _errors(schema: _Schema, data: dict) -> list[tuple[str, tuple, str]]:
    """Every violation as (violationType, path in the message, description)."""
    found: list[tuple[str, tuple, str]] = []
    seen: set[tuple] = set()
    explainer = schema.parts if schema.parts is not None else schema.slow
    for error in explainer.iter_errors(data):
        path = (schema.prefix, *error.absolute_path)
        keyword, value, instance = error.validator, error.validator_value, error.instance
        if keyword == "required":
            names = [n for n in value if isinstance(instance, dict) and n not in instance]
            items = [("Required", (*path, n), "is required") for n in names]
        elif keyword == "additionalProperties":  # a nested object that is closed
            declared = error.schema.get("properties", {})
            patterns = error.schema.get("patternProperties", {})
            items = [
                ("Additional Property", (*path, k), "is not in the schema")
                for k in instance
                if k not in declared and not any(re.search(p, k) for p in patterns)
            ]
        elif keyword == "type":
            expected = value if isinstance(value, str) else " or ".join(value)
            items = [("Invalid Type", path, f"must be {expected}, got {_json_type(instance)}")]
        else:
            describe = _DESCRIBE.get(keyword, lambda v, k=keyword: f"does not satisfy {k}")
            items = [("Invalid Value", path, describe(value))]
        for vtype, where, text in items:
            if (vtype, where) not in seen:
                seen.add((vtype, where))
                found.append((vtype, where, f"{_dotted(where)} {text}"))
    return found


def _omit(msg: dict, path: tuple) -> tuple | None:
    """Remove the innermost object member on ``path`` (an array item takes its enclosing
    property with it); returns the removed path, None when there is nothing to remove (a
    missing required property, or a violation of the properties/traits object itself)."""
    node: Any = msg
    member = None
    for depth, part in enumerate(path):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            if depth >= 1:
                member = (node, depth)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    if member is None:
        return None
    container, depth = member
    del container[path[depth]]
    return path[: depth + 1]


def _json_type(value: object) -> str:
    return _TYPE_NAMES.get(type(value).__name__, "null" if value is None else "value")


def _short(value: object) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 120 else text[:117] + "..."


def _dotted(path: tuple) -> str:
    return ".".join(str(part) for part in path)
