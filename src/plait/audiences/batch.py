"""The batch path: audiences and computed traits evaluated over the lake with DuckDB, in
the workspace's confined connection (plait.lake.query.connect), for backfills, previews and
reconciliations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq

from plait.audiences.definitions import Audience, Definitions
from plait.audiences.evaluate import plain_value
from plait.audiences.sql import audiences_sql, literal, traits_sql
from plait.lake.query import LakeQueryError, connect
from plait.lake.writer import event_files, lake_lock

TIMEOUT_SECONDS = 600.0
PREVIEW_EXACT_EVENTS = 2_000_000  # previews of bigger lakes evaluate a sample of profiles


_ROWS: dict[Path, tuple[tuple[int, int], int]] = {}  # file -> ((size, mtime), rows)


def lake_event_count(lake_dir: Path, workspace_id: str) -> int:
    """The workspace's events in the lake, from the files' footers (each file's count kept
    while its size and time stay the same: a preview should not reopen every file)."""
    total = 0
    for path, _, _ in event_files(lake_dir, workspace_id):
        stat = path.stat()
        seen = _ROWS.get(path)
        if seen is None or seen[0] != (stat.st_size, stat.st_mtime_ns):
            seen = _ROWS[path] = ((stat.st_size, stat.st_mtime_ns),
                                  pq.ParquetFile(path).metadata.num_rows)  # fmt: skip
        total += seen[1]
    return total


def _run(lake_dir: Path, workspace_id: str, sql: str, timeout: float) -> list[tuple]:
    return _session(lake_dir, workspace_id, timeout, lambda con: con.execute(sql).fetchall())


def _session(lake_dir: Path, workspace_id: str, timeout: float, work: Callable) -> Any:
    """``work(connection)`` in the workspace's confined connection, holding the lake lock
    shared, interrupted after ``timeout`` seconds."""
    with lake_lock(Path(lake_dir), workspace_id, shared=True):
        con = connect(Path(lake_dir), workspace_id)
        timer = threading.Timer(timeout, con.interrupt)
        timer.start()
        try:
            return work(con)
        except duckdb.InterruptException:
            error = f"the evaluation took longer than {timeout:g} s"
        except duckdb.Error as exc:
            error = str(exc).strip()
        finally:
            timer.cancel()
            con.close()
    raise LakeQueryError(error)


def audience_members(
    lake_dir: Path,
    workspace_id: str,
    defs: Definitions,
    keys: list[str],
    now: int,
    timeout: float = TIMEOUT_SECONDS,
) -> dict[str, set[str]]:
    """Each audience's members at ``now`` (ms), in one query over the lake."""
    if not keys:
        return {}
    rows = _run(lake_dir, workspace_id, audiences_sql(defs, keys, now), timeout)
    members: dict[str, set[str]] = {key: set() for key in keys}
    for row in rows:
        for key, inside in zip(keys, row[1:], strict=True):
            if inside:
                members[key].add(row[0])
    return members


def trait_values(
    lake_dir: Path,
    workspace_id: str,
    defs: Definitions,
    keys: list[str],
    now: int,
    timeout: float = TIMEOUT_SECONDS,
) -> dict[str, dict[str, Any]]:
    """Each computed trait's value per profile that has one, at ``now``."""
    if not keys:
        return {}
    rows = _run(lake_dir, workspace_id, traits_sql(defs, keys, now), timeout)
    values: dict[str, dict[str, Any]] = {key: {} for key in keys}
    for row in rows:
        for key, text in zip(keys, row[1:], strict=True):
            if text is not None:
                values[key][row[0]] = plain_value(defs.traits[key], orjson.loads(text))
    return values


def preview(
    lake_dir: Path,
    workspace_id: str,
    defs: Definitions,
    audience: Audience,
    now: int,
    sample: int = 10,
    timeout: float = 30.0,
    exact_events: int = PREVIEW_EXACT_EVENTS,
) -> dict[str, Any]:
    """The size of an audience being written (it need not be saved) and a sample of its
    members with their traits. A lake of more than ``exact_events`` events is previewed
    on a sample of its profiles (every k-th by hash, k = events / exact_events): the size
    is then an estimate, ``estimated`` says so, and ``sampled`` gives 1/k."""
    defs = replace(defs, audiences={**defs.audiences, audience.key: audience})
    events = lake_event_count(Path(lake_dir), workspace_id)
    k = max(1, -(-events // exact_events)) if exact_events else 1
    inner = audiences_sql(defs, [audience.key], now, sample=k)
    key = '"' + audience.key.replace('"', '""') + '"'
    sql = (
        f"WITH m AS MATERIALIZED ({inner}) SELECT (SELECT count(*) FROM m WHERE {key}), "
        f"(SELECT count(*) FROM m), (SELECT list(profile_id ORDER BY hash(profile_id)) FROM "
        f"(SELECT profile_id FROM m WHERE {key} ORDER BY hash(profile_id) LIMIT {int(sample)}))"
    )

    def evaluate(con: duckdb.DuckDBPyConnection) -> tuple[int, int, list[tuple]]:
        size, total, ids = con.execute(sql).fetchone()
        ids = ids or []
        # The sample's traits by id, a query of their own: the snapshot's row groups are
        # sorted by profile, so only the groups whose range holds one are read.
        traits = dict(con.execute(
            "SELECT profile_id, traits_json FROM profiles WHERE profile_id IN "
            f"({', '.join(map(literal, ids))})"
        ).fetchall()) if ids else {}  # fmt: skip
        return size, total, [(pid, traits.get(pid)) for pid in ids]

    size, total, found = _session(lake_dir, workspace_id, timeout, evaluate)
    sampled = [(pid, orjson.loads(text) if text else {}) for pid, text in found]
    return {
        "size": size * k,
        "profiles": total * k,
        "estimated": k > 1,
        "sampled": 1 / k,
        "sample": [{"profile_id": pid, "traits": traits} for pid, traits in sampled],
    }
