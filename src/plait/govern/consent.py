"""Consent, with Segment's semantics: pure functions over messages and preferences.

A message carries the person's choices in ``context.consent.categoryPreferences``
(``{"Advertising": true, "Analytics": false}``, keys are the CMP's category ids). A
destination is mapped to zero or more categories in the workspace file:

```yaml
consent:
  destinations:
    Google Ads: [advertising]
    Amplitude: [analytics]
    Webhook: []            # mapped to no category: receives everything
```

Rules (Segment's "Consent in Segment Connections"):

- a message without a consent object, or with no ``categoryPreferences`` in it, flows to
  every destination;
- a destination mapped to no category receives every message;
- a destination mapped to several categories needs every one of them true;
- a category missing from a message's preferences is false, so an empty
  ``categoryPreferences`` blocks every mapped destination.

Category ids are compared case-insensitively ("Advertising" in an event matches
``advertising`` in the file); only the JSON value ``true`` grants consent (``"true"`` or
``1`` do not), and a ``consent`` or ``categoryPreferences`` that is present but not an
object grants nothing.

Profile-level consent: the track event "Segment Consent Preference Updated" carries the
person's new choices in the same ``context.consent.categoryPreferences`` and becomes the
profile's preferences (the latest one wins). For every other message of that person, a
category must be allowed both by the message and by the profile when both are known
(``combined``), so withdrawing consent on the profile stops the person's events at once,
even from an old device that still sends ``true``. The preference event itself flows to
every destination (Segment sends it regardless of consent, so destinations learn of a
withdrawal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plait.store.workspaces import Invalid

__all__ = [
    "PREFERENCE_EVENT",
    "ConsentConfig",
    "allows",
    "combined",
    "compile_consent",
    "effective_preferences",
    "is_preference_update",
    "message_preferences",
    "normalize_preferences",
]

PREFERENCE_EVENT = "Segment Consent Preference Updated"

Preferences = dict[str, bool]


def normalize_preferences(obj: Any) -> Preferences:
    """Category ids case-folded, values True only for JSON ``true``. When one category is
    given twice with different case, false wins. Anything but a mapping grants nothing."""
    if not isinstance(obj, Mapping):
        return {}
    prefs = {str(key).casefold(): value is True for key, value in obj.items()}
    if len(prefs) < len(obj):  # some category given twice: false wins
        prefs = {}
        for key, value in obj.items():
            category = str(key).casefold()
            prefs[category] = value is True and prefs.get(category, True)
    return prefs


def message_preferences(msg: Mapping[str, Any]) -> Preferences | None:
    """The message's consent preferences, or None when it carries none (no
    ``context.consent``, an empty one, or one without ``categoryPreferences``)."""
    context = msg.get("context")
    if type(context) is not dict:
        return None
    consent = context.get("consent")
    if consent is None:
        return None
    if type(consent) is not dict:
        return {}  # a consent value we cannot read grants nothing
    prefs = consent.get("categoryPreferences")
    if prefs is None:
        return None
    return normalize_preferences(prefs)


def allows(preferences: Mapping[str, bool] | None, destination_categories: Iterable[str]) -> bool:
    """Whether a message with ``preferences`` (from ``message_preferences`` or
    ``combined``) may go to a destination mapped to ``destination_categories``."""
    if preferences is None:
        return True
    for category in destination_categories:
        if preferences.get(category.casefold()) is not True:
            return False
    return True


def is_preference_update(msg: Mapping[str, Any]) -> bool:
    """A "Segment Consent Preference Updated" track event: its ``message_preferences``
    (when not None) become the profile's preferences."""
    return msg.get("type") == "track" and msg.get("event") == PREFERENCE_EVENT


def combined(
    message_prefs: Mapping[str, bool] | None, profile_prefs: Mapping[str, bool] | None
) -> Preferences | None:
    """The preferences that govern a message of a profile: when both are known, a category
    is allowed only if both allow it (a category missing from either is false); when one
    is None, the other; when both are None, None (no consent information: flows
    everywhere)."""
    if message_prefs is None:
        return None if profile_prefs is None else dict(profile_prefs)
    if profile_prefs is None:
        return dict(message_prefs)
    return {
        category: message_prefs.get(category) is True and profile_prefs.get(category) is True
        for category in message_prefs.keys() | profile_prefs.keys()
    }


def effective_preferences(
    msg: Mapping[str, Any], profile_prefs: Mapping[str, bool] | None
) -> Preferences | None:
    """What to enforce for ``msg`` of a person whose profile holds ``profile_prefs``:
    None (everywhere) for the preference event itself, else ``combined``."""
    if is_preference_update(msg):
        return None
    return combined(message_preferences(msg), profile_prefs)


@dataclass(frozen=True)
class ConsentConfig:
    """Categories per destination name (case-folded); a name not listed is unmapped."""

    destinations: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def categories(self, name: str) -> tuple[str, ...]:
        return self.destinations.get(name, ())

    def allows(self, name: str, prefs: Mapping[str, bool] | None) -> bool:
        """Whether a message with ``prefs`` may go to destination ``name``."""
        if prefs is None:
            return True
        for category in self.destinations.get(name, ()):
            if prefs.get(category) is not True:
                return False
        return True


def compile_consent(doc: Any) -> ConsentConfig:
    """The workspace's ``consent:`` section; None or {} maps no destination."""
    if doc is None:
        return ConsentConfig()
    if not isinstance(doc, dict):
        raise Invalid("consent", "must be a mapping with a 'destinations' key")
    for key in doc:
        if key != "destinations":
            raise Invalid(f"consent.{key}", "unknown key; expected destinations")
    given = doc.get("destinations")
    if given is None:
        return ConsentConfig()
    if not isinstance(given, dict):
        raise Invalid("consent.destinations", "must map destination names to category lists")
    destinations: dict[str, tuple[str, ...]] = {}
    for name, categories in given.items():
        where = f"consent.destinations.{name}"
        if not isinstance(name, str) or not name.strip():
            raise Invalid("consent.destinations", f"{name!r} is not a destination name")
        if categories is None:
            categories = []
        if not isinstance(categories, list):
            raise Invalid(where, "must be a list of consent category ids, e.g. [advertising]")
        folded = []
        for i, category in enumerate(categories):
            if not isinstance(category, str) or not category.strip():
                raise Invalid(f"{where}[{i}]", "a category id must be a non-empty string")
            folded.append(category.strip().casefold())
        destinations[name] = tuple(dict.fromkeys(folded))
    return ConsentConfig(destinations)
