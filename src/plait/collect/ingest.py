"""From parsed messages to log rows: validate, enrich, derive, serialize."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from plait.collect import querystring
from plait.log.backends import Row
from plait.spec import MAX_MESSAGE_BYTES, Enrichment, MessageError, enrich, validate


@dataclass(slots=True)
class Prepared:
    rows: list[Row] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    types: Counter = field(default_factory=Counter)


def prepare(messages: list[Any], msg_type: str | None, env: Enrichment) -> Prepared:
    """Turn a request's messages into log rows; a bad message is rejected with its index,
    the others go on. ``msg_type`` is the endpoint's type, None in a batch."""
    out = Prepared()
    received_us = int(env.received_at.timestamp() * 1_000_000)
    # This loop runs once per event on the event loop: names are bound locally.
    rows, rejected, types, dumps = out.rows, out.rejected, out.types, orjson.dumps
    workspace_id, source_id = env.workspace_id, env.source_id
    for index, msg in enumerate(messages):
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
            rejected.append({"index": index, **exc.as_dict()})
            continue
        except orjson.JSONEncodeError:  # parsed, but nested deeper than orjson writes (254)
            rejected.append({"index": index, "code": "invalid_message", "field": "message",
                             "message": "is nested too deeply"})  # fmt: skip
            continue
        for item, payload in zip(batch, payloads, strict=True):
            item_type = item["type"]
            rows.append(
                (workspace_id, source_id, item["messageId"], item_type, received_us, payload)
            )
            types[item_type] += 1
    return out
