"""Parquet files in Segment's warehouse schema (the same tables, columns and types as the
PostgreSQL warehouse: plait.destinations.warehouse_schema), for a data lake: DuckDB,
Spark, Athena or pandas read them where they lie.

    <path>/<table>/part-<batch>.parquet     one file a table and batch
    <path>/<table>/_columns.json            each column's type, from its first value

- **Types hold across files.** A column's type is recorded the first time it appears and
  every later file writes it so (values of another type converted, as the warehouse does,
  or left null); a new property adds a column to the files from then on (read them with
  ``union_by_name``).
- **Retries write the same file.** A file is named by a hash of its batch's delivery keys
  and written under a temporary name, then renamed: a batch sent again after a crash or a
  retry replaces its own files. Delivery is at least once, so readers deduplicate on
  ``id`` (the messageId) after a replay, as with any data lake.
- ``users`` cannot be upserted in a file: each batch writes its users' latest traits;
  the newest ``uuid_ts`` per ``id`` is the user.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from plait.destinations import warehouse_schema as ws
from plait.destinations.connectors.base import Connector, Item, Outcome, Setting, known_settings
from plait.store.workspaces import Invalid

COMPRESSIONS = ("zstd", "snappy", "gzip", "none")
SETTINGS = {
    "path": Setting(
        required=True, example="/var/lib/plait/parquet", about="the directory the files go to"
    ),
    "compression": Setting("choice", example="zstd", choices=COMPRESSIONS),
}
ARROW = {"text": pa.string(), "bigint": pa.int64(), "double precision": pa.float64(),
         "boolean": pa.bool_(), "timestamptz": pa.timestamp("us", tz="UTC")}  # fmt: skip
COLUMNS_FILE = "_columns.json"


class ParquetFiles(Connector):
    name = "parquet"
    max_batch = 50_000
    default_batch = 5000  # a file a table and batch: not too many small files
    lanes = 1  # one writer per directory keeps each table's column types in one place

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        path = settings.get("path")
        if not isinstance(path, str) or not path.strip():
            raise Invalid(f"{where}.path", "required: the directory the files go to")
        compression = settings.get("compression", "zstd")
        if compression not in COMPRESSIONS:
            raise Invalid(f"{where}.compression", f"one of {', '.join(COMPRESSIONS)}")
        return {"path": str(Path(path).expanduser().resolve()), "compression": compression}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        return await asyncio.to_thread(self.write, settings, items)

    def write(self, settings: dict[str, Any], items: list[Item]) -> list[Outcome]:
        tables = ws.tables_of([item.message for item in items])
        batch = hashlib.sha1("\n".join(i.key for i in items).encode()).hexdigest()[:20]
        try:
            with self._lock:
                for table, rows in tables.items():
                    self._write_table(Path(settings["path"]) / table, rows, batch,
                                      settings["compression"])  # fmt: skip
        except OSError as exc:  # a full disk, a missing mount: worth retrying
            return [Outcome(False, retry=True, response=f"{type(exc).__name__}: {exc}"[:1000])
                    ] * len(items)  # fmt: skip
        return [Outcome(True, response=f"written to {len(tables)} tables")] * len(items)

    def _write_table(self, folder: Path, rows: list[dict[str, Any]], batch: str,
                     compression: str) -> None:  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        kinds = _read_columns(folder)
        added = False
        for row in rows:
            for column, value in row.items():
                if column not in kinds and value is not None:
                    kinds[column] = ws.column_type(column, value)
                    added = True
        if added:  # recorded before a file uses the new columns
            _replace(folder / COLUMNS_FILE, orjson.dumps(kinds, option=orjson.OPT_INDENT_2))
        columns = sorted(c for c in {c for row in rows for c in row} if c in kinds)
        arrays = {}
        for column in columns:
            to = ws.converter(kinds[column])
            arrays[column] = pa.array([to(row.get(column)) for row in rows],
                                      type=ARROW[kinds[column]])  # fmt: skip
        target = folder / f"part-{batch}.parquet"
        temp = target.with_suffix(".parquet.tmp")
        pq.write_table(pa.table(arrays), temp,
                       compression=None if compression == "none" else compression)  # fmt: skip
        os.replace(temp, target)


def _read_columns(folder: Path) -> dict[str, str]:
    try:
        return orjson.loads((folder / COLUMNS_FILE).read_bytes())
    except FileNotFoundError:
        return {}


def _replace(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
