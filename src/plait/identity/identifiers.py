"""The identifiers a message carries, normalized, as (type, value) pairs.

Where each type is read (as Segment promotes them to external ids):
- ``user_id``: ``userId``; ``anonymous_id``: ``anonymousId``;
- ``email`` and ``phone``: ``traits`` and ``context.traits``;
- any declared type: ``context.externalIds`` entries of that type (collection ``users``)
  and the type's configured ``paths``;
- an alias's ``previousId`` is classified by the resolver (see resolver.py).

A blocked value (rules.py) or one that does not normalize stays in the payload but never
becomes an identifier.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import phonenumbers

from plait.identity.rules import Rules

Identifier = tuple[str, str]  # (type, value)
MAX_VALUE_LENGTH = 256


def extract(msg: dict[str, Any], rules: Rules) -> list[Identifier]:
    """The message's person identifiers, without repeats, highest priority first."""
    # Runs for every message the pipeline sees: each (type, raw value) is normalized and
    # checked against the blocked values once, then remembered on the rules.
    cache = rules.identifier_cache
    found: dict[Identifier, None] = {}
    for type_name, value in _candidates(msg, rules):
        if value is None:
            continue
        key = (type_name, value) if isinstance(value, str) else (type_name, repr(value))
        ident = cache.get(key, False)
        if ident is False:
            if len(cache) >= 200_000:
                cache.clear()
            normalized = normalize(type_name, value, rules)
            blocked = normalized is None or rules.is_blocked(normalized)
            ident = cache[key] = None if blocked else (type_name, normalized)
        if ident is not None:
            found[ident] = None
    if len(found) < 2:
        return list(found)
    rank = rules.rank
    return sorted(found, key=lambda ident: rank(ident[0]))


def _candidates(msg: dict[str, Any], rules: Rules) -> list[tuple[str, Any]]:
    found = [("user_id", msg.get("userId")), ("anonymous_id", msg.get("anonymousId"))]
    context = msg.get("context")
    context = context if isinstance(context, dict) else {}
    for traits in (msg.get("traits"), context.get("traits")):
        if isinstance(traits, dict):
            found.append(("email", traits.get("email")))
            found.append(("phone", traits.get("phone")))
    external = context.get("externalIds")
    if isinstance(external, list):
        for item in external:
            if (
                isinstance(item, dict)
                and item.get("type") in rules.types
                and item.get("collection", "users") == "users"
            ):
                found.append((item["type"], item.get("id")))
    for kind in rules.custom_types:
        for path in kind.paths:
            found.append((kind.name, _at(msg, path)))
    return found


def _at(msg: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = msg
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def normalize(type_name: str, value: Any, rules: Rules) -> str | None:
    """The canonical form of a value, or None when it cannot be an identifier."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not text or len(text) > MAX_VALUE_LENGTH:
        return None
    if type_name in PII_TYPES and _stored_pii(text):
        return text  # hashed or encrypted by the PII policy: an opaque, stable value
    if type_name == "email":
        text = text.lower()
        return text if "@" in text[1:-1] else None
    if type_name == "phone":
        return e164(text, rules.default_region)
    return text


PII_TYPES = frozenset(("email", "phone"))
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _stored_pii(text: str) -> bool:
    """A value the PII policy hashed (SHA-256 hex) or encrypted (``enc:v1:`` token)."""
    return text.startswith("enc:v1:") or (len(text) == 64 and _SHA256_HEX.fullmatch(text))


@lru_cache(maxsize=65536)
def e164(text: str, region: str | None) -> str | None:
    """``text`` as an E.164 number ("+14155550100") when it is a possible phone number;
    without a leading "+", ``region`` (ISO 3166 alpha-2) gives the country. Cached: parsing
    costs ~30 µs and a person's number comes back in many events."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
