"""From parsed messages to log rows: validate, enrich, derive, serialize."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from plait.collect import querystring
from plait.collect.fastpath import FastPath
from plait.collect.guard import SUPPRESSED, Guard, guarded_row
from plait.log.backends import Row
from plait.spec import MAX_MESSAGE_BYTES, Enrichment, MessageError, enrich, validate

REJECTIONS = {SUPPRESSED: "this person's data is suppressed by a privacy request"}


@dataclass(slots=True)
class Prepared:
    rows: list[Row] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    types: Counter = field(default_factory=Counter)


def received_us(env: Enrichment) -> int:
    """The rows' received_at: microseconds since the epoch."""
    return int(env.received_at.timestamp() * 1_000_000)


def prepare(
    messages: list[Any], msg_type: str | None, env: Enrichment, guard: Guard | None = None
) -> Prepared:
    """Turn a request's messages into log rows; a bad message is rejected with its index,
    the others go on. ``msg_type`` is the endpoint's type, None in a batch. ``guard``
    (collect/guard.py) applies the PII policy and rejects suppressed people."""
    out = Prepared()
    received = received_us(env)
    # Once per event on the event loop: plain, valid messages take the fast path (the same
    # rows in fewer steps), the others validate() and enrich().
    fast_row = FastPath(env, received, guard).row
    rows, types = out.rows, out.types
    for index, msg in enumerate(messages):
        row = fast_row(msg, msg_type)
        if row is None:
            start = len(rows)
            prepare_message(out, index, msg, msg_type, env, received)
            if guard is not None and len(rows) > start:
                _guard_rows(out, start, index, guard)
        elif type(row) is str:  # the guard refused it
            out.rejected.append(_rejection(index, row))
        else:
            rows.append(row)
            types[row[3]] += 1
    return out


def _rejection(index: int, code: str) -> dict[str, Any]:
    return {"index": index, "code": code, "field": "message",
            "message": REJECTIONS.get(code, code)}  # fmt: skip


def _guard_rows(out: Prepared, start: int, index: int, guard: Guard) -> None:
    """Apply the guard to message ``index``'s rows (from ``start``), made by validate() and
    enrich() (the fast path applies it before serializing); a rejection takes all of them (a
    page and the calls derived from its query string go together)."""
    guarded = [guarded_row(row, guard) for row in out.rows[start:]]
    code = next((g for g in guarded if isinstance(g, str)), None)
    if code is not None:
        for row in out.rows[start:]:
            out.types[row[3]] -= 1
        del out.rows[start:]
        out.rejected.append(_rejection(index, code))
        return
    out.rows[start:] = guarded


def prepare_message(
    out: Prepared, index: int, msg: Any, msg_type: str | None, env: Enrichment, received: int
) -> None:
    """Add message ``index``'s rows to ``out``, or its rejection."""
    dumps = orjson.dumps
    try:
        if isinstance(msg, dict) and len(dumps(msg)) > MAX_MESSAGE_BYTES:
            raise MessageError(
                "message", f"exceeds {MAX_MESSAGE_BYTES // 1024} KB", "message_too_large"
            )
        enrich(validate(msg, msg_type), env)
        if querystring.applies_to(msg):
            # Derived calls carry the page's timestamp, already corrected: a batch's
            # sentAt must not correct it a second time.
            derived_env = replace(env, sent_at=None) if env.sent_at is not None else env
            batch = [msg] + [
                enrich(validate(derived), derived_env) for derived in querystring.derive(msg)
            ]
            payloads = [dumps(item).decode() for item in batch]
        else:
            batch, payloads = (msg,), (dumps(msg).decode(),)
    except MessageError as exc:
        out.rejected.append({"index": index, **exc.as_dict()})
        return
    except orjson.JSONEncodeError:  # parsed, but nested deeper than orjson writes (254)
        out.rejected.append({"index": index, "code": "invalid_message", "field": "message",
                             "message": "is nested too deeply"})  # fmt: skip
        return
    for item, payload in zip(batch, payloads, strict=True):
        item_type = item["type"]
        out.rows.append(
            (env.workspace_id, env.source_id, item["messageId"], item_type, received, payload)
        )
        out.types[item_type] += 1
