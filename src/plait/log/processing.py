"""A batch of log records on its way through the pipeline's stages.

Each stage is a function ``stage(batch)`` that reads what earlier stages set on the items
and adds its own; all of them write through ``batch.conn``, one transaction that also
saves the checkpoint, so a batch's effects land whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from plait.log.backends import LogRecord


@dataclass(slots=True)
class Item:
    record: LogRecord
    message: dict[str, Any] = field(default_factory=dict)
    timestamp_ms: int = 0  # the corrected event time
    identifiers: list[tuple[str, str]] = field(default_factory=list)
    profile_id: str | None = None  # set by the resolve stage
    account_id: str | None = None  # group calls: the account
    governed_payload: str | None = None  # set by governance when it changed the message


@dataclass
class Batch:
    workspace_id: str
    items: list[Item]
    conn: sa.Connection
    # What stages share beyond the items: the identity rules, the graph, the merges...
    context: dict[str, Any] = field(default_factory=dict)
