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
    for index, msg in enumerate(messages):
        try:
            if isinstance(msg, dict) and len(orjson.dumps(msg)) > MAX_MESSAGE_BYTES:
                raise MessageError(
                    "message", f"exceeds {MAX_MESSAGE_BYTES // 1024} KB", "message_too_large"
                )
            enrich(validate(msg, msg_type), env)
            batch = [msg]
            if querystring.applies_to(msg):
                # Derived calls carry the page's timestamp, already corrected: a batch's
                # sentAt must not correct it a second time.
                derived_env = replace(env, sent_at=None) if env.sent_at is not None else env
                batch += [
                    enrich(validate(derived), derived_env) for derived in querystring.derive(msg)
                ]
            payloads = [orjson.dumps(item).decode() for item in batch]
        except MessageError as exc:
            out.rejected.append({"index": index, **exc.as_dict()})
            continue
        except orjson.JSONEncodeError:  # parsed, but nested deeper than orjson writes (254)
            out.rejected.append({"index": index, "code": "invalid_message", "field": "message",
                                 "message": "is nested too deeply"})  # fmt: skip
            continue
        for item, payload in zip(batch, payloads, strict=True):
            out.rows.append(
                (
                    env.workspace_id,
                    env.source_id,
                    item["messageId"],
                    item["type"],
                    received_us,
                    payload,
                )
            )
            out.types[item["type"]] += 1
    return out
