#!/usr/bin/env python
"""Reverse ETL benchmark: a sync of a PostgreSQL table into the log as identify calls,
against the same rows read by a plain client and against the same rows imported from a
CSV file (``plait import``'s path), in the same run.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/reverse_etl.py                  # 100,000 rows
    .venv/bin/python benchmarks/reverse_etl.py --rows 300000 --url postgresql://postgres@127.0.0.1:5432/test

  read    psycopg streaming ``SELECT … ORDER BY updated_at`` in chunks: the database's
          ceiling for the query.
  import  the same rows as a CSV file through FileImport into a fresh embedded store:
          Plait's other way in for the same data.
  sync    reverse_etl.run into a fresh embedded store: the query after the cursor in
          chunks, rows mapped, validated and enriched, appended to the log, the cursor
          recorded after each chunk.
  again   the sync run a second time: nothing after the cursor (the cost of a due run
          with nothing new).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from machine import describe
from psycopg import sql

from plait import reverse_etl
from plait.collect.files import FileImport, ImportOptions
from plait.runtime import tune_gc
from plait.store import open_store
from plait.store.workspaces import Workspaces

COLUMNS = ("id", "email", "plan", "seats", "country", "updated_at")


def make_table(url: str, table: str, rows: int) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    plans = ("free", "team", "pro", "enterprise")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, email text, plan text, "
                             "seats int, country text, updated_at timestamptz)")
                     .format(sql.Identifier(table)))  # fmt: skip
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as c:
            for i in range(rows):
                c.write_row((f"user-{i}", f"user{i}@shop.example", plans[i % 4], i % 50,
                             ("FR", "DE", "US")[i % 3], base + timedelta(seconds=i)))  # fmt: skip


def plain_read(url: str, table: str) -> int:
    n = 0
    with psycopg.connect(url) as conn, conn.cursor(name="bench") as cur:
        cur.itersize = 1000
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY updated_at").format(sql.Identifier(table)))
        for _ in cur:
            n += 1
    return n


def fresh_store(tmp: Path, name: str):
    store = open_store(f"sqlite:///{tmp / name}.db")
    repo = Workspaces(store)
    ws = repo.create_workspace("bench")["id"]
    repo.create_source(ws, "CRM", "database")
    return store, repo, ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tune_gc()  # as plait serve and plait worker do
    print(describe())
    table = f"bench_customers_{uuid.uuid4().hex[:8]}"
    make_table(args.url, table, args.rows)
    results: dict[str, list[float]] = {"read": [], "import": [], "sync": [], "again": []}
    try:
        with tempfile.TemporaryDirectory(prefix="plait-retl-") as tmp:
            tmp = Path(tmp)
            csv_path = tmp / "customers.csv"
            with psycopg.connect(args.url) as conn, open(csv_path, "w", newline="") as f:
                out = csv.writer(f)
                out.writerow(COLUMNS)
                out.writerows(conn.execute(sql.SQL("SELECT * FROM {} ORDER BY updated_at")
                                           .format(sql.Identifier(table))))  # fmt: skip
            for run in range(args.runs):
                t = time.perf_counter()
                assert plain_read(args.url, table) == args.rows
                results["read"].append(time.perf_counter() - t)

                store, repo, ws = fresh_store(tmp, f"import{run}")
                options = ImportOptions(msg_type="identify", fields={"userId": "id"})
                t = time.perf_counter()
                with FileImport(store, ws, repo.get_source(ws, "CRM")["id"], csv_path,
                                options) as job:  # fmt: skip
                    imported = job.run()
                results["import"].append(time.perf_counter() - t)
                assert imported.accepted == args.rows, imported
                store.dispose()

                store, repo, ws = fresh_store(tmp, f"sync{run}")
                reverse_etl.put(repo, ws, {
                    "key": "crm", "source": "CRM", "database": args.url, "cursor": "updated_at",
                    "query": f"SELECT * FROM {table}", "map": {"userId": "id"}})  # fmt: skip
                t = time.perf_counter()
                synced = reverse_etl.run(store, ws, "crm", None)
                results["sync"].append(time.perf_counter() - t)
                assert synced.sent == args.rows, synced
                t = time.perf_counter()
                assert reverse_etl.run(store, ws, "crm", None).rows == 0
                results["again"].append(time.perf_counter() - t)
                store.dispose()
                print(f"  run {run + 1}: " + ", ".join(
                    f"{k} {args.rows / v[-1]:,.0f} rows/s" for k, v in results.items()
                    if k != "again") + f", again {results['again'][-1] * 1000:.0f} ms")  # fmt: skip
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    median = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(f"  median: plain read {args.rows / median['read']:,.0f} rows/s, file import "
          f"{args.rows / median['import']:,.0f} rows/s, sync {args.rows / median['sync']:,.0f} "
          f"rows/s ({median['import'] / median['sync']:.0%} of the import's speed); a run "
          f"with nothing new {median['again'] * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
