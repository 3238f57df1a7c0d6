#!/usr/bin/env python
"""Warehouse benchmark: Plait's PostgreSQL warehouse destination against a plain COPY of
the same rows into the same tables, in the same run, on the local PostgreSQL.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/warehouse.py                       # 100,000 events
    .venv/bin/python benchmarks/warehouse.py --events 300000 --url postgresql://postgres@127.0.0.1:5432/test

The store: a fresh SQLite data directory with --events messages (85% track events of 4
names with 5-7 properties and a nested context, 15% identifies with traits) from
--people persons, processed by the pipeline (not timed). Each run uses a schema of its
own in the --url database, dropped at the end.

  copy    the rows the warehouse schema gives for those messages (computed beforehand, not
          timed), COPYed into temporary tables and inserted into the same tables as
          Plait's (created beforehand), in batches of the same size: PostgreSQL's ceiling.
  plait   Dispatcher.drain of a postgres destination: reading the processed log,
          parsing, the warehouse schema, types and conversions, COPY and INSERT ... ON
          CONFLICT, each batch recorded with the checkpoint.

Target (the issue): warehouse load >= 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
from machine import describe
from psycopg import sql

from plait.destinations import manage
from plait.destinations.connectors.postgres import Postgres
from plait.destinations.dispatcher import Dispatcher
from plait.destinations.queue import consumer_name
from plait.destinations.warehouse_schema import tables_of
from plait.log import backend_for
from plait.pipeline.runner import Pipeline
from plait.runtime import tune_gc
from plait.spec import Enrichment, enrich, validate
from plait.store import open_store
from plait.store.workspaces import Workspaces

TARGET = 50_000
EVENTS = ["Product Viewed", "Product Added", "Order Completed", "Signed Up"]


def message(i: int, people: int, start: datetime, rng: random.Random) -> dict:
    user = f"user-{rng.randrange(people)}"
    context = {"app": {"version": "3.2.1", "build": 412}, "locale": "fr-FR",
               "page": {"path": "/shop", "url": "https://shop.example/shop"}}  # fmt: skip
    at = (start + timedelta(milliseconds=i * 10)).isoformat()
    if rng.random() < 0.15:
        traits = {"email": f"{user}@example.com", "plan": rng.choice(["free", "pro"]),
                  "address": {"city": "Lyon", "country": "FR"}, "logins": i % 50}  # fmt: skip
        return {"type": "identify", "userId": user, "timestamp": at, "context": context,
                "traits": traits}  # fmt: skip
    return {"type": "track", "userId": user, "event": rng.choice(EVENTS), "timestamp": at,
            "context": context,
            "properties": {"product_id": f"sku-{i % 997}", "price": round(rng.uniform(5, 90), 2),
                           "quantity": rng.randint(1, 4), "category": "skincare",
                           "currency": "EUR", "tags": ["new", "promo"]}}  # fmt: skip


def fill(store, ws: str, source: str, events: int, people: int) -> list[dict]:
    log = backend_for(store)
    env = Enrichment(received_at=datetime.now(UTC), workspace_id=ws, source_id=source)
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(days=1)
    stored, rows = [], []
    for i in range(events):
        msg = enrich(validate(message(i, people, start, rng)), env)
        stored.append(msg)
        rows.append((ws, source, msg["messageId"], msg["type"], time.time_ns() // 1000,
                     orjson.dumps(msg).decode()))  # fmt: skip
        if len(rows) == 10_000:
            log.append(rows)
            rows = []
    if rows:
        log.append(rows)
    pipeline = Pipeline(store, audiences=False)
    while pipeline.catch_up(ws):
        pass
    return stored


def plain_copy(url: str, schema: str, batches: list[dict[str, list[dict]]]) -> None:
    """The same rows COPYed into temporary tables, then inserted, batch by batch."""
    with psycopg.connect(url, autocommit=True) as conn:
        for tables in batches:
            with conn.transaction():
                for n, (table, rows) in enumerate(tables.items()):
                    columns = sorted({c for r in rows for c in r})
                    names = sql.SQL(", ").join(map(sql.Identifier, columns))
                    temp = sql.Identifier(f"c_{n}")
                    target = sql.Identifier(schema, table)
                    conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP")
                                 .format(temp, target))  # fmt: skip
                    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN")
                                            .format(temp, names)) as copy:  # fmt: skip
                        for r in rows:
                            copy.write_row([r.get(c) for c in columns])
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT (id) DO NOTHING"
                        ).format(target, names, names, temp)
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=Postgres.default_batch)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tune_gc()  # as plait serve and plait worker do
    print(describe())
    with tempfile.TemporaryDirectory(prefix="plait-warehouse-") as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'plait.db'}")
        repo = Workspaces(store)
        ws = repo.create_workspace("bench")["id"]
        source = repo.create_source(ws, "Shop", "server")[0]["id"]
        t0 = time.perf_counter()
        stored = fill(store, ws, source, args.events, args.people)
        print(
            f"  {len(stored):,} messages from {args.people:,} people processed in "
            f"{time.perf_counter() - t0:.1f} s (not timed); batches of {args.batch_size:,}"
        )
        batches = [tables_of(stored[i:i + args.batch_size])
                   for i in range(0, len(stored), args.batch_size)]  # fmt: skip
        rows = sum(len(r) for b in batches for r in b.values())
        print(f"  {rows:,} warehouse rows ({rows / len(stored):.2f} a message)")
        log = backend_for(store)
        results: dict[str, list[float]] = {"copy": [], "plait": []}
        schemas = []
        try:
            for run in range(args.runs):
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                schemas.append(schema)
                key = f"wh{run}"
                manage.put(repo, ws, {"key": key, "type": "postgres", "batch_size": args.batch_size,
                                      "settings": {"url": args.url, "schema": schema}})  # fmt: skip
                log.save_checkpoint(consumer_name(ws, key), 0)  # from the log's start
                t = time.perf_counter()
                asyncio.run(Dispatcher(store).drain(ws))
                results["plait"].append(time.perf_counter() - t)
                status = manage.status(store, ws, key)
                if status["delivered"] != len(stored) or status["behind"]:
                    sys.exit(f"the destination did not load everything: {status}")
                with psycopg.connect(args.url, autocommit=True) as conn:  # the same tables, empty
                    for table in {t for b in batches for t in b}:
                        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema, table)))
                t = time.perf_counter()
                plain_copy(args.url, schema, batches)
                results["copy"].append(time.perf_counter() - t)
                manage.save(repo, ws, [])
                print(
                    f"  run {run + 1}: plain COPY {len(stored) / results['copy'][-1]:,.0f} "
                    f"events/s, Plait {len(stored) / results['plait'][-1]:,.0f} events/s"
                )
        finally:
            with psycopg.connect(args.url, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                                 .format(sql.Identifier(schema)))  # fmt: skip
            store.dispose()
    median = {k: len(stored) / sorted(v)[len(v) // 2] for k, v in results.items()}
    verdict = "met" if median["plait"] >= TARGET else "NOT met"
    print(
        f"  median: plain COPY {median['copy']:,.0f} events/s, Plait {median['plait']:,.0f} "
        f"events/s ({median['plait'] / median['copy']:.0%} of it); target >= {TARGET:,}: "
        f"{verdict}"
    )


if __name__ == "__main__":
    main()
