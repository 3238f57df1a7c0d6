"""Putting Segment messages straight into the log (validated and enriched like the API
does), for tests of what reads the log."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from plait.log import backend_for
from plait.spec import Enrichment, enrich, validate
from plait.store import Store


def append(
    store: Store, workspace_id: str, messages: list[dict[str, Any]], source_id: str = "src_test"
) -> list[dict[str, Any]]:
    """Append ``messages`` (in order) and return them as stored."""
    env = Enrichment(received_at=datetime.now(UTC), workspace_id=workspace_id, source_id=source_id)
    now_us = time.time_ns() // 1000
    stored, rows = [], []
    for msg in messages:
        msg = enrich(validate(copy.deepcopy(msg)), env)
        stored.append(msg)
        payload = orjson.dumps(msg).decode()
        rows.append((workspace_id, source_id, msg["messageId"], msg["type"], now_us, payload))
    backend_for(store).append(rows)
    return stored
