#!/usr/bin/env python
"""Delivery benchmark: Plait's delivery engine to a local webhook server, against a plain
HTTP client sending the same payloads to the same server, in the same run.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/deliveries.py                      # 20,000 events
    .venv/bin/python benchmarks/deliveries.py --events 50000 --batch-size 100

The sink: a minimal ASGI app under uvicorn (httptools), in a process of its own, that
answers 200 to every POST and counts the messages it received (a JSON array counts its
items). The store: a fresh SQLite data directory with a workspace, a webhook destination
(made first, so it receives what follows) and --events demo-like track events from
--people persons, processed by the pipeline (not timed).

Phases, each timed from the first request to the last message received:

  plain     httpx.AsyncClient posting the destination's exact payloads (read from the
            store beforehand), --concurrency requests in flight, --batch-size messages a
            request (a JSON array when more than 1): the baseline.
  plait     Dispatcher.drain of the workspace: reading the processed log, filters, the
            webhook connector (signature, headers), the same concurrency, recording each
            window and moving the checkpoint.

Target (the issue): the webhook path at least 50% of the plain client's throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import sqlalchemy as sa
from ingest import free_port
from machine import describe

from plait.destinations import manage
from plait.destinations.connectors.webhook import signature
from plait.destinations.dispatcher import CONCURRENCY, Dispatcher
from plait.destinations.queue import consumer_name
from plait.log import backend_for
from plait.pipeline.runner import Pipeline
from plait.runtime import tune_gc
from plait.spec import Enrichment, enrich, validate
from plait.store import open_store
from plait.store.workspaces import Workspaces

TARGET = 0.5


def sink(port: int, counter) -> None:
    """The webhook server: 200 to every POST; ``counter`` counts messages."""
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        n = body.count(b'"messageId"') if body else 0
        with counter.get_lock():
            counter.value += n
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"{}"})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                http="httptools", loop="uvloop" if _has_uvloop() else "asyncio")  # fmt: skip


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"[]", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    sys.exit("the sink did not start")


def fill(store, ws: str, source: str, events: int, people: int) -> None:
    """``events`` track events (about 400 bytes each) into the log, processed."""
    log = backend_for(store)
    env = Enrichment(received_at=datetime.now(UTC), workspace_id=ws, source_id=source)
    start = datetime.now(UTC) - timedelta(days=1)
    rows = []
    for i in range(events):
        msg = enrich(validate({
            "type": "track", "userId": f"user-{i % people}", "event": "Product Viewed",
            "properties": {"product_id": f"sku-{i % 997}", "price": 19.99, "category": "skincare",
                           "position": i % 12, "currency": "EUR"},
            "context": {"page": {"path": "/shop", "url": "https://shop.example/shop"},
                        "userAgent": "Mozilla/5.0 (X11; Linux x86_64)"},
            "timestamp": (start + timedelta(seconds=i)).isoformat(),
        }), env)  # fmt: skip
        rows.append((ws, source, msg["messageId"], "track", time.time_ns() // 1000,
                     orjson.dumps(msg).decode()))  # fmt: skip
        if len(rows) == 5000:
            log.append(rows)
            rows = []
    if rows:
        log.append(rows)
    pipeline = Pipeline(store, audiences=False)
    while pipeline.catch_up(ws):
        pass


def payloads(store, ws: str) -> list[bytes]:
    with store.engine.connect() as conn:
        return [
            p.encode()
            for (p,) in conn.execute(sa.text(
                "SELECT coalesce(mp.payload, lm.payload) FROM message_profiles mp JOIN "
                "log_messages lm ON lm.log_offset = mp.log_offset WHERE mp.workspace_id = :ws "
                "ORDER BY mp.log_offset"), {"ws": ws})
        ]  # fmt: skip


async def plain(url: str, bodies: list[bytes], batch: int, concurrency: int, secret: str) -> None:
    requests = [bodies[i] if batch == 1 else b"[" + b",".join(bodies[i:i + batch]) + b"]"
                for i in range(0, len(bodies), batch)]  # fmt: skip
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100)) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                headers = {"Content-Type": "application/json",
                           "X-Signature": signature(body, secret)}  # fmt: skip
                (await client.post(url, content=body, headers=headers)).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def timed(counter, expected: int, run) -> float:
    with counter.get_lock():
        counter.value = 0
    t0 = time.perf_counter()
    run()
    deadline = time.monotonic() + 60
    while counter.value < expected and time.monotonic() < deadline:
        time.sleep(0.001)
    if counter.value < expected:
        sys.exit(f"only {counter.value:,} of {expected:,} messages arrived")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--people", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tune_gc()  # as plait serve and plait worker do
    print(describe())
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    counter = multiprocessing.Value("l", 0)
    server = multiprocessing.get_context("fork").Process(target=sink, args=(port, counter),
                                                          daemon=True)  # fmt: skip
    server.start()
    try:
        wait_ready(url)
        with tempfile.TemporaryDirectory(prefix="plait-deliveries-") as tmp:
            store = open_store(f"sqlite:///{Path(tmp) / 'plait.db'}", sqlite_synchronous="FULL")
            repo = Workspaces(store)
            ws = repo.create_workspace("bench")["id"]
            source = repo.create_source(ws, "Shop", "server")[0]["id"]
            secret = "bench-secret"
            log = backend_for(store)
            t0 = time.perf_counter()
            fill(store, ws, source, args.events, args.people)
            bodies = payloads(store, ws)
            print(f"  {len(bodies):,} events from {args.people:,} people, ~"
                  f"{sum(map(len, bodies)) // len(bodies)} bytes each, processed in "
                  f"{time.perf_counter() - t0:.1f} s (not timed); batch size {args.batch_size}, "
                  f"{CONCURRENCY} requests in flight")  # fmt: skip
            results: dict[str, list[float]] = {"plain": [], "plait": []}
            for run in range(args.runs):
                results["plain"].append(
                    timed(
                        counter,
                        len(bodies),
                        lambda: asyncio.run(
                            plain(url, bodies, args.batch_size, CONCURRENCY, secret)
                        ),
                    )
                )
                key = f"hook{run}"  # a new destination each run, from the log's start
                manage.put(repo, ws, {"key": key, "type": "webhook", "batch_size": args.batch_size,
                                      "settings": {"url": url, "secret": secret}})  # fmt: skip
                log.save_checkpoint(consumer_name(ws, key), 0)
                results["plait"].append(
                    timed(counter, len(bodies), lambda: asyncio.run(Dispatcher(store).drain(ws)))
                )
                manage.save(repo, ws, [])  # the next run's destination alone
                print(f"  run {run + 1}: plain {len(bodies) / results['plain'][-1]:,.0f}/s, "
                      f"plait {len(bodies) / results['plait'][-1]:,.0f}/s")  # fmt: skip
            store.dispose()
    finally:
        server.terminate()
        server.join(5)
    best = {k: len(bodies) / sorted(v)[len(v) // 2] for k, v in results.items()}
    ratio = best["plait"] / best["plain"]
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(
        f"  median: plain client {best['plain']:,.0f} events/s, Plait {best['plait']:,.0f} "
        f"events/s = {ratio:.0%} of the plain client; target >= {TARGET:.0%}: {verdict}"
    )


if __name__ == "__main__":
    main()
