"""Destination definitions: the workspace's ``destinations`` section, checked whole.

```yaml
destinations:
  - key: crm_hook                 # [a-z0-9_], unique in the workspace
    name: CRM webhook             # consent.destinations maps names to categories
    type: webhook                 # a connector (plait.destinations.connectors)
    enabled: true
    sources: [Website]            # source names or ids; none: every source
    types: [track, identify]      # message types; none: every type
    filter: "event != 'Heartbeat'"   # an expression (plait.govern.expressions)
    audiences: [vip]              # connected audiences: only their entries and exits
    settings: {url: "https://…", secret: "…"}   # the connector's own
    batch_size: 1                 # messages a request (at most the connector's limit)
    rate_limit: 50                # requests a second (none: unlimited)
    retry_period: 4 hours         # how long retryable failures are retried (Segment: 4 h)
    backoff: 1                    # first retry after ~1 s, doubling up to max_backoff
    max_backoff: 600
```

The same document is stored and exported; secrets in ``settings`` are shown masked by
the API (``masked``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plait.audiences.language import AudienceSyntaxError, parse_window
from plait.destinations.connectors import CONNECTORS, Connector
from plait.govern.expressions import Expression, ExpressionError, compile_expression
from plait.spec import MESSAGE_TYPES
from plait.store.workspaces import Invalid

SECTION = "destinations"
MASK = "********"  # a secret as the API and the export show it
KEY = re.compile(r"^[a-z0-9_]{1,100}$")
FIELDS = {"key", "name", "type", "enabled", "sources", "types", "filter", "settings",
          "batch_size", "rate_limit", "retry_period", "backoff", "max_backoff",
          "audiences"}  # fmt: skip
DEFAULT_RETRY_SECONDS = 4 * 3600.0
DEFAULT_BACKOFF_SECONDS = 1.0
DEFAULT_MAX_BACKOFF_SECONDS = 600.0


@dataclass(frozen=True)
class Destination:
    key: str
    name: str
    connector: Connector
    settings: dict[str, Any]
    enabled: bool = True
    sources: tuple[str, ...] = ()  # as written: names or ids
    types: tuple[str, ...] = ()
    # Connected audiences: only their entries and exits, after a full sync of their members.
    audiences: tuple[str, ...] = ()
    filter: Expression | None = None
    batch_size: int = 1
    rate_limit: float | None = None  # requests a second
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS
    doc: dict[str, Any] = field(default_factory=dict, compare=False)


def duration_seconds(value: Any, where: str) -> float:
    """A duration: seconds (a number) or text such as ``4 hours``."""
    if isinstance(value, bool):
        raise Invalid(where, "must be a number of seconds or a duration such as '4 hours'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_window(value).ms / 1000
        except AudienceSyntaxError:
            raise Invalid(where, f"not a duration: {value!r} (e.g. '30 minutes', "
                                 "'4 hours', or seconds as a number)") from None  # fmt: skip
    else:
        raise Invalid(where, "must be a number of seconds or a duration such as '4 hours'")
    if not seconds > 0 or seconds > 366 * 86400:
        raise Invalid(where, "must be more than 0 and at most a year")
    return seconds


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise Invalid(where, "must be a list of non-empty strings")
    return tuple(value)


def compile_destination(doc: Any, where: str = "destination") -> Destination:
    if not isinstance(doc, dict):
        raise Invalid(where, "must be a mapping")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise Invalid(
            f"{where}.{unknown[0]}", f"unknown field; expected {', '.join(sorted(FIELDS))}"
        )
    key = doc.get("key")
    if not isinstance(key, str) or not KEY.match(key):
        raise Invalid(f"{where}.key", "required: 1 to 100 of a-z, 0-9 and _")
    kind = doc.get("type")
    if kind not in CONNECTORS:
        raise Invalid(
            f"{where}.type", f"unknown connector {kind!r}; one of {', '.join(CONNECTORS)}"
        )
    connector = CONNECTORS[kind]
    name = doc.get("name", key)
    if not isinstance(name, str) or not name.strip():
        raise Invalid(f"{where}.name", "must be a non-empty string")
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        raise Invalid(f"{where}.enabled", "must be true or false")
    types = _names(doc.get("types"), f"{where}.types")
    accepted = connector.types or MESSAGE_TYPES
    for t in types:
        if t not in accepted:
            raise Invalid(f"{where}.types", f"unknown type {t!r} for {kind}; one of "
                                            f"{', '.join(sorted(accepted))}")  # fmt: skip
    if not types and connector.types is not None:
        types = tuple(sorted(connector.types))  # only what the connector takes
    expression = None
    if doc.get("filter") is not None:
        try:
            expression = compile_expression(doc["filter"])
        except ExpressionError as exc:
            raise Invalid(f"{where}.filter", f"{exc.message} (column {exc.column})") from None
    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):
        raise Invalid(f"{where}.settings", "must be a mapping")
    settings = connector.check(settings, f"{where}.settings")
    batch_size = doc.get("batch_size", connector.default_batch)
    if (not isinstance(batch_size, int) or isinstance(batch_size, bool)
            or not 1 <= batch_size <= connector.max_batch):  # fmt: skip
        raise Invalid(f"{where}.batch_size", f"must be 1 to {connector.max_batch} for {kind}")
    rate = doc.get("rate_limit")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or not 0 < rate <= 100_000):  # fmt: skip
        raise Invalid(f"{where}.rate_limit", "must be requests a second, more than 0")
    retry = duration_seconds(doc.get("retry_period", DEFAULT_RETRY_SECONDS),
                             f"{where}.retry_period")  # fmt: skip
    backoff = duration_seconds(doc.get("backoff", DEFAULT_BACKOFF_SECONDS), f"{where}.backoff")
    most = duration_seconds(doc.get("max_backoff", DEFAULT_MAX_BACKOFF_SECONDS),
                            f"{where}.max_backoff")  # fmt: skip
    if most < backoff:
        raise Invalid(f"{where}.max_backoff", "must be at least backoff")
    return Destination(
        key=key, name=name, connector=connector, settings=settings, enabled=enabled,
        sources=_names(doc.get("sources"), f"{where}.sources"), types=types,
        audiences=_names(doc.get("audiences"), f"{where}.audiences"),
        filter=expression, batch_size=batch_size,
        rate_limit=float(rate) if rate is not None else None,
        retry_seconds=retry, backoff_seconds=backoff, max_backoff_seconds=most, doc=doc,
    )  # fmt: skip


def compile_keyed(docs: Any, section: str, what: str, compile_one: Callable[[Any, str], Any]
                  ) -> dict[str, Any]:  # fmt: skip
    """A section that is a list of documents with unique keys (destinations, syncs),
    compiled by key; raises Invalid naming the field."""
    if docs is None:
        return {}
    if not isinstance(docs, list):
        raise Invalid(section, f"must be a list of {what}")
    found: dict[str, Any] = {}
    for i, doc in enumerate(docs):
        compiled = compile_one(doc, f"{section}[{i}]")
        if compiled.key in found:
            raise Invalid(f"{section}[{i}].key", f"{compiled.key!r} is used twice")
        found[compiled.key] = compiled
    return found


def compile_destinations(docs: Any) -> dict[str, Destination]:
    """The section's destinations by key; raises Invalid naming the field."""
    return compile_keyed(docs, SECTION, "destinations", compile_destination)


def masked(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with its connector's secret settings masked (for the API)."""
    connector = CONNECTORS.get(doc.get("type"))
    settings = dict(doc.get("settings") or {})
    for name in connector.secrets if connector else ():
        if settings.get(name):
            settings[name] = MASK
    return {**doc, "settings": settings}
