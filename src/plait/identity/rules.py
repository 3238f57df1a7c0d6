"""A workspace's identity resolution rules: identifier types, limits, priority, blocked values.

The defaults are Segment's: ``user_id`` limited to 1 value per profile, every other type to
5; priority ``user_id``, ``email``, then the other types alphabetically; the blocked values
Segment suggests. In the workspace YAML::

    identity:
      default_region: US            # phone numbers without a country code
      identifiers:
        anonymous_id: {limit: 5, window: weekly}
        crm_id: {limit: 1, paths: [traits.crm_id, properties.crm_id]}
        device_id: {paths: [context.device.id]}
      priority: [user_id, email, crm_id]
      blocked: {values: [void, abc123], patterns: ["^test-"]}

Custom types are also read from ``context.externalIds`` entries of that type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

BUILT_IN_TYPES = ("user_id", "anonymous_id", "email", "phone")
WINDOWS = {
    "ever": None,
    "daily": 86_400,
    "weekly": 7 * 86_400,
    "monthly": 30 * 86_400,
    "annually": 365 * 86_400,
}
DEFAULT_BLOCKED_VALUES = ("-1", "null", "undefined", "anonymous")
DEFAULT_BLOCKED_PATTERNS = ("^[0-]*$",)
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


class RulesError(ValueError):
    """A rule the user must fix; ``field`` is its path in the ``identity`` section."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"identity.{field}: {reason}")
        self.field = f"identity.{field}"
        self.reason = reason


@dataclass(frozen=True)
class IdentifierType:
    name: str
    limit: int
    window: str = "ever"  # one of WINDOWS
    paths: tuple[tuple[str, ...], ...] = ()  # dotted paths in a message, for custom types

    @property
    def window_seconds(self) -> int | None:
        return WINDOWS[self.window]


@dataclass(frozen=True)
class Rules:
    types: dict[str, IdentifierType]
    priority: tuple[str, ...]  # every type, highest priority first
    blocked_values: frozenset[str] = frozenset(DEFAULT_BLOCKED_VALUES)
    blocked_patterns: tuple[re.Pattern, ...] = field(
        default_factory=lambda: tuple(re.compile(p) for p in DEFAULT_BLOCKED_PATTERNS)
    )
    default_region: str = "US"

    ranks: dict[str, int] = field(init=False, repr=False, compare=False)
    # (type, raw value) -> identifier or None: see identifiers.extract
    identifier_cache: dict[tuple[str, str], tuple[str, str] | None] = field(
        init=False, repr=False, compare=False
    )
    custom_types: tuple[IdentifierType, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", {name: i for i, name in enumerate(self.priority)})
        object.__setattr__(self, "identifier_cache", {})
        object.__setattr__(self, "custom_types", tuple(t for t in self.types.values() if t.paths))

    def rank(self, type_name: str) -> int:
        """0 is the highest priority."""
        return self.ranks.get(type_name, len(self.priority))

    def is_blocked(self, value: str) -> bool:
        # Not cached here: identifiers.extract caches its whole verdict per raw value.
        return value.lower() in self.blocked_values or any(
            p.search(value) for p in self.blocked_patterns
        )

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form; ``from_dict(to_dict())`` gives the same rules."""
        identifiers = {}
        for name, kind in self.types.items():
            item: dict[str, Any] = {"limit": kind.limit}
            if kind.window != "ever":
                item["window"] = kind.window
            if kind.paths:
                item["paths"] = [".".join(p) for p in kind.paths]
            identifiers[name] = item
        return {
            "default_region": self.default_region,
            "identifiers": identifiers,
            "priority": list(self.priority),
            "blocked": {
                "values": sorted(self.blocked_values),
                "patterns": [p.pattern for p in self.blocked_patterns],
            },
        }


def default_rules() -> Rules:
    return from_dict({})


def from_dict(doc: dict[str, Any] | None) -> Rules:
    """Rules from the ``identity`` section (missing keys take Segment's defaults)."""
    doc = doc or {}
    if not isinstance(doc, dict):
        raise RulesError("", "must be a mapping")
    unknown = set(doc) - {"default_region", "identifiers", "priority", "blocked"}
    if unknown:
        raise RulesError(sorted(unknown)[0], "is not a setting (default_region, identifiers, "
                         "priority, blocked)")  # fmt: skip
    region = doc.get("default_region", "US")
    if not isinstance(region, str) or not re.fullmatch(r"[A-Z]{2}", region):
        raise RulesError("default_region", "must be a two-letter region code such as US or DE")

    declared = doc.get("identifiers") or {}
    if not isinstance(declared, dict):
        raise RulesError("identifiers", "must be a mapping of type name to settings")
    types: dict[str, IdentifierType] = {
        name: IdentifierType(name, 1 if name == "user_id" else 5) for name in BUILT_IN_TYPES
    }
    for name, settings in declared.items():
        types[name] = _identifier_type(name, settings or {})

    priority = doc.get("priority") or []
    if not isinstance(priority, list) or not all(isinstance(p, str) for p in priority):
        raise RulesError("priority", "must be a list of identifier types")
    for name in priority:
        if name not in types:
            raise RulesError("priority", f"{name!r} is not an identifier type")
    if len(set(priority)) != len(priority):
        raise RulesError("priority", "lists a type twice")
    # Unlisted types follow: user_id and email first (as Segment), then alphabetically.
    rest = [t for t in ("user_id", "email") if t not in priority]
    rest += sorted(t for t in types if t not in priority and t not in rest)
    ordered = tuple(priority) + tuple(rest)

    blocked = doc.get("blocked") or {}
    if not isinstance(blocked, dict) or set(blocked) - {"values", "patterns"}:
        raise RulesError("blocked", "must be a mapping with values and patterns")
    values = blocked.get("values", list(DEFAULT_BLOCKED_VALUES))
    patterns = blocked.get("patterns", list(DEFAULT_BLOCKED_PATTERNS))
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RulesError("blocked.values", "must be a list of strings")
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise RulesError("blocked.patterns", "must be a list of regular expressions")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise RulesError("blocked.patterns", f"{pattern!r} is not a regex: {exc}") from None
    return Rules(
        types=types,
        priority=ordered,
        blocked_values=frozenset(v.lower() for v in values),
        blocked_patterns=tuple(compiled),
        default_region=region,
    )


def _identifier_type(name: Any, settings: Any) -> IdentifierType:
    where = f"identifiers.{name}"
    if not isinstance(name, str) or not _TYPE_NAME.match(name):
        raise RulesError(where, "type names are lower case: letters, digits, _ and .")
    if not isinstance(settings, dict) or set(settings) - {"limit", "window", "paths"}:
        raise RulesError(where, "settings are limit, window and paths")
    limit = settings.get("limit", 1 if name == "user_id" else 5)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise RulesError(f"{where}.limit", "must be a whole number of at least 1")
    window = settings.get("window", "ever")
    if window not in WINDOWS:
        raise RulesError(f"{where}.window", f"must be one of {', '.join(WINDOWS)}")
    paths = settings.get("paths", [])
    if name == "group_id":
        raise RulesError(where, "group_id names accounts (group calls), not people")
    if name in BUILT_IN_TYPES and paths:
        raise RulesError(f"{where}.paths", "built-in types are read from their usual fields")
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise RulesError(f"{where}.paths", "must be a list of dotted paths like traits.crm_id")
    return IdentifierType(name, limit, window, tuple(tuple(p.split(".")) for p in paths))
