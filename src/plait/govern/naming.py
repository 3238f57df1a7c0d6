"""Naming standards for event, property and trait names, and the plan linter.

A standard is a name: ``object_action`` ("Order Completed": Title Case words, at least two,
Segment's recommended Object Action form), ``Title Case``, ``snake_case``, ``camelCase``
or ``PascalCase``. A naming configuration maps what is named to a standard:
``{events: object_action, properties: snake_case, traits: camelCase}``; each key is
optional and a missing key means that kind of name is not checked."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from plait.store.workspaces import Invalid

_WORD = r"[A-Z0-9][A-Za-z0-9]*"
STANDARDS: dict[str, re.Pattern[str]] = {
    "object_action": re.compile(rf"{_WORD}(?: {_WORD})+"),
    "Title Case": re.compile(rf"{_WORD}(?: {_WORD})*"),
    "snake_case": re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*"),
    "camelCase": re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*"),
    "PascalCase": re.compile(r"[A-Z][a-z0-9]*(?:[A-Z][a-z0-9]*)*"),
}
NAMED = ("events", "properties", "traits")


@dataclass(frozen=True, slots=True)
class Standard:
    name: str
    pattern: re.Pattern[str]

    def fullmatch(self, name: str) -> re.Match[str] | None:
        return self.pattern.fullmatch(name)


def _pattern(standard: str, field: str = "naming") -> re.Pattern[str]:
    try:
        return STANDARDS[standard]
    except (KeyError, TypeError):
        raise Invalid(
            field, f"unknown naming standard {standard!r}; use one of {', '.join(STANDARDS)}"
        ) from None


def check_naming(names: Iterable[str], standard: str) -> list[str]:
    """The names that do not follow ``standard``, in the order given (repeats kept once)."""
    pattern = _pattern(standard)
    seen: set[str] = set()
    offenders = []
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        if not isinstance(name, str) or not pattern.fullmatch(name):
            offenders.append(name)
    return offenders


def compile_naming(naming: object, field: str) -> dict[str, Standard]:
    """A naming configuration checked and compiled: {"events": Standard, ...}."""
    if naming is None:
        return {}
    if not isinstance(naming, dict):
        raise Invalid(field, "must be a mapping of events/properties/traits to a standard")
    compiled = {}
    for key, standard in naming.items():
        if key not in NAMED:
            raise Invalid(f"{field}.{key}", f"unknown key; use {', '.join(NAMED)}")
        compiled[key] = Standard(standard, _pattern(standard, f"{field}.{key}"))
    return compiled


def lint_plan(plan_doc: dict, naming: dict) -> list[dict]:
    """Naming findings in a plan document: ``{"field", "name", "expected"}`` for every event
    name, property name (at any depth, ``[]`` marking array items) and identify/group trait
    name that does not follow the configured standard."""
    patterns = compile_naming(naming, "naming")
    findings: list[dict] = []

    def flag(kind: str, field: str, name: str) -> None:
        if kind in patterns and not patterns[kind].fullmatch(name):
            findings.append({"field": field, "name": name, "expected": naming[kind]})

    events = plan_doc.get("events") or {}
    for event, spec in events.items():
        flag("events", f"events.{event}", event)
        schema = (spec or {}).get("properties")
        for path, name in _schema_names(schema, ""):
            flag("properties", f"events.{event}.properties.{path}", name)
    for section, key, kind in (
        ("identify", "traits", "traits"),
        ("group", "traits", "traits"),
        ("page", "properties", "properties"),
        ("screen", "properties", "properties"),
    ):
        schema = (plan_doc.get(section) or {}).get(key)
        for path, name in _schema_names(schema, ""):
            flag(kind, f"{section}.{key}.{path}", name)
    return findings


def _schema_names(schema: object, prefix: str, depth: int = 0) -> Iterable[tuple[str, str]]:
    """(dotted path, name) of every property a schema declares, nested objects included."""
    if not isinstance(schema, dict) or depth > 16:
        return
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            path = f"{prefix}{name}"
            yield path, name
            yield from _schema_names(sub, f"{path}.", depth + 1)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _schema_names(items, f"{prefix.rstrip('.')}[].", depth + 1)
