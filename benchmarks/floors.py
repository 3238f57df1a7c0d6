"""Floors: what the unavoidable parts of two measured paths cost in this Python, so a
target can be judged reachable or not before more tuning.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/floors.py                  # both
    .venv/bin/python benchmarks/floors.py --only ingest
    .venv/bin/python benchmarks/floors.py --only clustering --links 5000000

ingest      Per event of benchmarks/ingest.py's batch body: orjson parsing the body,
            orjson writing each message back, and Plait's own SQLite log append of the
            rows (SQLiteLogBackend.append: dedup window, multi-row inserts, commit with
            synchronous=FULL) in groups of 3,000. No HTTP, validation or enrichment: the
            durable path can never be cheaper than their sum.
clustering  benchmarks/pipeline.py's demo-shaped links: scipy (factorize + CC) against
            the leanest loop that clusters message by message in log order (dict from
            identifier to a profile's identifier dict; union of the younger into the
            older), without what the resolver must also keep (last seen, edges, lineage,
            limits). It is the floor for resolving message by message, as
            plait.identity.resolver.Resolver does for each message: no such resolver in
            pure Python beats this loop's ratio to scipy. The rebuild
            (plait.identity.bulk.resolve_all) is not bound by it: it finds with numpy the
            messages that change the graph and walks only those in Python, not every
            message.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from ingest import batch_template, fill
from machine import cpu_model
from pipeline import link_lists, scipy_components

from plait.log import backend_for
from plait.runtime import tune_gc
from plait.store import open_store

GROUP_ROWS = 3_000  # about what the log writer commits at a time under full load


def ingest_floor(repeat: int = 2_000) -> None:
    body = fill(batch_template(), uuid.uuid4().hex)
    t0 = time.perf_counter()
    for _ in range(repeat):
        messages = orjson.loads(body)["batch"]
    parse = (time.perf_counter() - t0) / (repeat * len(messages))
    t0 = time.perf_counter()
    for _ in range(repeat):
        payloads = [orjson.dumps(msg).decode() for msg in messages]
    write = (time.perf_counter() - t0) / (repeat * len(messages))

    with tempfile.TemporaryDirectory() as tmp:
        log = backend_for(open_store(f"sqlite:///{Path(tmp) / 'plait.db'}"))
        groups = 200
        rows = [
            [
                ("ws_floor", "src_floor", uuid.uuid4().hex, "track", 1, payloads[i % 100])
                for i in range(GROUP_ROWS)
            ]
            for _ in range(groups)
        ]
        t0 = time.perf_counter()
        for group in rows:
            log.append(group)
        append = (time.perf_counter() - t0) / (groups * GROUP_ROWS)
        log.close()
    total = parse + write + append
    print(
        f"ingest, per event ({len(body):,}-byte batch body of {len(messages)} events):\n"
        f"  orjson parse {parse * 1e6:.2f} us + orjson write {write * 1e6:.2f} us "
        f"+ SQLite log append {append * 1e6:.2f} us = {total * 1e6:.2f} us "
        f"(at most {1 / total:,.0f} events/s on one core, before HTTP, validation and "
        "enrichment)"
    )


def clustering_floor(n_links: int, seed: int) -> None:
    with link_lists(n_links, seed) as links:
        left, right = links.left, links.right
        scipy = scipy_components(left, right)["total_s"]
        t0 = time.perf_counter()
        owner: dict = {}  # identifier -> its profile's identifier dict
        first: dict = {}  # id(profile dict) -> the offset that created it
        for offset, (a, b) in enumerate(zip(left, right, strict=True)):
            pa, pb = owner.get(a), owner.get(b)
            if pa is not None and pa is pb:
                continue
            if pa is None and pb is None:
                profile = {a: None, b: None}
                first[id(profile)] = offset
                owner[a] = owner[b] = profile
            elif pa is None or pb is None:
                profile, ident = (pb, a) if pa is None else (pa, b)
                profile[ident] = None
                owner[ident] = profile
            else:
                older, younger = (pa, pb) if first[id(pa)] <= first[id(pb)] else (pb, pa)
                older.update(younger)
                for ident in younger:
                    owner[ident] = older
        lean = time.perf_counter() - t0
    print(
        f"clustering, {len(left):,} links: scipy (factorize + CC) {scipy:.2f} s, "
        f"leanest message-by-message loop {lean:.2f} s = {lean / scipy:.1f}x scipy "
        "(the floor for a per-message resolver; resolve_all does not walk every message)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("ingest", "clustering"))
    parser.add_argument("--links", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {cpu_model()}")
    tune_gc()  # as plait serve and plait worker do
    if args.only in (None, "ingest"):
        ingest_floor()
    if args.only in (None, "clustering"):
        clustering_floor(args.links, args.seed)


if __name__ == "__main__":
    main()
