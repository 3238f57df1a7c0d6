"""A tracking plan drafted from the events a source has sent.

``infer_plan`` walks messages once, keeping a small shape per event (JSON types seen, how
often each property was present and non-null, distinct short strings up to a bound) and
turns it into a plan document in the ``tracking_plans`` YAML form. The draft is built so
that the stream it came from passes it with zero violations in every mode: every property
seen is planned, a type list holds every type seen, ``required`` only names properties
present and non-null in every occurrence, and an ``enum`` holds every value seen."""

from __future__ import annotations

from collections.abc import Iterable

from plait.govern.tracking_plan import SECTIONS

_ORDER = ("string", "number", "integer", "boolean", "object", "array")


class _Shape:
    """What was seen at one place in the messages (a property, a trait, array items)."""

    __slots__ = ("seen", "nulls", "types", "objects", "children", "items", "values", "strings")

    def __init__(self) -> None:
        self.seen = 0  # occurrences, nulls included
        self.nulls = 0
        self.types: set[str] = set()
        self.objects = 0  # occurrences as an object: the base of the children's `required`
        self.children: dict[str, _Shape] = {}
        self.items: _Shape | None = None
        self.values: dict[str, int] | None = {}  # None once there are too many to be an enum
        self.strings = 0

    def add(self, value: object, depth: int, limits: tuple[int, int]) -> None:
        max_depth, max_enum = limits
        self.seen += 1
        if value is None:
            self.nulls += 1
            self.types.add("null")
        elif isinstance(value, bool):
            self.types.add("boolean")
        elif isinstance(value, int):
            self.types.add("integer")
        elif isinstance(value, float):
            self.types.add("number")
        elif isinstance(value, str):
            self.types.add("string")
            self.strings += 1
            if self.values is not None:
                if len(value) > 60:
                    self.values = None
                else:
                    self.values[value] = self.values.get(value, 0) + 1
                    if len(self.values) > max_enum:
                        self.values = None
        elif isinstance(value, dict):
            self.types.add("object")
            self.objects += 1
            if depth < max_depth:  # deeper: the type alone, anything inside passes
                for key, sub in value.items():
                    child = self.children.get(key)
                    if child is None:
                        child = self.children[key] = _Shape()
                    child.add(sub, depth + 1, limits)
        elif isinstance(value, list):
            self.types.add("array")
            if depth < max_depth:
                if self.items is None:
                    self.items = _Shape()
                for sub in value:
                    self.items.add(sub, depth + 1, limits)
        else:  # not JSON: leave the place unconstrained
            self.types.add("any")

    def schema(self, min_enum_seen: int) -> dict:
        schema: dict = {}
        types = set(self.types)
        if "number" in types:
            types.discard("integer")  # number admits integers
        if "any" not in types and types:
            ordered = [t for t in _ORDER if t in types] + (["null"] if "null" in types else [])
            schema["type"] = ordered[0] if len(ordered) == 1 else ordered
            values = self.values
            if (
                types <= {"string", "null"}
                and values
                and self.strings >= min_enum_seen
                and self.strings >= 3 * len(values)
            ):
                schema["enum"] = sorted(values) + ([None] if self.nulls else [])
        if "object" in types and self.children:
            schema["properties"] = {
                k: self.children[k].schema(min_enum_seen) for k in sorted(self.children)
            }
            required = [
                k
                for k in sorted(self.children)
                if self.children[k].seen - self.children[k].nulls == self.objects
            ]
            if required:
                schema["required"] = required
        if "array" in types and self.items is not None and self.items.seen:
            schema["items"] = self.items.schema(min_enum_seen)
        return schema


def infer_plan(
    messages: Iterable[dict],
    plan_id: str = "inferred",
    *,
    max_depth: int = 6,
    max_enum: int = 12,
    min_enum_seen: int = 30,
) -> dict:
    """A plan document drafted from ``messages``: track events by name, identify and group
    traits, page and screen properties. Objects and arrays are described ``max_depth``
    levels down; a string property becomes an ``enum`` when it took at most ``max_enum``
    distinct values (each at most 60 characters) over at least ``min_enum_seen`` strings,
    about three or more sightings per value. Plain dicts in a stable order (YAML-ready)."""
    limits = (max_depth, max_enum)
    events: dict[str, _Shape] = {}
    counts: dict[str, int] = {}
    sections: dict[str, _Shape] = {}
    seen = 0
    for msg in messages:
        call = msg.get("type")
        if call == "track":
            name = msg.get("event")
            if not isinstance(name, str) or not name.strip():  # refused at collection
                continue
            shape = events.get(name)
            if shape is None:
                shape = events[name] = _Shape()
            counts[name] = counts.get(name, 0) + 1
            data = msg.get("properties")
        elif call in SECTIONS:
            shape = sections.get(call)
            if shape is None:
                shape = sections[call] = _Shape()
            data = msg.get(SECTIONS[call])
        else:
            continue
        seen += 1
        shape.add({} if data is None else data, 0, limits)
    plan: dict = {
        "id": plan_id,
        "name": f"{plan_id} (drafted from {seen} messages)",
        "sources": [],
        "events": {},
    }
    for name in sorted(events):
        plan["events"][name] = {
            "description": f"seen {counts[name]} times",
            "properties": _top(events[name].schema(min_enum_seen)),
        }
    for call in SECTIONS:
        if call in sections:
            plan[call] = {SECTIONS[call]: _top(sections[call].schema(min_enum_seen))}
    return plan


def _top(schema: dict) -> dict:
    """The properties/traits object itself: always an object (absent counts as empty)."""
    schema["type"] = "object"
    schema.pop("enum", None)
    return schema
