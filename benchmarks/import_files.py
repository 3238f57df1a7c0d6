#!/usr/bin/env python
"""File import benchmark: rows/s of `plait import` on a CSV, against reading the same file
with no processing at all, measured in the same run.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/import_files.py                      # SQLite, synchronous=FULL
    .venv/bin/python benchmarks/import_files.py --rows 1000000 --synchronous NORMAL
    .venv/bin/python benchmarks/import_files.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

It writes a CSV of track events (--rows, default 200,000; ~130 bytes a row) into a fresh
temporary directory, then measures:

  (a) baseline: pyarrow.csv.read_csv of the file, every column as a string (multi-threaded),
  (b) baseline: Python's csv.reader over the file, single-threaded (what the importer reads with),
  (c) the import: plait.collect.files.FileImport (fingerprint, mapping, type inference,
      validate + enrich + serialize via plait.collect.ingest.prepare, one log transaction
      per 1,000 rows, progress recorded in `imports` after each) into a fresh store,
  (d) the same file again with --restart: every row read, prepared and found already in
      the log (the cost of a resumed or repeated import).

and checks that the log holds exactly --rows rows afterwards. For PostgreSQL it creates a
fresh database on the given server and drops it at the end.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from machine import describe

from plait.collect.files import FileImport, ImportOptions
from plait.log import backend_for
from plait.store import open_store
from plait.store.workspaces import Workspaces

HEADER = ["userId", "event", "timestamp", "revenue", "currency", "product_id", "quantity",
          "plan", "coupon", "in_stock"]  # fmt: skip
EVENTS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Signed Up"]


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    start = 1_704_067_200  # 2024-01-01
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for i in range(rows):
            ts = time.gmtime(start + i * 13)
            writer.writerow([
                f"user-{rng.randrange(50_000)}", rng.choice(EVENTS),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", ts), f"{rng.uniform(1, 500):.2f}",
                "EUR", f"sku-{rng.randrange(2_000):05d}", str(rng.randrange(1, 5)),
                rng.choice(["free", "pro", "team"]),
                "SPRING24" if rng.random() < 0.1 else "", rng.choice(["true", "false"]),
            ])  # fmt: skip


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def read_pyarrow(path: Path) -> int:
    import pyarrow as pa  # loaded by main() before the timing
    import pyarrow.csv as pacsv

    types = {name: pa.string() for name in HEADER}
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    return table.num_rows


def read_csv_module(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        return sum(1 for _ in reader)


def fresh_postgres(url: str) -> tuple[str, sa.URL, str]:
    admin = sa.engine.make_url(url).set(drivername="postgresql+psycopg")
    name = f"plait_bench_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin.set(database=name).render_as_string(hide_password=False), admin, name


def drop_postgres(admin: sa.URL, name: str) -> None:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--database-url", help="a PostgreSQL server (default: embedded SQLite)")
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous pragma")
    args = parser.parse_args()
    # Here, not at the top: ingest.py imports this module (fresh_postgres) and has no use
    # for pyarrow. Loaded before read_pyarrow is timed.
    import pyarrow as pa
    import pyarrow.csv  # noqa: F401

    tmp = Path(tempfile.mkdtemp(prefix="plait-import-bench-"))
    pg = None
    try:
        path = tmp / "events.csv"
        write_csv(path, args.rows)
        size = path.stat().st_size
        if args.database_url:
            url, *pg = fresh_postgres(args.database_url)
        else:
            url = f"sqlite:///{tmp / 'plait.db'}"
        store = open_store(url, args.synchronous)
        repo = Workspaces(store)
        workspace = repo.create_workspace("bench")
        source, _ = repo.create_source(workspace["id"], "files", "file")

        print(f"machine: {describe()}, pyarrow {pa.__version__}")
        store_label = store.kind + (
            f" synchronous={args.synchronous}" if store.kind == "sqlite" else ""
        )
        print(f"file: {args.rows:,} rows, {size / 1e6:.1f} MB; store: {store_label}; "
              f"chunk {args.chunk_size} rows per transaction")  # fmt: skip

        def load(restart: bool):
            options = ImportOptions(msg_type="track", chunk_size=args.chunk_size, restart=restart)
            return FileImport(store, workspace["id"], source["id"], path, options).run()

        results = {}
        for label, fn in [
            ("pyarrow.csv.read_csv (baseline)", lambda: read_pyarrow(path)),
            ("csv.reader (baseline)", lambda: read_csv_module(path)),
            ("plait import", lambda: load(False)),
            ("plait import --restart (all dups)", lambda: load(True)),
        ]:
            seconds, value = timed(fn)
            rows = value if isinstance(value, int) else value.rows_done
            if not isinstance(value, int):
                assert value.accepted == args.rows and value.rejected == 0, value
            results[label] = args.rows / seconds
            assert rows == args.rows, (label, rows)
            print(f"  {label:<36} {seconds:8.2f} s  {args.rows / seconds:>12,.0f} rows/s  "
                  f"{size / seconds / 1e6:8.1f} MB/s")  # fmt: skip
        count = backend_for(store).count(workspace["id"])
        assert count == args.rows, f"the log holds {count} rows, expected {args.rows}"
        store.dispose()

        imported = results["plait import"]
        print(f"import / pyarrow read: {imported / results['pyarrow.csv.read_csv (baseline)']:.3f}"
              f"   import / csv.reader: {imported / results['csv.reader (baseline)']:.3f}"
              f"   (log holds {count:,} rows: none lost, none duplicated)")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pg:
            drop_postgres(*pg)


if __name__ == "__main__":
    main()
