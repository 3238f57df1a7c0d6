"""A sync's state in the store (``sync_runs``): its cursor, whether it runs, its last run
and its totals."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from plait.collect.files import (
    plain,
)
from plait.store import Store
from plait.store.db import now_ms
from plait.store.schema import sync_runs

logger = logging.getLogger("plait.reverse_etl")

KEPT_REJECTIONS = 20
STALE_RUN_MS = 3_600_000  # a run marked running this long ago died with its process


@dataclass
class RunResult:
    rows: int = 0
    sent: int = 0  # new in the log, or queued at the destination
    repeats: int = 0  # already in the log (read again)
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    cursor: Any = None


def status(store: Store, workspace_id: str, key: str) -> dict[str, Any]:
    with store.engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(sync_runs).where(
                    sync_runs.c.workspace_id == workspace_id, sync_runs.c.sync == key
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return {
            "runs": False,
            "cursor": None,
            "last_run_at": None,
            "last_status": None,
            "last_error": None,
            "last_rows": 0,
            "rows": 0,
            "sent": 0,
            "rejected": 0,
        }
    state = {str(k): v for k, v in row.items()}  # ("cursor" is a quoted name)
    state.pop("workspace_id"), state.pop("sync"), state.pop("running_since")
    state["cursor"] = _cursor_value(state["cursor"])
    if state["last_error"] and state["last_error"].startswith("["):
        state["rejections"] = orjson.loads(state.pop("last_error"))
        state["last_error"] = None
    return {"runs": True, **state}


def _cursor_text(value: Any) -> str:
    if isinstance(value, datetime):
        return orjson.dumps({"kind": "datetime", "value": value.isoformat()}).decode()
    if isinstance(value, date):
        return orjson.dumps({"kind": "date", "value": value.isoformat()}).decode()
    return orjson.dumps({"kind": "plain", "value": plain(value)}).decode()


def _cursor_value(text: str | None) -> Any:
    if text is None:
        return None
    doc = orjson.loads(text)
    if doc["kind"] == "datetime":
        return datetime.fromisoformat(doc["value"])
    if doc["kind"] == "date":
        return date.fromisoformat(doc["value"])
    return doc["value"]


def load_cursor(store: Store, workspace_id: str, key: str) -> Any:
    with store.engine.connect() as conn:
        text = conn.scalar(sa.select(sync_runs.c.cursor).where(
            sync_runs.c.workspace_id == workspace_id, sync_runs.c.sync == key))  # fmt: skip
    return _cursor_value(text)


def save_cursor(store: Store, workspace_id: str, key: str, value: Any) -> None:
    with store.write() as conn:
        conn.execute(sync_runs.update().where(
            sync_runs.c.workspace_id == workspace_id, sync_runs.c.sync == key,
        ).values(cursor=_cursor_text(value)))  # fmt: skip


def claim(store: Store, workspace_id: str, key: str) -> bool:
    """Mark the sync running (False: a live run has it)."""
    now = now_ms()
    c = sync_runs.c
    this = (c.workspace_id == workspace_id, c.sync == key)
    with store.write() as conn:
        if conn.scalar(sa.select(sa.func.count()).where(*this)) == 0:
            conn.execute(
                sync_runs.insert().values(
                    workspace_id=workspace_id, sync=key, last_rows=0, rows=0, sent=0, rejected=0
                )
            )
        claimed = conn.execute(sync_runs.update().where(
            *this, sa.or_(c.running_since.is_(None), c.running_since < now - STALE_RUN_MS),
        ).values(running_since=now))  # fmt: skip
        return claimed.rowcount == 1


def finish(store: Store, workspace_id: str, key: str, result: RunResult,
            error: str | None = None) -> None:  # fmt: skip
    kept = error or (orjson.dumps(result.rejections).decode() if result.rejections else None)
    c = sync_runs.c
    with store.write() as conn:
        conn.execute(sync_runs.update().where(c.workspace_id == workspace_id, c.sync == key)
                     .values(running_since=None, last_run_at=now_ms(),
                             last_status="failed" if error else "ok", last_error=kept,
                             last_rows=result.rows, rows=c.rows + result.rows,
                             sent=c.sent + result.sent,
                             rejected=c.rejected + result.rejected))  # fmt: skip
    if error:
        logger.warning("reverse ETL: sync %s failed (%s): %s", key, workspace_id, error)
