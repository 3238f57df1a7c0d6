"""Segment's warehouse schema, as pure functions: which tables a message goes to, with which
columns and values (the warehouse connectors load what these give).

- ``tracks`` (every track, without its properties) and one table per event, named by the
  snake_cased event (``order_completed``), with the properties as columns; ``identifies``
  (traits as columns) and ``users`` (one row per user id: the latest traits, upserted);
  ``pages`` and ``screens`` (``name`` and the properties); ``groups`` (``group_id`` and the
  traits); ``aliases`` (``previous_id``).
- Every table has ``id`` (the messageId: loads are deduplicated on it), ``received_at``,
  ``sent_at``, ``timestamp``, ``original_timestamp``, ``anonymous_id``, ``user_id``,
  ``uuid_ts`` (when the row was loaded) and the context flattened (``context_app_version``).
- Names are snake_cased as Segment's (go-snakecase): ``productId`` -> ``product_id``,
  ``Order Completed`` -> ``order_completed``. Nested objects are flattened with ``_``;
  arrays are kept as JSON text; a null makes no column.
- A column's type comes from the first value seen (boolean, bigint, double precision,
  text; the time columns timestamptz). A later value of another type is converted to the
  column's when it can be (a number into text, a whole float into bigint), else left null.
- A property or trait named like a column Plait sets (``id``, ``event``, ``user_id`` ...)
  is left to Plait's; an event whose table name is one of the fixed tables' gets
  ``_event`` after it (``tracks_event``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from plait.spec.timestamps import parse_timestamp

FIXED_TABLES = frozenset({"tracks", "identifies", "users", "pages", "screens", "groups",
                          "aliases"})  # fmt: skip
TIME_COLUMNS = frozenset({"received_at", "sent_at", "timestamp", "original_timestamp",
                          "uuid_ts"})  # fmt: skip
BASE = ("id", "received_at", "sent_at", "timestamp", "original_timestamp", "anonymous_id",
        "user_id")  # fmt: skip
MAX_NAME = 63  # PostgreSQL's identifier length

_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])|([A-Z]+)([A-Z][a-z])")


@lru_cache(maxsize=65_536)  # a workspace's names repeat: each is worked out once
def snake(name: str) -> str:
    """``Order Completed`` -> ``order_completed``; ``productId`` -> ``product_id``;
    ``HTTPStatus`` -> ``http_status``; a leading digit gets ``_`` before it."""
    text = _CAMEL.sub(lambda m: f"{m[1]}_{m[2]}" if m[1] else f"{m[3]}_{m[4]}", str(name))
    out = "_".join(p for p in _SPLIT.split(text) if p).lower()
    if not out:
        return "_"
    if out[0].isdigit():
        out = f"_{out}"
    return out[:MAX_NAME]


def flatten(obj: Any, prefix: str = "", into: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON object's leaves as snake_cased columns joined with ``_``; arrays as JSON
    text; nulls left out."""
    out = {} if into is None else into
    if not isinstance(obj, dict):
        return out
    for key, value in obj.items():
        name = _column(prefix, key)
        if isinstance(value, dict):
            flatten(value, name, out)
        elif isinstance(value, list):
            out[name] = orjson.dumps(value).decode()
        elif value is not None:
            out[name] = value
    return out


@lru_cache(maxsize=65_536)
def _column(prefix: str, key: str) -> str:
    return snake(key) if not prefix else f"{prefix}_{snake(key)}"[:MAX_NAME]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value).astimezone(UTC)
    except (ValueError, TypeError):
        return None


def _base(msg: dict[str, Any], loaded: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {"id": msg.get("messageId")}
    for column, key in (("received_at", "receivedAt"), ("sent_at", "sentAt"),
                        ("timestamp", "timestamp"),
                        ("original_timestamp", "originalTimestamp")):  # fmt: skip
        if (t := _time(msg.get(key))) is not None:
            row[column] = t
    for column, key in (("anonymous_id", "anonymousId"), ("user_id", "userId")):
        if msg.get(key) is not None:
            row[column] = str(msg[key])
    row["uuid_ts"] = loaded
    flatten(msg.get("context"), "context", row)
    return row


def _with(row: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` (properties, traits) added where Plait's own columns are not."""
    for key, value in extra.items():
        if key not in row and key not in TIME_COLUMNS:
            row[key] = value
    return row


def event_table(event: str) -> str:
    name = snake(event)
    return f"{name}_event"[:MAX_NAME] if name in FIXED_TABLES else name


def rows_of(msg: dict[str, Any], loaded: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(table, row) for each table the message goes to; none for a message without a
    messageId or of another type."""
    kind = msg.get("type")
    if not msg.get("messageId"):
        return []
    row = _base(msg, loaded)
    if kind == "track":
        event = str(msg.get("event") or "")
        tracked = {**row, "event": snake(event), "event_text": event}
        custom = _with({**tracked}, flatten(msg.get("properties")))
        return [("tracks", tracked), (event_table(event), custom)]
    if kind == "identify":
        traits = flatten(msg.get("traits"))
        out = [("identifies", _with(row, traits))]
        if msg.get("userId") is not None:
            user = {"id": str(msg["userId"]), "received_at": row.get("received_at"),
                    "uuid_ts": loaded}  # fmt: skip
            out.append(("users", _with(user, traits)))
        return out
    if kind in ("page", "screen"):
        if msg.get("name") is not None:
            row["name"] = str(msg["name"])
        return [(f"{kind}s", _with(row, flatten(msg.get("properties"))))]
    if kind == "group":
        if msg.get("groupId") is not None:
            row["group_id"] = str(msg["groupId"])
        return [("groups", _with(row, flatten(msg.get("traits"))))]
    if kind == "alias":
        if msg.get("previousId") is not None:
            row["previous_id"] = str(msg["previousId"])
        return [("aliases", row)]
    return []


def column_type(column: str, value: Any) -> str:
    """The PostgreSQL type a column gets from its first value."""
    if column in TIME_COLUMNS:
        return "timestamptz"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) and -(2**63) <= value < 2**63:
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, datetime):
        return "timestamptz"
    return "text"


def convert(value: Any, kind: str) -> Any:
    """``value`` as a value of a column of type ``kind``, or None when it cannot be."""
    if value is None:
        return None
    if kind == "text":
        if isinstance(value, str):
            return value
        if isinstance(value, datetime):
            return value.isoformat()
        return orjson.dumps(value).decode()
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "bigint":
        if isinstance(value, bool):
            return None
        if isinstance(value, int) and -(2**63) <= value < 2**63:
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            return int(value)
        return None
    if kind == "double precision":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)
    if kind == "timestamptz":
        return value if isinstance(value, datetime) else _time(value)
    return None


def converter(kind: str):
    """``convert`` for one column type, with a fast path for values of that type already
    (most of them): a load converts every value of every row."""

    def slow(value: Any) -> Any:
        return None if value is None else convert(value, kind)

    if kind == "text":
        return lambda v: v if v.__class__ is str else slow(v)
    if kind == "bigint":
        return lambda v: v if v.__class__ is int and -(2**63) <= v < 2**63 else slow(v)
    if kind == "double precision":
        return lambda v: v if v.__class__ is float else slow(v)
    if kind == "boolean":
        return lambda v: v if v.__class__ is bool else None
    if kind == "timestamptz":
        return lambda v: v if v.__class__ is datetime else slow(v)
    return slow


def tables_of(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of a batch by table; a user's identifies merged into one ``users`` row
    (later traits win), as one statement may not update a row twice."""
    loaded = datetime.now(UTC)
    tables: dict[str, list[dict[str, Any]]] = defaultdict(list)
    users: dict[str, dict[str, Any]] = {}
    for msg in messages:
        for table, row in rows_of(msg, loaded):
            if table == "users":
                users.setdefault(row["id"], {}).update(
                    {k: v for k, v in row.items() if v is not None})  # fmt: skip
            else:
                tables[table].append(row)
    if users:
        tables["users"] = list(users.values())
    return dict(tables)
