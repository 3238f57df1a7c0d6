"""Real-time audience membership latency under load (run by hand, never a test).

    .venv/bin/python benchmarks/audience_latency.py                 # 5,000 events/s, 60 s
    .venv/bin/python benchmarks/audience_latency.py --rate 2000 --duration 20 --probes 20

``plait serve`` (fresh SQLite data dir, pipeline on) runs a workspace with 12 audiences and
6 computed traits (behaviours with windows and filters, traits, computed traits, accounts,
audiences naming audiences), takes a steady demo load at ``--rate`` through /v1/batch
(benchmarks/pipeline.py's open-loop load process), and meanwhile probes send, each for a
new user, one batch with an identify (a unique trait) and two qualifying orders. From the
2xx of that batch, each probe polls

- the Profile API for the trait: the pipeline's own freshness, the baseline measured in the
  same run, on the same messages;
- ``GET /api/v1/profiles/user_id:<id>/audiences`` for the membership of ``bench_buyers``:
  the audience's latency (the qualifying orders evaluated by the audience stage).

Target (the issue): membership latency p99 <= 1 s at 5,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from ingest import Usage, free_port, loop_factory
from machine import describe
from pipeline import (
    backlog,
    fresh_store,
    pct,
    start_load,
    start_server,
    stop_server,
    wait_caught_up,
)

from plait.audiences import manage

TARGET_RATE = 5_000
TARGET_P99_S = 1.0

TRAITS = [
    {"key": "orders_30d", "kind": "count", "event": "Order Completed", "window": "30 days"},
    {"key": "revenue_90d", "kind": "sum", "event": "Order Completed", "property": "revenue",
     "window": "90 days"},
    {"key": "favourite_category", "kind": "most_frequent", "event": "Product Viewed",
     "property": "category"},
    {"key": "days_since_order", "kind": "days_since_last", "event": "Order Completed"},
    {"key": "pages_7d", "kind": "count", "type": "page", "window": "7 days"},
    {"key": "last_plan", "kind": "last", "type": "identify", "property": "traits.plan"},
]  # fmt: skip
AUDIENCES = {
    "bench_buyers": 'performed "Order Completed" at least 2 times in last 30 days '
                    "where properties.revenue > 50",
    "lapsed": 'performed "Order Completed" and not performed "Order Completed" in last 14 days',
    "browsers": 'performed "Product Viewed" at least 3 times in last 7 days '
                'and not performed "Order Completed" in last 7 days',
    "pro": 'traits.plan = "pro"',
    "eu_plus": 'traits.plan in ["plus", "pro"] and traits.address.country in ["FR", "DE", "ES"]',
    "b2b": "account.traits.employees > 100",
    "spenders": "computed.revenue_90d >= 200",
    "fans": 'computed.favourite_category = "Apparel"',
    "recent": "computed.days_since_order <= 7",
    "unhappy": 'performed "Call Completed" where properties.satisfaction <= 2',
    "vip": 'audience "spenders" and audience "bench_buyers"',
    "active": "computed.pages_7d >= 3 or computed.orders_30d >= 1",
}  # fmt: skip


@dataclass
class Probe:
    base: str
    space: str
    write_key: str
    token: str
    run: str
    poll_interval: float
    timeout: float
    slots: asyncio.Semaphore
    trait_s: list[float] = field(default_factory=list)  # baseline: the trait visible
    audience_s: list[float] = field(default_factory=list)  # the membership visible
    errors: dict[str, int] = field(default_factory=dict)


async def probe(p: Probe, client: httpx.AsyncClient, index: int, at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    user, value = f"probe-{p.run}-{index}", f"{p.run}-{index}"
    stamp = datetime.now(UTC).isoformat()
    batch = [
        {"type": "identify", "userId": user, "traits": {"bench_probe": value}, "timestamp": stamp},
        {"type": "track", "userId": user, "event": "Order Completed",
         "properties": {"revenue": 80}, "timestamp": stamp},
        {"type": "track", "userId": user, "event": "Order Completed",
         "properties": {"revenue": 95}, "timestamp": stamp},
    ]  # fmt: skip
    resp = await client.post(f"{p.base}/v1/batch", json={"batch": batch}, auth=(p.write_key, ""))
    acked = time.perf_counter()
    if resp.status_code >= 300:
        p.errors[f"batch {resp.status_code}"] = p.errors.get(f"batch {resp.status_code}", 0) + 1
        return
    trait_seen = audience_seen = None
    traits_url = f"{p.base}/api/v1/profiles/user_id:{user}/audiences"
    profile_url = f"{p.base}/v1/spaces/{p.space}/collections/users/profiles/user_id:{user}/traits"
    headers = {"Authorization": f"Bearer {p.token}"}
    while time.perf_counter() - acked < p.timeout and (trait_seen is None or audience_seen is None):
        async with p.slots:
            if trait_seen is None:
                r = await client.get(profile_url, auth=(p.token, ""))
                if r.status_code == 200 and r.json()["traits"].get("bench_probe") == value:
                    trait_seen = time.perf_counter() - acked
            if audience_seen is None:
                r = await client.get(traits_url, headers=headers)
                if r.status_code == 200 and any(
                    a["key"] == "bench_buyers" for a in r.json()["audiences"]
                ):
                    audience_seen = time.perf_counter() - acked
        await asyncio.sleep(p.poll_interval)
    p.trait_s.append(trait_seen if trait_seen is not None else math.inf)
    p.audience_s.append(audience_seen if audience_seen is not None else math.inf)


async def run_probes(p: Probe, count: int, start: float, duration: float) -> None:
    gap = duration / (count + 1)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async with asyncio.TaskGroup() as group:
            for i in range(count):
                group.create_task(probe(p, client, i, start + (i + 1) * gap))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="load, events/s")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--probes", type=int, default=60)
    parser.add_argument("--poll-interval", type=float, default=0.01)
    parser.add_argument("--probe-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load-concurrency", type=int, default=8)
    parser.add_argument("--synchronous", default="FULL")
    parser.add_argument("--without-audiences", action="store_true",
                        help="the baseline: the same load and probes, nothing defined")  # fmt: skip
    args = parser.parse_args()
    args.separate_worker = False
    print(describe())
    with tempfile.TemporaryDirectory(prefix="plait-audience-latency-") as tmp_name:
        tmp = Path(tmp_name)
        store, repo, ws, _, write_key = fresh_store(tmp, args.synchronous)
        _, token = repo.create_token(ws, "bench", ["profiles:read", "audiences:read"])
        audiences = [{"key": k, "definition": d} for k, d in AUDIENCES.items()]
        docs = {"computed_traits": TRAITS, "audiences": audiences}
        if not args.without_audiences:
            manage.check(repo, ws, docs)
            manage.save(repo, ws, docs)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(tmp / "server.log", "wb")
        server = start_server(args, tmp, port, log)
        print(f"  {len(AUDIENCES)} audiences, {len(TRAITS)} computed traits; load "
              f"{int(args.rate * args.duration):,} demo messages at {args.rate:,.0f}/s; "
              f"{args.probes} probes")  # fmt: skip
        load = None
        try:
            load, results = start_load(args, base, write_key)
            usage = Usage(server.pid)
            p = Probe(base, ws, write_key, token, uuid.uuid4().hex[:8], args.poll_interval,
                      args.probe_timeout, asyncio.Semaphore(16))  # fmt: skip
            start = time.perf_counter()
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(run_probes(p, args.probes, start, args.duration))
            sent = results.get(timeout=args.duration * 3 + 120)
            behind = backlog(store, ws)
            cores = usage.stop(0.0)
            catch_up = wait_caught_up(store, ws)
        finally:
            if load is not None:
                load.join(10)
                if load.is_alive():
                    load.terminate()
            stop_server(server)
            log.close()
        with store.engine.connect() as conn:
            sizes = manage.sizes(conn, ws)
        store.dispose()
    rate = sent["accepted"] / sent["seconds"] if sent["seconds"] else 0.0
    print(f"  load achieved: {sent['accepted']:,} messages in {sent['seconds']:.1f} s = "
          f"{rate:,.0f} events/s (at most {sent['lag_s'] * 1000:,.0f} ms behind schedule); "
          f"backlog at the end {behind:,}, caught up {catch_up:.1f} s later; {cores}")  # fmt: skip
    print(f"  audience sizes at the end: {dict(sorted(sizes.items()))}")
    never = sum(1 for s in p.audience_s if not math.isfinite(s))
    for name, values in (("trait visible (baseline)", p.trait_s),
                         ("audience membership", p.audience_s)):  # fmt: skip
        p50, p99, most = (x * 1000 for x in (pct(values, 50), pct(values, 99), max(values)))
        print(f"  {name:26} p50 {p50:7,.0f} ms   p99 {p99:7,.0f} ms   max {most:7,.0f} ms")
    if p.errors or never:
        print(f"  errors: {p.errors}; never visible: {never}")
    if args.without_audiences:
        print(f"\n  baseline (nothing defined): {rate:,.0f} events/s sustained")
        sys.exit(0)
    p99 = pct(p.audience_s, 99)
    met = "met" if p99 <= TARGET_P99_S and rate >= 0.95 * args.rate else "NOT met"
    print(f"\n  target: membership p99 <= {TARGET_P99_S:.0f} s at {args.rate:,.0f} events/s: "
          f"{p99 * 1000:,.0f} ms at {rate:,.0f} events/s -> {met}")  # fmt: skip
    sys.exit(0)


if __name__ == "__main__":
    main()
