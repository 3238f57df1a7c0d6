#!/usr/bin/env python
"""Identity & profiles benchmark: pipeline throughput, freshness through the Profile API,
and the rebuild's clustering against scipy's connected components, in the same run.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/pipeline.py                          # every phase, full size
    .venv/bin/python benchmarks/pipeline.py --phases throughput --events 20000
    .venv/bin/python benchmarks/pipeline.py --phases freshness --rate 500 --probes 30 --duration 10
    .venv/bin/python benchmarks/pipeline.py --phases clustering --links 100000

Phases:

  throughput  The demo stream (plait.demo.Cast, time order) goes through the collection
              code (plait.collect.ingest.prepare: validate, enrich, derive the ajs_ calls)
              straight into the log of a fresh embedded SQLite store; that part is timed
              apart and is not the measure. Then ``Pipeline(store).catch_up(ws)`` runs over
              the whole log (normalize -> resolve -> profile): wall and CPU time, events/s,
              the time per stage, and the resulting profiles, merges and identifiers.
              The demo makes ~42 log rows per person, so --events picks the number of
              people (unless --people is given) and the stream is cut at --events.
  freshness   ``plait serve`` (fresh SQLite data dir, pipeline on) takes a steady demo load
              at --rate events/s through /v1/batch from a separate process (batches made
              beforehand, sent open-loop on a fixed schedule), while --probes identify calls,
              spread over --duration, each carry a unique userId and trait. For each,
              freshness = the moment a Profile API read (GET .../profiles/user_id:{id}/traits,
              every --poll-interval per probe, at most --poll-concurrency reads in flight in
              all) first shows the trait, minus the moment the identify's 2xx arrived: an
              upper bound, by up to one poll interval plus one read's latency.
  clustering  --links identifier links shaped like the demo's (each link = two identifiers
              of one message: user_id-anonymous_id, user_id-email, user_id-phone,
              email-anonymous_id for till receipts, anonymous_id-phone for support calls;
              1-3 devices, repeat sightings) in log order. scipy: factorize the identifier
              tuples to integers with a dict (the fastest way found: np.unique over the
              joined strings took 4-8x as long), build a CSR matrix, connected_components.
              Plait: the same links in the same order, each a message of two identifiers,
              through plait.identity.bulk.resolve_all (what `plait rebuild` resolves the
              log with), with limits so high none can trigger, so its profiles must be
              exactly the connected components; the benchmark checks that they are.

Targets (the issue): >= 20,000 events/s through the pipeline; freshness p99 <= 1 s at
5,000 events/s; the rebuild's clustering within 3x of scipy's time (factorize + CC).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import httpx
import numpy as np
import orjson
import sqlalchemy as sa
from ingest import Usage, free_port, loop_factory
from machine import describe

from plait.collect.ingest import prepare
from plait.demo import AREA_CODES, EMAIL_DOMAINS, FIRST_NAMES, LAST_NAMES, Cast, batches
from plait.identity.bulk import LogIdentities, resolve_all
from plait.identity.resolver import Graph
from plait.identity.rules import BUILT_IN_TYPES, from_dict
from plait.log import backend_for
from plait.pipeline.runner import BATCH_SIZE, STAGES, Pipeline, consumer_name
from plait.runtime import tune_gc
from plait.spec import Enrichment
from plait.spec.timestamps import parse_timestamp
from plait.store import open_store
from plait.store.schema import identifiers, lineage, message_profiles, profiles
from plait.store.workspaces import Workspaces

TARGET_EVENTS_S = 20_000
TARGET_P99_S = 1.0
TARGET_RATE = 5_000  # events/s of load under which freshness is measured
TARGET_RATIO = 3.0


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (inf counts: a probe that never became visible)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def secs(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fresh_store(tmp: Path, synchronous: str):
    """A fresh embedded store with one workspace and one source."""
    store = open_store(f"sqlite:///{tmp / 'plait.db'}", synchronous)
    repo = Workspaces(store)
    ws = repo.create_workspace("bench", "Benchmark")
    source, write_key = repo.create_source(ws["id"], "bench", "server")
    return store, repo, ws["id"], source["id"], write_key


def sqlite_settings(store, synchronous: str) -> str:
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        prag = {
            name: raw.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "page_size", "wal_autocheckpoint")
        }
    settings = ", ".join(f"{k}={v}" for k, v in prag.items())
    return f"SQLite {sqlite3.sqlite_version}, synchronous={synchronous}, {settings}"


# 1. Throughput ---------------------------------------------------------------------------


def rows_per_person(seed: int, days: float, end: datetime, sample: int = 400) -> float:
    """Log rows per demo person (messages plus the calls derived from email clicks),
    from the first ``sample`` people (a cast's first people do not depend on its size)."""
    cast = Cast(sample, seed, days, end)
    messages = [msg for i in range(sample) for _, msg in cast.journey(i)]
    env = Enrichment(received_at=datetime.now(UTC), workspace_id="ws_x", source_id="src_x")
    return len(prepare(messages, None, env).rows) / sample


def fill_log(store, ws: str, source: str, cast: Cast, events: int, chunk: int = 10_000):
    """Append the cast's stream, cut at ``events`` rows, as the collection API would
    (each chunk one request's worth of enrichment). Returns the rows appended, the
    messages rejected or deduplicated (0 expected), the seconds, and the event time (epoch
    seconds) of the last row."""
    log = backend_for(store)
    stream = cast.messages()
    appended = lost = 0
    last = cast.begin
    started = time.perf_counter()
    try:
        while appended < events:
            messages = list(islice(stream, chunk))
            if not messages:
                break
            env = Enrichment(received_at=datetime.now(UTC), workspace_id=ws, source_id=source)
            prepared = prepare(messages, None, env)
            rows = prepared.rows[: events - appended]
            lost += len(prepared.rejected) + len(rows) - log.append(rows)
            appended += len(rows)
            last = parse_timestamp(orjson.loads(rows[-1][5])["timestamp"]).timestamp()
            progress(appended - len(rows), appended, events, time.perf_counter() - started)
    finally:
        log.close()
    if appended < events and sys.stdout.isatty():
        print()  # the stream ended first: end the progress line
    return appended, lost, time.perf_counter() - started, last


def progress(before: int, done: int, total: int, seconds: float) -> None:
    """One line rewritten in place on a terminal; in a file, one every 10%."""
    line = f"    appended {done:,} / {total:,} rows ({done / seconds:,.0f}/s)"
    if sys.stdout.isatty():
        print(f"\r{line}", end="\n" if done >= total else "", flush=True)
    elif done >= total or done * 10 // total > before * 10 // total:
        print(line, flush=True)


def timed_stages(totals: Counter) -> list:
    """The pipeline's stages, each adding its wall time to ``totals``."""

    def wrap(stage):
        def run(batch) -> None:
            t0 = time.perf_counter()
            stage(batch)
            totals[stage.__name__] += time.perf_counter() - t0

        return run

    return [wrap(stage) for stage in STAGES]


def derived_counts(store, ws: str) -> dict:
    with store.engine.connect() as conn:

        def count(table, *where) -> int:
            query = sa.select(sa.func.count()).select_from(table).where(*where)
            return conn.execute(query).scalar()

        return {
            "messages": count(message_profiles, message_profiles.c.workspace_id == ws),
            "without_profile": count(
                message_profiles,
                message_profiles.c.workspace_id == ws,
                message_profiles.c.profile_id.is_(None),
            ),
            "profiles": count(
                profiles,
                profiles.c.workspace_id == ws,
                profiles.c.kind == "user",
                profiles.c.merged_into.is_(None),
            ),
            "accounts": count(
                profiles, profiles.c.workspace_id == ws, profiles.c.kind == "account"
            ),
            "merges": count(lineage, lineage.c.workspace_id == ws, lineage.c.kind == "merge"),
            "identifiers": count(
                identifiers, identifiers.c.workspace_id == ws, identifiers.c.type != "group_id"
            ),
        }


def throughput_phase(args, tmp: Path) -> dict:
    end = datetime.now(UTC)
    per_person = rows_per_person(args.seed, args.days, end)
    people = args.people or math.ceil(args.events / per_person * 1.05)
    store, _, ws, source, _ = fresh_store(tmp, args.synchronous)
    try:
        print(f"  store: {sqlite_settings(store, args.synchronous)}")
        print(
            f"  demo: ~{per_person:.1f} log rows per person; {people:,} people "
            f"(seed {args.seed}, {args.days:g} days), stream cut at {args.events:,} rows"
        )
        cast = Cast(people, args.seed, args.days, end)
        rows, lost, seconds, last = fill_log(store, ws, source, cast, args.events)
        seen = sum(1 for start in cast.starts if start <= last)  # people with a message
        print(
            f"  log filled (not measured): {rows:,} rows from {seen:,} people in {seconds:.1f} s"
            f"{f', {lost:,} REJECTED OR DEDUPLICATED' if lost else ''}"
        )
        del cast
        gc.collect()

        totals: Counter = Counter()
        pipeline = Pipeline(store, args.batch_size, stages=timed_stages(totals))
        wall0, cpu0 = time.perf_counter(), time.process_time()
        processed = pipeline.catch_up(ws)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        rate = processed / wall
        other = wall - sum(totals.values())
        split = ", ".join(f"{name} {s:.1f} s" for name, s in totals.items())
        print(
            f"  pipeline: {processed:,} events in {wall:.1f} s wall, {cpu:.1f} s CPU "
            f"(batch {args.batch_size:,}) = {rate:,.0f} events/s\n"
            f"    stages: {split}, log read + checkpoint + commit {other:.1f} s"
        )
        counts = derived_counts(store, ws)
        print(
            f"    result: {counts['profiles']:,} profiles (for {seen:,} people), "
            f"{counts['merges']:,} merges, {counts['identifiers']:,} identifiers, "
            f"{counts['accounts']:,} accounts; {counts['messages']:,} messages processed, "
            f"{counts['without_profile']:,} without a profile"
        )
        if processed != rows or counts["messages"] != rows:
            print(f"    CHECK FAILED: {rows:,} rows in the log, {processed:,} processed")
        return {
            "events": processed,
            "people": seen,
            "rows_per_person": per_person,
            "fill_seconds": seconds,
            "wall_seconds": wall,
            "cpu_seconds": cpu,
            "events_s": rate,
            "batch_size": args.batch_size,
            "stage_seconds": {**totals, "other": other},
            **counts,
        }
    finally:
        store.dispose()


# 2. Freshness ----------------------------------------------------------------------------


def plait_env(args, tmp: Path) -> dict[str, str]:
    """The environment of the plait processes on the store in ``tmp``."""
    env = dict(os.environ)
    env.update(
        PLAIT_DATA_DIR=str(tmp),
        PLAIT_DATABASE_URL=f"sqlite:///{tmp / 'plait.db'}",
        PLAIT_SQLITE_SYNCHRONOUS=args.synchronous,
        # --separate-worker: the pipeline in a `plait worker` of its own, not serve's.
        PLAIT_PIPELINE="false" if args.separate_worker else "true",
        PLAIT_PIPELINE_POLL_SECONDS="0.05",
        PLAIT_WORKERS="1",
        PLAIT_LOG_LEVEL="WARNING",
    )
    return env


def plait_command() -> list[str]:
    plait = Path(sys.executable).parent / "plait"
    return [str(plait) if plait.exists() else shutil.which("plait") or "plait"]


def start_server(args, tmp: Path, port: int, log) -> subprocess.Popen:
    """``plait serve`` on the store in ``tmp`` (output to the file ``log``), once healthy."""
    env = plait_env(args, tmp)
    cmd = plait_command()
    cmd += ["serve", "--host", "127.0.0.1", "--port", str(port), "--no-demo"]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"server exited:\n{(tmp / 'server.log').read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(server)
    sys.exit("server did not start within 30 s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def send_load(url, write_key, rate, events, seed, concurrency, started, results) -> None:
    """The background load, in its own process so that posting it does not delay the
    probes' clock: ``events`` demo messages at ``rate``, made before the clock starts."""
    tune_gc()
    # Enough people for 38 messages each (+10): the demo averages ~41, so the stream
    # does not run out before ``events``.
    people = math.ceil(events / 38) + 10
    ready = list(batches(islice(Cast(people, seed).messages(), events), 100))
    started.set()
    cpu = time.process_time()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        out = runner.run(paced_load(url, write_key, ready, rate, concurrency))
    results.put({**out, "cpu": time.process_time() - cpu})


async def paced_load(url: str, write_key: str, ready, rate: float, concurrency: int) -> dict:
    """Batches (of serialized messages) leave on a fixed schedule, the k-th message at
    k / rate s, whatever the replies' latency, with up to ``concurrency`` requests in
    flight; ``lag_s`` says how far behind the schedule it fell. (plait.demo.send makes its
    batches while it sends and, once behind, makes up at most one batch; here the batches
    are ready beforehand and, once behind, each leaves as soon as a request slot is free.)"""
    out = {"sent": 0, "accepted": 0, "rejected": 0, "failed": 0, "lag_s": 0.0}
    errors = out["errors"] = Counter()
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        base_url=url, auth=(write_key, ""), timeout=30, limits=limits, headers=headers
    ) as client:

        async def post(batch: list[bytes]) -> None:
            body = b'{"batch":[' + b",".join(batch) + b"]}"
            try:
                resp = await client.post("/v1/batch", content=body)
                if resp.status_code < 300:
                    rejected = len(resp.json().get("rejected") or ())
                    out["accepted"] += len(batch) - rejected
                    out["rejected"] += rejected
                else:
                    out["failed"] += len(batch)
                    errors[f"http {resp.status_code}"] += 1
            except httpx.HTTPError as exc:
                out["failed"] += len(batch)
                errors[type(exc).__name__] += 1
            finally:
                slots.release()

        tasks = set()
        start = time.monotonic()
        for batch in ready:
            due = start + out["sent"] / rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            out["lag_s"] = max(out["lag_s"], time.monotonic() - due)
            task = asyncio.create_task(post(batch))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            out["sent"] += len(batch)
        await asyncio.gather(*tasks)
        out["seconds"] = time.monotonic() - start
    return out


@dataclass
class Probes:
    base: str
    space: str
    write_key: str
    token: str
    run: str
    poll_interval: float
    timeout: float
    poll_slots: asyncio.Semaphore
    freshness: list[float] = field(default_factory=list)  # seconds; inf: never visible
    ack_ms: list[float] = field(default_factory=list)  # the identify's own latency
    polls: int = 0
    errors: Counter = field(default_factory=Counter)


async def probe(p: Probes, client: httpx.AsyncClient, index: int, at: float) -> None:
    """One identify with a unique userId and trait; then poll its traits until visible."""
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    user_id, value = f"probe-{p.run}-{index}", f"{p.run}-{index}"
    body = {
        "userId": user_id,
        "traits": {"bench_probe": value},
        "timestamp": datetime.now(UTC).isoformat(),
    }
    sent = time.perf_counter()
    try:
        resp = await client.post(f"{p.base}/v1/identify", json=body, auth=(p.write_key, ""))
    except httpx.HTTPError as exc:
        p.errors[f"identify {type(exc).__name__}"] += 1
        return
    acked = time.perf_counter()
    if resp.status_code >= 300:
        p.errors[f"identify {resp.status_code}"] += 1
        return
    p.ack_ms.append((acked - sent) * 1000)
    url = f"{p.base}/v1/spaces/{p.space}/collections/users/profiles/user_id:{user_id}/traits"
    next_poll = acked
    while time.perf_counter() - acked < p.timeout:
        async with p.poll_slots:
            try:
                resp = await client.get(url, params={"include": "bench_probe"}, auth=(p.token, ""))
            except httpx.HTTPError as exc:
                resp = None
                p.errors[f"profile api {type(exc).__name__}"] += 1
            seen = time.perf_counter()
        p.polls += 1
        if resp is not None and resp.status_code == 200:
            if resp.json()["traits"].get("bench_probe") == value:
                p.freshness.append(seen - acked)
                return
        elif resp is not None and resp.status_code != 404:
            p.errors[f"profile api {resp.status_code}"] += 1
        next_poll = max(next_poll + p.poll_interval, time.perf_counter())
        await asyncio.sleep(next_poll - time.perf_counter())
    p.freshness.append(float("inf"))


async def run_probes(p: Probes, count: int, start: float, duration: float) -> None:
    """``count`` probes evenly over the load's ``duration``, none in its first or last gap."""
    gap = duration / (count + 1)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async with asyncio.TaskGroup() as group:
            for i in range(count):
                group.create_task(probe(p, client, i, start + (i + 1) * gap))


def backlog(store, ws: str) -> int:
    """Log rows the pipeline has not processed yet."""
    log = backend_for(store)
    return log.last_offset() - log.checkpoint(consumer_name(ws))


def wait_caught_up(store, ws: str, limit: float = 120) -> float:
    """Seconds until the pipeline has processed the whole log."""
    started = time.perf_counter()
    while backlog(store, ws) > 0 and time.perf_counter() - started < limit:
        time.sleep(0.05)
    return time.perf_counter() - started


def start_load(args, base: str, write_key: str):
    """The load's process, once it is about to send; and the queue its figures come on."""
    mp = multiprocessing.get_context("spawn")  # a clean process: no inherited threads
    started, results = mp.Event(), mp.Queue()
    events = int(args.rate * args.duration)
    load = mp.Process(
        target=send_load,
        args=(base, write_key, args.rate, events, args.seed + 1, args.load_concurrency)
        + (started, results),
        daemon=True,
    )
    load.start()
    if not started.wait(600):
        load.terminate()
        sys.exit("the load generator did not start")
    return load, results


def freshness_phase(args, tmp: Path) -> dict:
    store, repo, ws, _, write_key = fresh_store(tmp, args.synchronous)
    _, token = repo.create_token(ws, "bench-reader", ["profiles:read"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = open(tmp / "server.log", "wb")  # closed with the server
    server = start_server(args, tmp, port, server_log)
    worker = None
    if args.separate_worker:
        worker = subprocess.Popen([*plait_command(), "worker"], env=plait_env(args, tmp),
                                  stdout=server_log, stderr=subprocess.STDOUT)  # fmt: skip
    load = None
    where = "a plait worker process" if worker else "the process plait serve starts"
    print(f"  store: {sqlite_settings(store, args.synchronous)}; pipeline {where}")
    print(
        f"  load: {int(args.rate * args.duration):,} demo messages at {args.rate:,.0f}/s "
        f"through /v1/batch (100 a batch, open loop, up to {args.load_concurrency} in flight, "
        f"seed {args.seed + 1}); {args.probes} probes; Profile API reads every "
        f"{args.poll_interval * 1000:.0f} ms per probe, at most {args.poll_concurrency} in flight"
    )
    try:
        load, results = start_load(args, base, write_key)
        usage, cpu0 = Usage(server.pid), time.process_time()
        probes = Probes(
            base=base,
            space=ws,
            write_key=write_key,
            token=token,
            run=uuid.uuid4().hex[:8],
            poll_interval=args.poll_interval,
            timeout=args.probe_timeout,
            poll_slots=asyncio.Semaphore(args.poll_concurrency),
        )
        start = time.perf_counter()
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run_probes(probes, args.probes, start, args.duration))
        sent = results.get(timeout=args.duration * 3 + 120)
        seconds = time.perf_counter() - start
        behind = backlog(store, ws)
        # CPU over the load only, not the catch-up after it.
        client_cpu = (sent["cpu"] + time.process_time() - cpu0) / (time.perf_counter() - start)
        cores = usage.stop(client_cpu)
        catch_up = wait_caught_up(store, ws)
    finally:
        if load is not None:
            load.join(10)
            if load.is_alive():
                load.terminate()
        stop_server(server)
        if worker is not None:
            stop_server(worker)
        server_log.close()
        store.dispose()
    result = freshness_result(args, sent, probes, seconds)
    result.update(backlog_at_end=behind, catch_up_seconds=catch_up, server_cores=usage.server)
    print_freshness(result, sent)
    print(
        f"    pipeline backlog at the end: {behind:,} rows, caught up "
        f"{catch_up:.1f} s later\n    {cores}"
    )
    return result


def freshness_result(args, sent: dict, p: Probes, seconds: float) -> dict:
    fresh = p.freshness
    return {
        "rate_target": args.rate,
        "events_s": sent["accepted"] / sent["seconds"] if sent["seconds"] else 0.0,
        "accepted": sent["accepted"],
        "load_lag_s": sent["lag_s"],
        "probes": len(fresh),
        "never_visible": sum(1 for f in fresh if not math.isfinite(f)),
        "p50_s": pct(fresh, 50),
        "p99_s": pct(fresh, 99),
        "max_s": max(fresh, default=float("nan")),
        "ack_p50_ms": pct(p.ack_ms, 50),
        "ack_p99_ms": pct(p.ack_ms, 99),
        "polls": p.polls,
        "polls_s": p.polls / seconds,
        "errors": dict(p.errors),
    }


def print_freshness(r: dict, sent: dict) -> None:
    load_errors = f" {dict(sent['errors'])}" if sent["errors"] else ""
    print(
        f"  load achieved: {sent['accepted']:,} of {sent['sent']:,} messages acknowledged in "
        f"{sent['seconds']:.1f} s = {r['events_s']:,.0f} events/s, at most "
        f"{sent['lag_s'] * 1000:,.0f} ms behind schedule; {sent['rejected']:,} rejected, "
        f"{sent['failed']:,} failed{load_errors}"
    )
    never = f", {r['never_visible']} NEVER VISIBLE" if r["never_visible"] else ""
    errors = f", errors {r['errors']}" if r["errors"] else ""
    print(
        f"  freshness over {r['probes']} probes: p50 {r['p50_s'] * 1000:,.0f} ms, "
        f"p99 {r['p99_s'] * 1000:,.0f} ms, max {r['max_s'] * 1000:,.0f} ms{never}{errors}\n"
        f"    identify 2xx latency p50 {r['ack_p50_ms']:.1f} ms, p99 {r['ack_p99_ms']:.1f} ms; "
        f"{r['polls']:,} Profile API reads ({r['polls_s']:,.0f}/s)"
    )


# 3. Clustering ---------------------------------------------------------------------------

# Identifier types by priority, highest first (user_id, email, then alphabetically): the
# order the resolver receives a message's identifiers in; a link's anchor comes first.
USER, EMAIL, ANON, PHONE = "user_id", "email", "anonymous_id", "phone"
# Means measured on the demo stream (2,000 people through prepare() and extract()): per
# signed-up person 1.7 devices, each seen with the user id ~19 times after login, ~39
# links; the people who never sign up carry one identifier a message: no links.
DEVICE_WEIGHTS = (0.45, 0.40, 0.15)
DEVICE_SIGHTINGS = 19
_MASK48, _MASK64 = (1 << 48) - 1, (1 << 64) - 1


@dataclass
class Links:
    idents: list[tuple[str, str]]  # every identifier; a and b index into it
    a: np.ndarray  # the anchor (higher priority) of each link, in log order
    b: np.ndarray
    ts: np.ndarray  # event time of each link, ms
    people: int


def _value(kind: str, node: int, person: int) -> str:
    """A demo-like identifier value, unique per node (odd multipliers are bijections)."""
    h = (node * 0x9E3779B97F4A7C15) & _MASK64
    if kind == USER:
        return f"usr_{h & _MASK48:012x}"
    if kind == EMAIL:
        first, last = FIRST_NAMES[person % 40], LAST_NAMES[person % 36]
        return f"{first}.{last}.{h & _MASK48:x}@{EMAIL_DOMAINS[person % 4]}".lower()
    if kind == PHONE:
        return f"+1{AREA_CODES[person % 10]}{2 + person // 10 % 8}{person // 80:06d}"
    g = (node * 0xD6E8FEB86659FD93) & _MASK64
    return (
        f"{h >> 32:08x}-{h >> 16 & 0xFFFF:04x}-4{h & 0xFFF:03x}-a{g >> 52:03x}-{g & _MASK48:012x}"
    )


def _prefix(kind_prefix: str, value: str) -> str:
    return f"{kind_prefix}-{value.replace('-', '')[:16]}"


def demo_links(n_links: int, seed: int, days: float = 30.0) -> Links:
    """``n_links`` links of demo-shaped people, people interleaved in time, each person's
    links in random order (so parts of a person form apart and merge, as devices browsed
    before a login do)."""
    rng = np.random.default_rng(seed)
    per_person = DEVICE_SIGHTINGS * 1.7 + 1.7 + 1 + 2 * 1.5 + 0.45 + 0.3
    people = math.ceil(n_links / per_person * 1.05)
    while True:
        links = _people_links(rng, people, days)
        if len(links.a) >= n_links:
            break
        people = math.ceil(people * 1.1)
    keep = slice(0, n_links)
    return Links(links.idents, links.a[keep], links.b[keep], links.ts[keep], links.people)


def _people_links(rng, people: int, days: float) -> Links:
    devices = rng.choice((1, 2, 3), people, p=DEVICE_WEIGHTS)
    clicks = rng.integers(0, 4, people)  # email clicks: a derived identify and track each
    pos = np.where(rng.random(people) < 0.3, rng.integers(1, 3, people), 0)  # till receipts
    calls = np.where(rng.random(people) < 0.2, rng.integers(1, 3, people), 0)  # support calls
    sizes = 3 + devices + clicks + pos + calls  # + user_id, email, phone
    base = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    user, email, phone = base, base + 1, base + 2

    def members(counts, offset):
        """(person, node) of each member of a per-person group of ``counts`` nodes."""
        owner = np.repeat(np.arange(people), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return owner, base[owner] + offset[owner] + within

    dev_p, dev = members(devices, np.full(people, 3))
    clk_p, clk = members(clicks, 3 + devices)
    pos_p, pos_n = members(pos, 3 + devices + clicks)
    call_p, call_n = members(calls, 3 + devices + clicks + pos)
    sightings = rng.geometric(1 / DEVICE_SIGHTINGS, len(dev))
    groups = [  # (person, anchor, other, times seen)
        (dev_p, user[dev_p], dev, sightings),  # logged-in pages and tracks, identifies
        (np.arange(people), user, email, devices),  # the sign-up and each login
        (np.arange(people), user, phone, np.ones(people, int)),  # the sign-up
        (clk_p, user[clk_p], clk, np.full(len(clk), 2)),  # derived identify + track
        (pos_p, email[pos_p], pos_n, np.ones(len(pos_n), int)),  # receipt: email + pos-id
        (call_p, call_n, phone[call_p], np.ones(len(call_n), int)),  # anonymous_id > phone
    ]
    person = np.concatenate([np.repeat(g[0], g[3]) for g in groups])
    a = np.concatenate([np.repeat(g[1], g[3]) for g in groups])
    b = np.concatenate([np.repeat(g[2], g[3]) for g in groups])
    # A person is active for a few days from a start spread over the period.
    day_ms = 86_400_000
    start = rng.random(people) * (days - 5) * day_ms
    ts = (start[person] + rng.random(len(person)) * 5 * day_ms).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    kinds = np.full(int(sizes.sum()), ANON, dtype=object)
    kinds[user], kinds[email], kinds[phone] = USER, EMAIL, PHONE
    owner = np.repeat(np.arange(people), sizes)
    idents = [
        (kind, _value(kind, node, p))
        for node, (kind, p) in enumerate(zip(kinds.tolist(), owner.tolist(), strict=True))
    ]
    for prefix, nodes in (("click", clk), ("pos", pos_n), ("call", call_n)):
        for node in nodes.tolist():  # anonymous ids the server side makes up
            idents[node] = (ANON, _prefix(prefix, idents[node][1]))
    return Links(idents, a[order], b[order], ts[order], people)


class LinkLists(NamedTuple):
    left: list  # each link's anchor identifier, in log order
    right: list  # each link's other identifier
    ts: list | None  # each link's event time (ms), when asked for
    people: int
    seconds: float  # to make them (demo_links and the lists)


@contextmanager
def link_lists(n_links: int, seed: int, times: bool = False) -> Iterator[LinkLists]:
    """demo_links as lists of identifiers, the arrays dropped, and the lists out of the
    collector's reach (gc.freeze) until the block ends: they are the input, not the
    algorithms' state, and must not slow down the collections the algorithms cause."""
    t0 = time.perf_counter()
    links = demo_links(n_links, seed)
    left = [links.idents[i] for i in links.a.tolist()]
    right = [links.idents[i] for i in links.b.tolist()]
    ts = links.ts.tolist() if times else None
    out = LinkLists(left, right, ts, links.people, time.perf_counter() - t0)
    del links, left, right, ts
    gc.collect()
    gc.freeze()
    try:
        yield out
    finally:
        gc.unfreeze()


def scipy_components(left: list, right: list) -> dict:
    """Factorize the identifiers (a dict), build the graph, connected_components."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    t0 = time.perf_counter()
    index: dict = {}
    code = index.setdefault
    rows = np.fromiter((code(x, len(index)) for x in left), np.int64, len(left))
    cols = np.fromiter((code(x, len(index)) for x in right), np.int64, len(right))
    t1 = time.perf_counter()
    n = len(index)
    # bool: a link seen many times sums to True, where a small int type could wrap to 0.
    graph = csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(n, n))
    t2 = time.perf_counter()
    count, labels = connected_components(graph, directed=False)
    t3 = time.perf_counter()
    return {
        "factorize_s": t1 - t0,
        "csr_s": t2 - t1,
        "cc_s": t3 - t2,
        "total_s": t3 - t0,
        "components": int(count),
        "labels": labels,
        "index": index,
    }


def plait_components(log: LogIdentities) -> dict:
    """The rebuild's clustering: every link a message with two identifiers, in log order,
    resolved at once as `plait rebuild` does (plait.identity.bulk.resolve_all)."""
    limits = {name: {"limit": 1_000_000} for name in BUILT_IN_TYPES}  # none can trigger
    rules = from_dict({"identifiers": limits})
    graph = Graph("ws_bench")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    changes, _ = resolve_all(graph, rules, log)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"total_s": wall, "cpu_s": cpu, "graph": graph, "merges": len(changes.merges)}


def same_partition(scipy: dict, graph: Graph) -> tuple[bool, str]:
    """Whether the resolver's profiles are exactly scipy's components (identifier for
    identifier, not only the counts)."""
    owner = {ident: profile.id for ident, profile in graph.owner.items()}
    labels = scipy["labels"]
    if set(owner) != set(scipy["index"]):
        return False, "the two sides hold different identifiers"
    pairs = {(owner[ident], int(labels[i])) for ident, i in scipy["index"].items()}
    n_plait, n_scipy = len(set(owner.values())), scipy["components"]
    sizes_equal = sorted(Counter(owner.values()).values()) == sorted(Counter(labels).values())
    ok = len(pairs) == n_plait == n_scipy and sizes_equal
    return ok, f"{n_plait:,} profiles, {n_scipy:,} components, sizes equal: {sizes_equal}"


def best_of(runs: int, measure) -> dict:
    """The fastest of ``runs`` runs (this machine is shared: the minimum is the least
    disturbed); the previous run's result is dropped before the next starts."""
    best = None
    for _ in range(runs):
        gc.collect()
        result = measure()
        if best is None or result["total_s"] < best["total_s"]:
            best = result
        del result
    return best


def clustering_phase(args) -> dict:
    with link_lists(args.links, args.seed, times=True) as links:
        left, right, ts = links.left, links.right, links.ts
        print(
            f"  links: {len(left):,} from {links.people:,} demo-shaped people "
            f"({len(set(left) | set(right)):,} identifiers), generated in "
            f"{links.seconds:.1f} s (not measured); best of {args.repeat} run(s) each"
        )
        sp = best_of(args.repeat, lambda: scipy_components(left, right))
        print(
            f"  scipy {_scipy_version()}: {secs(sp['total_s'])} = factorize (dict) "
            f"{secs(sp['factorize_s'])} + csr_matrix {secs(sp['csr_s'])} + "
            f"connected_components {secs(sp['cc_s'])}; {sp['components']:,} components"
        )
        log = LogIdentities()  # as the rebuild's first pass reads it (not measured)
        for offset, (x, y, t) in enumerate(zip(left, right, ts, strict=True), 1):
            log.add(offset, "msg", t, [x, y])
        pl = best_of(args.repeat, lambda: plait_components(log))
    ok, detail = same_partition(sp, pl.pop("graph"))
    ratio = pl["total_s"] / sp["total_s"]
    merges = pl["merges"]
    print(
        f"  plait rebuild (resolve_all): {secs(pl['total_s'])} wall, {secs(pl['cpu_s'])} CPU "
        f"({len(left) / pl['total_s']:,.0f} links/s, {merges:,} merges)\n"
        f"    same partition as scipy: {'yes' if ok else 'NO'} ({detail})\n"
        f"    ratio: {ratio:.1f}x scipy's factorize + CC ({pl['total_s'] / sp['cc_s']:.0f}x "
        f"connected_components alone); target <= {TARGET_RATIO:g}x: "
        f"{'met' if ratio <= TARGET_RATIO else 'NOT MET'}"
    )
    return {
        "links": len(left),
        "identifiers": len(sp["index"]),
        "components": sp["components"],
        "repeat": args.repeat,
        "scipy_s": sp["total_s"],
        "scipy_factorize_s": sp["factorize_s"],
        "scipy_csr_s": sp["csr_s"],
        "scipy_cc_s": sp["cc_s"],
        "plait_s": pl["total_s"],
        "plait_cpu_s": pl["cpu_s"],
        "merges": merges,
        "ratio": ratio,
        "same_partition": ok,
    }


def _scipy_version() -> str:
    import scipy

    return scipy.__version__


# Running ---------------------------------------------------------------------------------


def verdict(met: bool, as_specified: bool = True) -> str:
    if not met:
        return "NOT MET"
    return "met" if as_specified else "met, below the specified load"


def summary(results: dict) -> None:
    """measured vs target, one line per phase (a phase not run shows "-")."""
    t, f, c = (results.get(k) for k in ("throughput", "freshness", "clustering"))
    rows = {  # name: [target, measured, verdict]
        "pipeline throughput": [f">= {TARGET_EVENTS_S:,} events/s", "-", ""],
        "freshness": [f"p99 <= {TARGET_P99_S:g} s at {TARGET_RATE:,} events/s", "-", ""],
        "rebuild clustering": [f"<= {TARGET_RATIO:g}x scipy", "-", ""],
    }
    if t:
        rows["pipeline throughput"][1:] = [
            f"{t['events_s']:,.0f} events/s ({t['events']:,} events)",
            verdict(t["events_s"] >= TARGET_EVENTS_S),
        ]
    if f:
        rows["freshness"][1:] = [
            f"p50 {f['p50_s'] * 1000:,.0f} ms, p99 {f['p99_s'] * 1000:,.0f} ms "
            f"at {f['events_s']:,.0f} events/s",
            verdict(f["p99_s"] <= TARGET_P99_S, f["events_s"] >= 0.95 * TARGET_RATE),
        ]
    if c:
        rows["rebuild clustering"][1:] = [
            f"{secs(c['plait_s'])} vs scipy {secs(c['scipy_s'])} = {c['ratio']:.1f}x",
            verdict(c["ratio"] <= TARGET_RATIO and c["same_partition"]),
        ]
    print("\n== summary ==")
    print(f"  {'':<20} {'measured':<46} {'target':<32}")
    for name, (target, value, met) in rows.items():
        print(f"  {name:<20} {value:<46} {target:<32} {met}")


def run(args) -> dict:
    machine = describe()
    print(f"machine: {machine}")
    results: dict = {"machine": machine, "args": vars(args)}
    tmp = Path(tempfile.mkdtemp(prefix="plait-bench-pipeline-"))
    try:
        if "throughput" in args.phases:
            print("(1) pipeline throughput, embedded store")
            (tmp / "throughput").mkdir()
            results["throughput"] = throughput_phase(args, tmp / "throughput")
        if "freshness" in args.phases:
            print("(2) freshness: 2xx to visible in the Profile API, under load")
            (tmp / "freshness").mkdir()
            results["freshness"] = freshness_phase(args, tmp / "freshness")
        if "clustering" in args.phases:
            print("(3) rebuild clustering against scipy connected_components")
            results["clustering"] = clustering_phase(args)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--phases", default="throughput,freshness,clustering", help="comma-separated subset")
    add("--events", type=int, default=1_000_000, help="throughput: log rows (default 1,000,000)")
    add("--people", type=int, default=0, help="throughput: demo people (default: from --events)")
    add(
        "--separate-worker",
        action="store_true",
        help="freshness: run the pipeline in a `plait worker` process, not in the server",
    )
    add(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help="throughput: Pipeline batch size (default: the pipeline's)",
    )
    add("--days", type=float, default=30, help="throughput: the demo's period in days")
    add("--rate", type=float, default=5000, help="freshness: load, events/s (default 5,000)")
    add("--duration", type=float, default=60, help="freshness: seconds of load (default 60)")
    add("--probes", type=int, default=300, help="freshness: identify probes (default 300)")
    add("--load-concurrency", type=int, default=64, help="freshness: load requests in flight")
    add("--poll-interval", type=float, default=0.01, help="freshness: seconds between reads")
    add("--poll-concurrency", type=int, default=4, help="freshness: reads in flight, at most")
    add("--probe-timeout", type=float, default=30, help="freshness: give up on a probe after")
    add("--links", type=int, default=5_000_000, help="clustering: links (default 5,000,000)")
    add("--repeat", type=int, default=3, help="clustering: runs of each side; the best counts")
    add("--seed", type=int, default=1)
    add("--synchronous", choices=("FULL", "NORMAL"), default="FULL", help="SQLite synchronous")
    add("--json", default="", help="also write the results to this file")
    add("--keep", action="store_true", help="keep the data directories")
    args = parser.parse_args()
    args.phases = set(args.phases.split(","))
    unknown = args.phases - {"throughput", "freshness", "clustering"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    tune_gc()  # as plait serve and plait worker do
    results = run(args)
    summary(results)
    if args.json:
        results["args"]["phases"] = sorted(args.phases)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
