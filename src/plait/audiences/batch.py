"""The batch path: audiences and computed traits evaluated over the lake with DuckDB, in
the workspace's confined connection (plait.lake.query.connect), for backfills, previews and
reconciliations."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.parquet as pq

from plait.audiences.definitions import Audience, Definitions
from plait.audiences.evaluate import plain_value
from plait.audiences.sql import audiences_sql, traits_sql
from plait.lake.query import LakeQueryError, connect
from plait.lake.writer import event_files, lake_lock

TIMEOUT_SECONDS = 600.0
PREVIEW_EXACT_EVENTS = 2_000_000  # previews of bigger lakes evaluate a sample of profiles


def lake_event_count(lake_dir: Path, workspace_id: str) -> int:
    """The workspace's events in the lake, from the files' footers."""
    return sum(pq.ParquetFile(path).metadata.num_rows
               for path, _, _ in event_files(lake_dir, workspace_id))  # fmt: skip


def _run(lake_dir: Path, workspace_id: str, sql: str, timeout: float) -> list[tuple]:
    with lake_lock(Path(lake_dir), workspace_id, shared=True):
        return _fetch(Path(lake_dir), workspace_id, sql, timeout)


def _fetch(lake_dir: Path, workspace_id: str, sql: str, timeout: float) -> list[tuple]:
    con = connect(lake_dir, workspace_id)
    timer = threading.Timer(timeout, con.interrupt)
    timer.start()
    try:
        rows = con.execute(sql).fetchall()
    except duckdb.InterruptException:
        error = f"the evaluation took longer than {timeout:g} s"
    except duckdb.Error as exc:
        error = str(exc).strip()
    else:
        return rows
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
        f"WITH m AS MATERIALIZED ({inner}), s AS (SELECT profile_id FROM m WHERE {key} "
        f"ORDER BY hash(profile_id) LIMIT {int(sample)}) "
        f"SELECT (SELECT count(*) FROM m WHERE {key}), (SELECT count(*) FROM m), "
        f"(SELECT list(struct_pack(id := s.profile_id, traits := p.traits_json) "
        f"ORDER BY hash(s.profile_id)) FROM s JOIN profiles p USING (profile_id))"
    )
    size, total, found = _run(lake_dir, workspace_id, sql, timeout)[0]
    sampled = [(r["id"], orjson.loads(r["traits"]) if r["traits"] else {}) for r in found or []]
    return {
        "size": size * k,
        "profiles": total * k,
        "estimated": k > 1,
        "sampled": 1 / k,
        "sample": [{"profile_id": pid, "traits": traits} for pid, traits in sampled],
    }
