"""A privacy deletion reaches the lake: after the deletion commits (a step of
``plait.govern.privacy.AFTER_COMMIT_STEPS``), the workspace's event files holding a deleted
message (by log offset, or by one of the person's profile ids) are rewritten without those
rows (through a temporary file and a rename; a file left empty goes), and the profile
snapshot is written again from the store, which no longer holds the person. It holds the
workspace's lake lock, so an export running meanwhile finishes first and is cleaned after.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from plait.govern.erase import Erasure
from plait.lake.writer import (
    current_snapshot,
    event_files,
    lake_lock,
    lock_path,
    write_atomic,
    write_snapshot,
)
from plait.settings import get_settings
from plait.store import Store

_lake_dir: Path | None = None


def use_lake_dir(lake_dir: Path | None) -> None:
    """The lake a deletion in this process reaches (the server's and the CLI's settings);
    by default PLAIT_LAKE_DIR, or data_dir/lake."""
    global _lake_dir
    _lake_dir = None if lake_dir is None else Path(lake_dir)


def lake_dir() -> Path:
    return _lake_dir if _lake_dir is not None else get_settings().resolved_lake_dir()


def _any_in(offsets: list[int], first: int, last: int) -> bool:
    i = bisect.bisect_left(offsets, first)
    return i < len(offsets) and offsets[i] <= last


def remove_rows(
    root: Path, workspace_id: str, offsets: set[int], profile_ids: set[str]
) -> dict[str, int]:
    """Rewrite the workspace's event files without ``offsets`` and ``profile_ids``; the
    caller holds the lake lock."""
    wanted = sorted(offsets)
    files = rows = 0
    for path, first, last in list(event_files(root, workspace_id)):
        if not profile_ids and not _any_in(wanted, first, last):
            continue
        table = pq.read_table(path)
        gone = pc.is_in(table["log_offset"], pa.array(wanted, pa.int64()))
        if profile_ids:
            mine = pc.is_in(table["profile_id"], pa.array(sorted(profile_ids), pa.string()))
            gone = pc.or_(gone, pc.fill_null(mine, False))
        dropped = pc.sum(pc.cast(gone, pa.int64())).as_py() or 0
        if not dropped:
            continue
        kept = table.filter(pc.invert(gone))
        if kept.num_rows:
            write_atomic(kept, path)
        else:
            path.unlink()
        files += 1
        rows += dropped
    return {"event_files_rewritten": files, "event_rows_removed": rows}


def erase_from_lake(store: Store, erasure: Erasure) -> dict[str, Any]:
    """The after-commit step: the person's events out of the lake, the snapshot again."""
    root, ws = lake_dir(), erasure.workspace_id
    person = erasure.person
    if not lock_path(root, ws).exists():
        # No export of the workspace ever started here (an export creates the lock file
        # before it reads the store): nothing to rewrite, and nothing to create.
        return {"event_files_rewritten": 0, "event_rows_removed": 0, "profile_snapshot": "none"}
    with lake_lock(root, ws):
        done: dict[str, Any] = remove_rows(root, ws, person.offsets, person.profile_ids)
        if current_snapshot(root, ws) is not None:
            write_snapshot(store, ws, root)
            done["profile_snapshot"] = "rewritten"
        else:
            done["profile_snapshot"] = "none"
    return done
