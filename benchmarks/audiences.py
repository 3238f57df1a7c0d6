#!/usr/bin/env python
"""Audience benchmark: the batch evaluation of a set of behavioural audiences over the lake
against hand-written DuckDB SQL for the same audiences on the same files, and the preview's
latency.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/audiences.py                          # both phases, full size
    .venv/bin/python benchmarks/audiences.py --people 50000           # a quick run (1M events)
    .venv/bin/python benchmarks/audiences.py --phases preview --preview-repeat 3
    .venv/bin/python benchmarks/audiences.py --people 100000 --explain /tmp/audience-plans

The lake: --people user profiles (prf_0000000...) and --people x --events-per-person events
over --days days ending at a fixed "now" (2025-06-01T00:00Z), written directly as the
lake's files (plait.lake.writer's layout and schemas, the files cut at the exporter's
50,000 rows, zstd) from numpy and pyarrow with a seed: not through the API or the pipeline.
Per person an activity level (lognormal), an interest in dermatology (25%), lapsing (25% of
the others stop being active 35 to 80 days before now), joining recently (12% sign up in
the last 30 days: a "Signed Up" event), a second profile merged into theirs (3%: their
events before the merge carry the merged-away profile id), accounts (20% are members of one
of people/50 accounts; 2% of two). Events: identify 5% (traits_json), page 35%
(Dermatology, Shop, Blog, Home or Account pages, properties path/url/title/referrer), track
60% (Product Viewed with product_id/category/price, Order Completed with order_id/revenue
(always a JSON number)/ currency/category/products, Appointment Booked with clinic/service,
and the Signed Up events), with properties_json, context_json and payload as JSON text. The
snapshot: the profiles (traits_json with email, country (missing for 5%), plan, joined_at),
the merged profiles, the accounts (traits name/plan/industry), identifiers, traits and
account members. The lake is cached under --lake-dir and reused when its manifest.json
holds the same parameters (--drop-lake removes it at the end).

Phases (--phases, comma-separated; default batch,preview):

  batch    The AUDIENCES below (and the computed trait they use), compiled with
           plait.audiences.definitions.compile_definitions, evaluated at once over all keys by
           plait.audiences.batch.audience_members (one query, Plait's confined connection and
           its views, rows fetched, member sets built), against HAND_SQL: the same audiences
           written directly over read_parquet of the same files by an analyst (one GROUP BY
           profile_id with count(*) FILTER (...), CAST(json_extract(...) AS DOUBLE), joined to
           the profiles file), run the same way (a fresh connection with the same memory
           limit and time zone, rows fetched, the same sets built). One untimed run of each
           first (the page cache), then --runs runs of each, alternating; each run and the
           median. The member counts per audience must be the same on both sides (and the
           sets); the benchmark fails (exit status 1) when they are not.
  preview  plait.audiences.batch.preview of each audience of the set (its size, a sample of
           10 members with their traits), --preview-repeat times each, round robin: p50 and
           p95 per audience and over all. With the batch phase, each preview's size is
           checked against the audience's member count.

(A "realtime" phase, membership latency at 5,000 events/s, is to come: PHASES below.)

Targets (the issue): the batch evaluation within 1.5x of the hand-written SQL (medians);
preview p50 <= 1 s. On 20,000,000 events from 1,000,000 people (the defaults).
"""

from __future__ import annotations

import argparse
import binascii
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from machine import describe

from plait.audiences import batch
from plait.audiences.definitions import Definitions, compile_definitions
from plait.audiences.sql import audiences_sql
from plait.lake.query import MEMORY_LIMIT, connect
from plait.lake.writer import (
    CHUNK,
    EVENT_SCHEMA,
    SNAPSHOT_ROW_GROUP,
    SNAPSHOT_SCHEMAS,
    current_snapshot,
    events_dir,
    profiles_dir,
    write_snapshot_file,
)

TARGET_RATIO = 1.5
TARGET_P50_S = 1.0
WS = "ws_bench"
NOW = datetime(2025, 6, 1, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
DAY_MS = 86_400_000
GENERATOR = 1  # bump when the generated data changes: cached lakes are made again

# The set of audiences, and the computed trait one of them uses.
TRAITS = [
    {"key": "lifetime_revenue", "kind": "sum", "event": "Order Completed", "property": "revenue"},
]
AUDIENCES = {
    "big_spenders_30d": 'performed "Order Completed" at least 2 times in last 30 days '
    "where properties.revenue > 50",
    "dermatology_no_booking": "performed page at least 2 times in last 30 days where "
    'properties.path starts with "/dermatology" and not performed "Appointment Booked" '
    "in last 30 days",
    "lapsed_buyers": 'performed "Order Completed" at least 2 times and not performed '
    '"Order Completed" in last 30 days',
    "high_value": "computed.lifetime_revenue >= 500",
    "skincare_browsers_eu": 'traits.country in ["FR", "DE", "ES"] and performed '
    '"Product Viewed" at least 3 times in last 7 days where properties.category = "skincare"',
    "new_without_order": 'performed "Signed Up" in last 14 days and not performed '
    '"Order Completed"',
    "enterprise_active": 'account.traits.plan = "enterprise" and performed "Product Viewed" '
    "at least 5 times in last 14 days",
}

# The same audiences, as an analyst would write them straight over the files: {events},
# {profiles}, {members} are the files (globs), {now} and {d7}, {d14}, {d30} the instants.
# On this data it means what the audiences mean (evaluate.py's docstring): revenue is always
# a JSON number, path and category always strings, so plain casts are equivalent to Plait's
# typed tests; a merged-away profile's events count for the profile it was merged into.
HAND_SQL = """
WITH profiles AS (SELECT * FROM read_parquet({profiles})),
merged AS (SELECT profile_id, merged_into FROM profiles WHERE merged_into IS NOT NULL),
ev AS (
    SELECT coalesce(m.merged_into, e.profile_id) AS profile_id,
        count(*) FILTER (WHERE event = 'Order Completed' AND timestamp > {d30}
            AND CAST(json_extract(properties_json, '$.revenue') AS DOUBLE) > 50) AS big_orders_30d,
        count(*) FILTER (WHERE type = 'page' AND timestamp > {d30}
            AND json_extract_string(properties_json, '$.path') LIKE '/dermatology%') AS derm_30d,
        count(*) FILTER (WHERE event = 'Appointment Booked' AND timestamp > {d30}) AS booked_30d,
        count(*) FILTER (WHERE event = 'Order Completed') AS orders,
        count(*) FILTER (WHERE event = 'Order Completed' AND timestamp > {d30}) AS orders_30d,
        fsum(CAST(json_extract(properties_json, '$.revenue') AS DOUBLE))
            FILTER (WHERE event = 'Order Completed') AS revenue,
        count(*) FILTER (WHERE event = 'Product Viewed' AND timestamp > {d7}
            AND json_extract_string(properties_json, '$.category') = 'skincare') AS skincare_7d,
        count(*) FILTER (WHERE event = 'Signed Up' AND timestamp > {d14}) AS signed_up_14d,
        count(*) FILTER (WHERE event = 'Product Viewed' AND timestamp > {d14}) AS viewed_14d
    FROM read_parquet({events}, hive_partitioning = false) e
    LEFT JOIN merged m ON m.profile_id = e.profile_id
    WHERE e.timestamp <= {now} AND e.type IN ('track', 'page')
    GROUP BY 1
),
enterprise AS (
    SELECT DISTINCT am.profile_id FROM read_parquet({members}) am
    JOIN profiles a ON a.profile_id = am.account_id
    WHERE a.merged_into IS NULL AND json_extract_string(a.traits_json, '$.plan') = 'enterprise'
)
SELECT p.profile_id,
    coalesce(ev.big_orders_30d >= 2, false) AS big_spenders_30d,
    coalesce(ev.derm_30d >= 2 AND ev.booked_30d = 0, false) AS dermatology_no_booking,
    coalesce(ev.orders >= 2 AND ev.orders_30d = 0, false) AS lapsed_buyers,
    coalesce(ev.revenue >= 500, false) AS high_value,
    coalesce(json_extract_string(p.traits_json, '$.country') IN ('FR', 'DE', 'ES')
        AND ev.skincare_7d >= 3, false) AS skincare_browsers_eu,
    coalesce(ev.signed_up_14d >= 1 AND ev.orders = 0, false) AS new_without_order,
    coalesce(p.profile_id IN (SELECT profile_id FROM enterprise) AND ev.viewed_14d >= 5, false)
        AS enterprise_active
FROM profiles p LEFT JOIN ev ON ev.profile_id = p.profile_id
WHERE p.kind = 'user' AND p.merged_into IS NULL
"""


def secs(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def progress(label: str, before: int, done: int, total: int, seconds: float) -> None:
    """One line rewritten in place on a terminal; in a file, one every 10%."""
    rate = done / max(seconds, 1e-9)
    line = f"    {label} {done:,} / {total:,} " + (
        f"({rate:,.0f}/s)" if rate >= 10 else f"in {seconds:.0f} s"
    )
    if sys.stdout.isatty():
        print(f"\r{line}", end="\n" if done >= total else "", flush=True)
    elif done >= total or done * 10 // total > before * 10 // total:
        print(line, flush=True)


# The lake ----------------------------------------------------------------------------------

COUNTRIES = ["FR", "DE", "ES", "IT", "GB", "US", "NL", "BE"]
COUNTRY_P = [0.22, 0.18, 0.12, 0.1, 0.12, 0.14, 0.07, 0.05]
PLANS = ["free", "pro", "business"]
PLAN_P = [0.6, 0.3, 0.1]
ACCOUNT_PLANS = ["starter", "business", "enterprise"]
ACCOUNT_PLAN_P = [0.5, 0.35, 0.15]
INDUSTRIES = ["retail", "health", "beauty", "services"]
CATEGORIES = ["skincare", "sun-care", "hair", "body", "supplements", "devices"]
CATEGORY_P = [0.3, 0.15, 0.15, 0.15, 0.15, 0.1]
CURRENCIES = ["EUR", "EUR", "EUR", "GBP", "USD"]
CLINICS = ["Paris 11", "Lyon", "Berlin Mitte", "Madrid Centro", "London Soho", "Amsterdam"]
SERVICES = ["acne consultation", "mole check", "laser", "eczema follow-up", "peel"]
METHODS = ["email", "google", "apple"]
REFERRERS = ["", "https://www.google.com/", "https://www.instagram.com/", "https://t.co/"]
AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari",
]
SITE = "https://www.lumiderm.example"
# (page name, paths): the page's name is the events' `event`, its path properties.path.
SECTIONS = [
    (
        "Dermatology",
        [
            f"/dermatology/{t}"
            for t in ("acne", "eczema", "psoriasis", "rosacea", "moles", "hair-loss")
        ],
    ),
    ("Shop", [f"/shop/{c}" for c in CATEGORIES]),
    ("Blog", [f"/blog/{s}" for s in ("spf-guide", "retinol", "routine", "winter-skin")]),
    ("Home", ["/"]),
    ("Account", ["/account/orders", "/account/profile", "/account/appointments"]),
]
# Sections' probabilities for people interested in dermatology, and for the others.
SECTION_P = {True: [0.45, 0.3, 0.1, 0.1, 0.05], False: [0.05, 0.55, 0.15, 0.2, 0.05]}
# Tracks (other than Signed Up): Product Viewed, Order Completed, Appointment Booked.
TRACK_P = {True: [0.55, 0.2, 0.25], False: [0.65, 0.3, 0.05]}
IDENTIFY, PAGE, VIEWED, ORDER, BOOKED, SIGNED_UP = range(6)
TYPES = ["identify", "page", "track", "track", "track", "track"]
TRACKS = [None, None, "Product Viewed", "Order Completed", "Appointment Booked", "Signed Up"]
SOURCES = ["src_web", "src_web", "src_web", "src_server", "src_server", "src_web"]
LIBRARIES = {"src_web": ("analytics.js", "5.2.0"), "src_server": ("analytics-python", "2.3.2")}


def lake_params(args) -> dict:
    return {
        "generator": GENERATOR,
        "people": args.people,
        "events_per_person": args.events_per_person,
        "days": args.days,
        "seed": args.seed,
        "now": NOW.isoformat(),
        "part_rows": CHUNK,
        "snapshot_row_group": SNAPSHOT_ROW_GROUP,
        "workspace_id": WS,
    }


def varchar(values) -> pa.Array:
    return pa.array(values, pa.string())


def join(*parts) -> pa.Array:
    """Strings (arrays or scalars) concatenated row by row (null where a part is null)."""
    return pc.binary_join_element_wise(*parts, "")


def fill(template: str, *values) -> pa.Array:
    """``template`` with each ``%s`` replaced by the next of ``values`` (string arrays or
    scalars), row by row."""
    pieces = template.split("%s")
    assert len(pieces) == len(values) + 1, template
    parts = [pieces[0]]
    for value, piece in zip(values, pieces[1:], strict=True):
        parts += [value, piece]
    return join(*(part for part in parts if not isinstance(part, str) or part))


def num(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def padded(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(num(values), width, "0")


def hex_ids(rng: np.random.Generator, n: int, nbytes: int = 16) -> pa.Array:
    """``n`` random hex strings of ``2 * nbytes`` characters."""
    data = binascii.hexlify(rng.bytes(n * nbytes))
    offsets = np.arange(0, (n + 1) * 2 * nbytes, 2 * nbytes, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def iso(ms: np.ndarray) -> pa.Array:
    return pc.strftime(pa.array(ms, pa.timestamp("ms", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")


def pick(rng: np.random.Generator, probs: list[float], n: int) -> np.ndarray:
    return rng.choice(len(probs), n, p=np.asarray(probs) / sum(probs))


class People:
    """Each person's attributes (index i is profile prf_<i>), and the other profiles."""

    def __init__(self, params: dict):
        n, seed = params["people"], params["seed"]
        rng = np.random.default_rng([seed, 0])
        self.n = n
        self.begin = NOW_MS - params["days"] * DAY_MS
        self.activity = rng.lognormal(0.0, 1.0, n)
        self.derm = rng.random(n) < 0.25
        self.newcomer = rng.random(n) < 0.12
        lapsed = (rng.random(n) < 0.25) & ~self.newcomer
        recent = NOW_MS - 30 * DAY_MS
        self.first = np.where(
            self.newcomer, recent + (rng.random(n) * 30 * DAY_MS).astype(np.int64), self.begin
        )
        lapse_lo = min(self.begin + 10 * DAY_MS, NOW_MS - 35 * DAY_MS)
        self.last = np.where(
            lapsed,
            lapse_lo + (rng.random(n) * (NOW_MS - 35 * DAY_MS - lapse_lo)).astype(np.int64),
            NOW_MS - 1,
        )
        self.joined = np.where(
            self.newcomer, self.first, self.begin - (rng.random(n) * 730 * DAY_MS).astype(np.int64)
        )
        self.country = np.where(rng.random(n) < 0.05, -1, pick(rng, COUNTRY_P, n))
        self.plan = pick(rng, PLAN_P, n)
        # Merged profiles: the merged-away one's index is n + k, for the k-th merged person.
        merged = np.flatnonzero(rng.random(n) < 0.03)
        self.merged_people = merged
        self.merged_index = np.full(n, -1, np.int64)
        self.merged_index[merged] = n + np.arange(len(merged))
        span = self.last[merged] - self.first[merged]
        self.merge_at = np.full(n, -1, np.int64)
        self.merge_at[merged] = self.first[merged] + (rng.random(len(merged)) * span).astype(
            np.int64
        )
        # Accounts: indexes after the merged profiles.
        self.n_accounts = max(1, n // 50)
        self.account_base = n + len(merged)
        members = np.flatnonzero(rng.random(n) < 0.2)
        seconds = members[rng.random(len(members)) < 0.1]  # 2% of people: two accounts
        self.member_people = np.concatenate([members, seconds])
        self.member_account = rng.integers(0, self.n_accounts, len(self.member_people))
        self.account_plan = pick(rng, ACCOUNT_PLAN_P, self.n_accounts)
        self.account_industry = rng.integers(0, len(INDUSTRIES), self.n_accounts)
        total = self.account_base + self.n_accounts
        self.width = max(7, len(str(total)))
        self.profile_ids = join("prf_", padded(np.arange(total), self.width))
        self.user_ids = join("usr_", padded(np.arange(n), self.width))
        self.emails = join("user", padded(np.arange(n), self.width), "@example.com")
        self.anonymous_ids = hex_ids(rng, n)
        i = np.arange(n)
        self.ips = join("10.", num((i >> 16) & 255), ".", num((i >> 8) & 255), ".", num(i & 255))


def person_traits(people: People) -> pa.Array:
    country = pc.take(
        varchar([f',"country":"{c}"' for c in COUNTRIES] + [""]),
        np.where(people.country < 0, len(COUNTRIES), people.country),
    )
    plan = pc.take(varchar(PLANS), people.plan)
    return fill(
        '{"email":"%s"%s,"plan":"%s","joined_at":"%s"}',
        people.emails,
        country,
        plan,
        iso(people.joined),
    )


def snapshot_tables(people: People) -> dict[str, pa.Table]:
    n, merged, width = people.n, people.merged_people, people.width
    accounts = np.arange(people.n_accounts)
    acc_index = people.account_base + accounts
    ids = people.profile_ids
    traits = person_traits(people)
    acc_traits = fill(
        '{"name":"Account %s","plan":"%s","industry":"%s"}',
        padded(accounts, width),
        pc.take(varchar(ACCOUNT_PLANS), people.account_plan),
        pc.take(varchar(INDUSTRIES), people.account_industry),
    )
    kinds = ["user"] * (n + len(merged)) + ["account"] * people.n_accounts
    created = np.concatenate(
        [people.joined, people.first[merged], np.full(len(accounts), people.begin - 800 * DAY_MS)]
    )
    profiles = pa.table(
        {
            "profile_id": ids,
            "kind": varchar(kinds),
            "created_at": pa.array(created, pa.timestamp("ms", tz="UTC")),
            "first_offset": pa.array(np.zeros(len(kinds), np.int64)),
            "merged_into": pa.concat_arrays(
                [
                    pa.nulls(n, pa.string()),
                    pc.take(ids, merged),
                    pa.nulls(people.n_accounts, pa.string()),
                ]
            ),
            "traits_json": pa.concat_arrays([traits, varchar(["{}"] * len(merged)), acc_traits]),
        },
        schema=SNAPSHOT_SCHEMAS["profiles"],
    )
    person_ids = pc.take(ids, np.arange(n))
    seen = pa.array(people.joined, pa.timestamp("ms", tz="UTC"))
    identifiers = pa.table(
        {
            "type": varchar(
                ["user_id"] * n
                + ["anonymous_id"] * n
                + ["email"] * n
                + ["group_id"] * people.n_accounts
            ),
            "value": pa.concat_arrays(
                [
                    people.user_ids,
                    people.anonymous_ids,
                    people.emails,
                    join("acct_", padded(accounts, width)),
                ]
            ),
            "profile_id": pa.concat_arrays([person_ids] * 3 + [pc.take(ids, acc_index)]),
            "first_seen": pa.concat_arrays([seen] * 3 + [pa.nulls(len(accounts), seen.type)]),
            "last_seen": pa.concat_arrays([seen] * 3 + [pa.nulls(len(accounts), seen.type)]),
            "log_offset": pa.array(np.zeros(3 * n + len(accounts), np.int64)),
            "message_id": pa.nulls(3 * n + len(accounts), pa.string()),
        },
        schema=SNAPSHOT_SCHEMAS["identifiers"],
    )
    keys = ["email", "plan", "joined_at"]
    has_country = np.flatnonzero(people.country >= 0)
    values = [
        join('"', people.emails, '"'),
        join('"', pc.take(varchar(PLANS), people.plan), '"'),
        join('"', iso(people.joined), '"'),
        join('"', pc.take(varchar(COUNTRIES), people.country[has_country]), '"'),
    ]
    owners = [np.arange(n)] * 3 + [has_country]
    trait_table = pa.table(
        {
            "profile_id": pa.concat_arrays([pc.take(ids, o) for o in owners]),
            "key": varchar([k for k in keys for _ in range(n)] + ["country"] * len(has_country)),
            "value_json": pa.concat_arrays(values),
            "timestamp": pa.concat_arrays([seen] * 3 + [pc.take(seen, has_country)]),
            "log_offset": pa.array(np.zeros(3 * n + len(has_country), np.int64)),
            "source_id": varchar(["src_web"] * (3 * n + len(has_country))),
            "message_id": pa.nulls(3 * n + len(has_country), pa.string()),
        },
        schema=SNAPSHOT_SCHEMAS["traits"],
    )
    m = len(people.member_people)
    members = pa.table(
        {
            "account_id": pc.take(ids, people.account_base + people.member_account),
            "profile_id": pc.take(ids, people.member_people),
            "timestamp": pc.take(seen, people.member_people),
            "log_offset": pa.array(np.zeros(m, np.int64)),
        },
        schema=SNAPSHOT_SCHEMAS["account_members"],
    )
    return {
        "profiles": profiles,
        "identifiers": identifiers,
        "traits": trait_table,
        "account_members": members,
    }


def scatter(n: int, parts: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """One array of ``n`` rows from the arrays of groups of rows (each with its rows'
    positions; together they cover every row once)."""
    positions = np.concatenate([p for p, _ in parts])
    values = pa.concat_arrays([a for _, a in parts])
    inverse = np.empty(n, np.int64)
    inverse[positions] = np.arange(n)
    return values.take(inverse)


PAGE_PATHS = [path for _, paths in SECTIONS for path in paths]
PAGE_NAMES = [name for name, paths in SECTIONS for _ in paths]
SECTION_START = np.cumsum([0] + [len(paths) for _, paths in SECTIONS])[:-1]
SECTION_SIZE = np.array([len(paths) for _, paths in SECTIONS])
EVENT_NAMES = varchar(TRACKS + PAGE_NAMES)  # index: the kind (tracks) or 6 + the page
PAGE_PROPS = varchar(
    [
        f'{{"path":"{path}","url":"{SITE}{path}","title":"{name} | Lumiderm","referrer":"'
        for name, path in zip(PAGE_NAMES, PAGE_PATHS, strict=True)
    ]
)


def day_events(people: People, params: dict, day: int, count: int, first_offset: int):
    """The events of one day, in time order, as a table of EVENT_SCHEMA."""
    rng = np.random.default_rng([params["seed"], 1, day])
    start, end = people.begin + day * DAY_MS, people.begin + (day + 1) * DAY_MS
    active = (people.first < end) & (people.last >= start)
    cdf = np.cumsum(people.activity * active)
    person = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right")
    lo = np.maximum(people.first[person], start)
    hi = np.minimum(people.last[person] + 1, end)
    ts = lo + (rng.random(count) * (hi - lo)).astype(np.int64)
    u = rng.random(count)
    kind = np.where(u < 0.05, IDENTIFY, np.where(u < 0.40, PAGE, VIEWED))
    derm = people.derm[person]
    v = rng.random(count)
    for interested in (True, False):
        p = np.cumsum(TRACK_P[interested])
        rows = (kind == VIEWED) & (derm == interested)
        kind[rows] = VIEWED + np.searchsorted(p, v[rows] * p[-1], side="right")
    signups = np.flatnonzero(people.newcomer & (people.first >= start) & (people.first < end))
    person = np.concatenate([person, signups])
    ts = np.concatenate([ts, people.first[signups]])
    kind = np.concatenate([kind, np.full(len(signups), SIGNED_UP)])
    order = np.argsort(ts, kind="stable")
    person, ts, kind = person[order], ts[order], kind[order]
    n = len(ts)

    code = kind.copy()
    page_rows = np.flatnonzero(kind == PAGE)
    section = np.empty(len(page_rows), np.int64)
    w = rng.random(len(page_rows))
    for interested in (True, False):
        p = np.cumsum(SECTION_P[interested])
        rows = people.derm[person[page_rows]] == interested
        section[rows] = np.searchsorted(p, w[rows] * p[-1], side="right")
    page = SECTION_START[section] + (rng.random(len(page_rows)) * SECTION_SIZE[section]).astype(
        np.int64
    )
    code[page_rows] = len(TRACKS) + page

    def some(choices: list[str], k: int) -> pa.Array:
        return pc.take(varchar(choices), rng.integers(0, len(choices), k))

    properties: list[tuple[np.ndarray, pa.Array]] = []  # (rows, their properties_json)
    rows = np.flatnonzero(kind == IDENTIFY)
    who = person[rows]
    plan = pc.take(varchar(PLANS), people.plan[who])
    properties.append((rows, pa.nulls(len(rows), pa.string())))
    identify_traits = fill('{"email":"%s","plan":"%s"}', pc.take(people.emails, who), plan)
    referrer = some(REFERRERS, len(page_rows))
    properties.append((page_rows, fill('%s%s"}', pc.take(PAGE_PROPS, page), referrer)))
    rows = np.flatnonzero(kind == VIEWED)
    category = pc.take(varchar(CATEGORIES), pick(rng, CATEGORY_P, len(rows)))
    price = num(np.round(rng.lognormal(3.0, 0.5, len(rows)), 2))
    sku = padded(rng.integers(0, 5000, len(rows)), 5)
    props = fill('{"product_id":"sku_%s","category":"%s","price":%s}', sku, category, price)
    properties.append((rows, props))
    rows = np.flatnonzero(kind == ORDER)
    k = len(rows)
    revenue = num(np.clip(np.round(rng.lognormal(3.7, 0.6, k), 2), 1.0, 2000.0))
    order_id, currency = hex_ids(rng, k, 6), some(CURRENCIES, k)
    category = pc.take(varchar(CATEGORIES), pick(rng, CATEGORY_P, k))
    props = fill(
        '{"order_id":"ord_%s","revenue":%s,"currency":"%s","category":"%s","products":%s}',
        order_id,
        revenue,
        currency,
        category,
        num(rng.integers(1, 6, k)),
    )
    properties.append((rows, props))
    rows = np.flatnonzero(kind == BOOKED)
    clinic = some(CLINICS, len(rows))
    props = fill('{"clinic":"%s","service":"%s"}', clinic, some(SERVICES, len(rows)))
    properties.append((rows, props))
    rows = np.flatnonzero(kind == SIGNED_UP)
    properties.append((rows, fill('{"method":"%s"}', some(METHODS, len(rows)))))
    properties = scatter(n, properties)
    identifies = np.flatnonzero(kind == IDENTIFY)
    others = np.flatnonzero(kind != IDENTIFY)
    traits = scatter(
        n, [(identifies, identify_traits), (others, pa.nulls(len(others), pa.string()))]
    )

    profile = np.where((people.merge_at[person] > ts), people.merged_index[person], person)
    user_id = pc.take(people.user_ids, person)
    anonymous = rng.random(n) < 0.2
    anonymous &= kind != IDENTIFY
    user_id = pc.if_else(pa.array(anonymous), pa.nulls(n, pa.string()), user_id)
    types = pc.take(varchar(TYPES), kind)
    event = pc.take(EVENT_NAMES, code)
    source = pc.take(varchar(SOURCES), kind)
    message_id = hex_ids(rng, n)
    anonymous_id = pc.take(people.anonymous_ids, person)
    libs = [LIBRARIES[s] for s in SOURCES]
    context = fill(
        '{"library":{"name":"%s","version":"%s"},"ip":"%s","userAgent":"%s","locale":"en-GB"}',
        pc.take(varchar([lib for lib, _ in libs]), kind),
        pc.take(varchar([ver for _, ver in libs]), kind),
        pc.take(people.ips, person),
        some(AGENTS, n),
    )
    key = varchar(["", ',"name":"', ',"event":"', ',"event":"', ',"event":"', ',"event":"'])

    def optional(template: str, value: pa.Array) -> pa.Array:  # "" where value is null
        return pc.fill_null(fill(template, value), "")

    payload = fill(
        '{"type":"%s"%s,"messageId":"%s","timestamp":"%s"%s,"anonymousId":"%s"%s%s,"context":%s}',
        types,
        pc.fill_null(fill('%s%s"', pc.take(key, kind), event), ""),
        message_id,
        iso(ts),
        optional(',"userId":"%s"', user_id),
        anonymous_id,
        optional(',"properties":%s', properties),
        optional(',"traits":%s', traits),
        context,
    )
    received = ts * 1000 + rng.integers(20_000, 2_000_000, n)
    return pa.table(
        {
            "log_offset": pa.array(first_offset + np.arange(n, dtype=np.int64)),
            "workspace_id": pc.take(varchar([WS]), np.zeros(n, np.int32)),
            "source_id": source,
            "message_id": message_id,
            "type": types,
            "event": event,
            "profile_id": pc.take(people.profile_ids, profile),
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "timestamp": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "received_at": pa.array(received, pa.timestamp("us", tz="UTC")),
            "properties_json": properties,
            "traits_json": traits,
            "context_json": context,
            "payload": payload,
        },
        schema=EVENT_SCHEMA,
    )


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def clear_lake(lake_dir: Path) -> None:
    """Remove what the benchmark writes in ``lake_dir`` (and nothing else)."""
    for name in ("events", "profiles", ".locks"):
        shutil.rmtree(lake_dir / name, ignore_errors=True)
    (lake_dir / "manifest.json").unlink(missing_ok=True)
    if lake_dir.is_dir() and not any(lake_dir.iterdir()):
        lake_dir.rmdir()


def generate_lake(lake_dir: Path, params: dict) -> dict:
    t0 = time.perf_counter()
    people = People(params)
    snapshot = profiles_dir(lake_dir, WS) / f"snapshot={NOW_MS}"
    snapshot.mkdir(parents=True)
    tables = snapshot_tables(people)
    for name, table in tables.items():
        write_snapshot_file(table, snapshot / f"{name}.parquet")
    t1 = time.perf_counter()
    print(
        f"    profiles: {people.n:,} people, {len(people.merged_people):,} merged-away "
        f"profiles, {people.n_accounts:,} accounts, {len(people.member_people):,} "
        f"memberships, in {t1 - t0:.1f} s"
    )
    days = params["days"]
    signups = int(people.newcomer.sum())
    total = max(0, params["people"] * params["events_per_person"] - signups)
    rng = np.random.default_rng([params["seed"], 2])
    week = 1 + 0.15 * np.sin(np.arange(days) * 2 * np.pi / 7)  # busier some days of the week
    counts = rng.multinomial(total, week / week.sum())
    offset, files, written = 1, 0, 0
    root = events_dir(lake_dir, WS)
    for day in range(days):
        table = day_events(people, params, day, int(counts[day]), offset)
        date = datetime.fromtimestamp((people.begin + day * DAY_MS) / 1000, UTC).date()
        directory = root / f"day={date.isoformat()}"
        directory.mkdir(parents=True, exist_ok=True)
        for at in range(0, table.num_rows, params["part_rows"]):
            part = table.slice(at, params["part_rows"])
            first, last = offset + at, offset + at + part.num_rows - 1
            pq.write_table(part, directory / f"part-{first}-{last}.parquet", compression="zstd")
            files += 1
        offset += table.num_rows
        before, written = written, written + table.num_rows
        progress("events written", before, written, total + signups, time.perf_counter() - t1)
    seconds = time.perf_counter() - t0
    return {
        "params": params,
        "events": written,
        "event_files": files,
        "profiles": {name: table.num_rows for name, table in tables.items()},
        "events_bytes": tree_bytes(root),
        "profiles_bytes": tree_bytes(profiles_dir(lake_dir, WS)),
        "generate_s": seconds,
        "profiles_s": t1 - t0,
        "generated_at": datetime.now(UTC).isoformat(),
    }


def ensure_lake(args) -> dict:
    """The cached lake if its parameters are these, otherwise a new one."""
    lake_dir = Path(args.lake_dir)
    params = lake_params(args)
    manifest_path = lake_dir / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == params and current_snapshot(lake_dir, WS) is not None:
            manifest["reused"] = True
            return manifest
        print(f"  {lake_dir} holds a lake of other parameters: making it again")
    elif lake_dir.exists() and any(
        p.name not in ("events", "profiles", ".locks") for p in lake_dir.iterdir()
    ):
        sys.exit(f"{lake_dir} is not empty and is not a benchmark lake: pick another --lake-dir")
    clear_lake(lake_dir)
    lake_dir.mkdir(parents=True, exist_ok=True)
    events = args.people * args.events_per_person
    need = events * 200  # bytes per event on disk: ~145 measured, and a margin
    free = shutil.disk_usage(lake_dir).free
    if free < need:
        sys.exit(f"{free / 1e9:.1f} GB free under {lake_dir}, about {need / 1e9:.1f} GB needed")
    print(f"  generating the lake in {lake_dir} ({events:,} events, seed {args.seed})")
    manifest = generate_lake(lake_dir, params)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["reused"] = False
    return manifest


def describe_lake(lake_dir: Path, manifest: dict) -> None:
    p = manifest["params"]
    how = "reused (generated" if manifest["reused"] else "generated"
    print(
        f"  lake {lake_dir}: {manifest['events']:,} events in {manifest['event_files']} files "
        f"({manifest['events_bytes'] / 1e9:.2f} GB), {p['people']:,} people over {p['days']} "
        f"days to {p['now']}, snapshot {manifest['profiles']} "
        f"({manifest['profiles_bytes'] / 1e6:.0f} MB); {how} in {manifest['generate_s']:.0f} s"
        f"{')' if manifest['reused'] else ''}"
    )


# 1. Batch ----------------------------------------------------------------------------------


def definitions() -> Definitions:
    docs = [{"key": k, "name": k.replace("_", " "), "definition": d} for k, d in AUDIENCES.items()]
    return compile_definitions(TRAITS, docs)


def hand_sql(lake_dir: Path) -> str:
    def at(ms: int) -> str:
        return f"TIMESTAMPTZ '{datetime.fromtimestamp(ms / 1000, UTC).isoformat()}'"

    snapshot = current_snapshot(lake_dir, WS)
    files = {
        "events": str(events_dir(lake_dir, WS) / "day=*" / "part-*.parquet"),
        "profiles": str(snapshot / "profiles.parquet"),
        "members": str(snapshot / "account_members.parquet"),
    }
    return HAND_SQL.format(
        **{k: f"'{v}'" for k, v in files.items()},
        now=at(NOW_MS),
        d7=at(NOW_MS - 7 * DAY_MS),
        d14=at(NOW_MS - 14 * DAY_MS),
        d30=at(NOW_MS - 30 * DAY_MS),
    )


def hand_connection() -> duckdb.DuckDBPyConnection:
    """A plain connection, with the memory limit and time zone of Plait's."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    return con


def hand_members(sql: str, keys: list[str]) -> dict[str, set[str]]:
    """The hand-written query's member sets, built as batch.audience_members builds its."""
    con = hand_connection()
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    members: dict[str, set[str]] = {key: set() for key in keys}
    for row in rows:
        for key, inside in zip(keys, row[1:], strict=True):
            if inside:
                members[key].add(row[0])
    return members


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def timed_cpu(fn) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()`` (CPU: this process's, DuckDB's threads included;
    steadier than wall time when other processes load the machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def explain(lake_dir: Path, plait_sql: str, sql: str, out: Path) -> None:
    """EXPLAIN ANALYZE of both queries into ``out`` (and their SQL)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, query, con in (
        ("plait", plait_sql, connect(lake_dir, WS)),
        ("hand", sql, hand_connection()),
    ):
        try:
            (out / f"{name}.sql").write_text(query + "\n")
            t0 = time.perf_counter()
            plan = con.execute(f"EXPLAIN ANALYZE {query}").fetchall()
            (out / f"{name}.txt").write_text("\n".join(str(r[-1]) for r in plan) + "\n")
            print(f"    EXPLAIN ANALYZE {name}: {secs(time.perf_counter() - t0)}")
        finally:
            con.close()
    print(f"    plans and SQL written to {out}/(plait|hand).(txt|sql)")


def batch_phase(args, lake_dir: Path, defs: Definitions, results: dict) -> dict:
    keys = list(defs.audiences)
    plait_sql = audiences_sql(defs, keys, NOW_MS)
    sql = hand_sql(lake_dir)
    print(
        f"  {len(keys)} audiences, {len(defs.traits)} computed trait; Plait's SQL "
        f"{len(plait_sql):,} characters, the hand-written {len(sql.strip()):,}"
    )

    def plait() -> dict[str, set[str]]:
        return batch.audience_members(lake_dir, WS, defs, keys, NOW_MS)

    def hand() -> dict[str, set[str]]:
        return hand_members(sql, keys)

    warm_p, plait_set = timed(plait)
    warm_h, hand_set = timed(hand)
    print(f"  untimed first runs: Plait {secs(warm_p)}, hand-written {secs(warm_h)}")
    counts = {k: (len(plait_set[k]), len(hand_set[k])) for k in keys}
    same = {k: plait_set[k] == hand_set[k] for k in keys}
    print(f"  members (Plait / hand-written), of {args.people:,} people:")
    failures = []
    for k in keys:
        a, b = counts[k]
        flag = "" if same[k] else "  <-- DIFFERENT"
        print(f"    {k:<24} {a:>10,} {b:>10,}{flag}")
        if not same[k]:
            failures.append(f"{k}: Plait {a:,} members, hand-written {b:,} (or other members)")
    del plait_set, hand_set
    runs = []
    print(f"  {load()}")
    for i in range(1, args.runs + 1):
        tp, cp = timed_cpu(plait)
        th, ch = timed_cpu(hand)
        runs.append({"plait_s": tp, "hand_s": th, "plait_cpu_s": cp, "hand_cpu_s": ch})
        print(
            f"  run {i}: Plait {secs(tp)} ({cp:.1f} s CPU), hand-written {secs(th)} "
            f"({ch:.1f} s CPU) = {tp / th:.2f}x wall, {cp / ch:.2f}x CPU"
        )
    print(f"  {load()}")

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    plait_med, hand_med = median("plait_s"), median("hand_s")
    ratio, cpu_ratio = plait_med / hand_med, median("plait_cpu_s") / median("hand_cpu_s")
    events = results["lake"]["events"]
    print(
        f"  median of {args.runs}: Plait {secs(plait_med)} ({events / plait_med:,.0f} events/s), "
        f"hand-written {secs(hand_med)} = {ratio:.2f}x (CPU {cpu_ratio:.2f}x); target <= "
        f"{TARGET_RATIO:g}x: {'met' if ratio <= TARGET_RATIO else 'NOT MET'}"
    )
    for failure in failures:
        print(f"    CHECK FAILED: {failure}")
    if args.explain:
        explain(lake_dir, plait_sql, sql, Path(args.explain))
    return {
        "audiences": AUDIENCES,
        "counts": {k: v[0] for k, v in counts.items()},
        "hand_counts": {k: v[1] for k, v in counts.items()},
        "people": args.people,
        "warm_s": {"plait": warm_p, "hand": warm_h},
        "runs": runs,
        "plait_s": plait_med,
        "hand_s": hand_med,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "failures": failures,
    }


# 2. Preview --------------------------------------------------------------------------------


def preview_phase(args, lake_dir: Path, defs: Definitions, results: dict) -> dict:
    keys = list(defs.audiences)
    counts = (results.get("batch") or {}).get("hand_counts")
    print(f"  {len(keys)} audiences, {args.preview_repeat} previews each, round robin; {load()}")
    latencies: dict[str, list[float]] = {k: [] for k in keys}
    sizes: dict[str, set[int]] = {k: set() for k in keys}
    estimated = False
    total = len(keys) * args.preview_repeat
    t0 = time.perf_counter()
    for r in range(args.preview_repeat):
        for i, key in enumerate(keys):
            audience = defs.audiences[key]
            seconds, out = timed(lambda a=audience: batch.preview(lake_dir, WS, defs, a, NOW_MS))
            latencies[key].append(seconds)
            sizes[key].add(out["size"])
            estimated = estimated or out.get("estimated", False)
            done = r * len(keys) + i + 1
            progress("previews", done - 1, done, total, time.perf_counter() - t0)
    failures = []
    per = {}
    for key in keys:
        values = latencies[key]
        per[key] = {"p50_s": pct(values, 50), "p95_s": pct(values, 95), "runs_s": values}
        size = sorted(sizes[key])
        check = ""
        if len(size) != 1:
            failures.append(f"{key}: previews gave different sizes {size}")
        elif counts is not None and estimated:
            # a sampled preview estimates the size: within 20% (a 1-in-k sample of the
            # smallest audience, ~2,000 members, has a standard error near 7%)
            error = (size[0] - counts[key]) / counts[key] if counts[key] else 0.0
            check = f" (estimate; batch {counts[key]:,}, {error:+.1%})"
            if abs(error) > 0.2:
                failures.append(f"{key}: preview estimate {size[0]:,} is {error:+.1%} off")
        elif counts is not None and size[0] != counts[key]:
            failures.append(f"{key}: preview size {size[0]:,}, {counts[key]:,} members in batch")
        elif counts is not None:
            check = " (= batch)"
        per[key]["size"] = size[0]
        print(
            f"    {key:<24} p50 {secs(per[key]['p50_s']):>8}  p95 {secs(per[key]['p95_s']):>8}"
            f"  size {size[0]:,}{check}"
        )
    everything = [s for values in latencies.values() for s in values]
    p50, p95 = pct(everything, 50), pct(everything, 95)
    worst = max(keys, key=lambda k: per[k]["p50_s"])
    print(f"  {load()}")
    print(
        f"  all {len(everything)} previews: p50 {secs(p50)}, p95 {secs(p95)}; slowest audience "
        f"{worst} (p50 {secs(per[worst]['p50_s'])}); target p50 <= {TARGET_P50_S:g} s: "
        f"{'met' if p50 <= TARGET_P50_S else 'NOT MET'}"
    )
    for failure in failures:
        print(f"    CHECK FAILED: {failure}")
    return {"p50_s": p50, "p95_s": p95, "worst": worst, "audiences": per, "failures": failures}


# Running -----------------------------------------------------------------------------------


def batch_row(b: dict) -> tuple[str, bool]:
    measured = f"{secs(b['plait_s'])} vs {secs(b['hand_s'])} = {b['ratio']:.2f}x "
    return measured + f"(CPU {b['cpu_ratio']:.2f}x)", b["ratio"] <= TARGET_RATIO


def preview_row(p: dict) -> tuple[str, bool]:
    measured = f"p50 {secs(p['p50_s'])}, p95 {secs(p['p95_s'])} ({len(p['audiences'])} audiences)"
    return measured, p["p50_s"] <= TARGET_P50_S


@dataclass(frozen=True)
class Phase:
    title: str
    run: Callable[..., dict]  # (args, lake_dir, defs, results) -> the phase's results
    target: str
    row: Callable[[dict], tuple[str, bool]]  # the phase's results -> (measured, target met)


# In the order they run when asked for. A phase's results hold "failures" (checks).
PHASES = {
    "batch": Phase(
        "batch evaluation of the set against hand-written SQL",
        batch_phase,
        f"<= {TARGET_RATIO:g}x hand-written SQL",
        batch_row,
    ),
    "preview": Phase("preview latency", preview_phase, f"p50 <= {TARGET_P50_S:g} s", preview_row),
}


def summary(results: dict) -> list[str]:
    """measured vs target, one line per phase (a phase not run shows "-"); the failures."""
    lake = results["lake"]
    print("\n== summary ==")
    print(
        f"  {lake['events']:,} events, {lake['params']['people']:,} people "
        f"({lake['events_bytes'] / 1e9:.2f} GB of events); {results['machine']}"
    )
    print(f"  {'':<18} {'measured':<44} {'target':<30}")
    failures = []
    for name, phase in PHASES.items():
        measured, verdict = "-", ""
        if name in results:
            measured, met = phase.row(results[name])
            failures += results[name]["failures"]
            verdict = "met" if met and not results[name]["failures"] else "NOT MET"
        print(f"  {name:<18} {measured:<44} {phase.target:<30} {verdict}")
    print(f"  checks: {'all passed' if not failures else f'{len(failures)} FAILED'}")
    return failures


def run(args) -> dict:
    machine = describe()
    print(f"machine: {machine}; DuckDB {duckdb.__version__}, pyarrow {pa.__version__}")
    results: dict = {"machine": machine, "args": {**vars(args), "phases": args.phases}}
    lake_dir = Path(args.lake_dir)
    print("(0) the lake")
    results["lake"] = manifest = ensure_lake(args)
    describe_lake(lake_dir, manifest)
    defs = definitions()
    for n, name in enumerate(args.phases, 1):
        phase = PHASES[name]
        print(f"({n}) {phase.title}")
        t0 = time.perf_counter()
        results[name] = phase.run(args, lake_dir, defs, results)
        results[name]["phase_s"] = time.perf_counter() - t0
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--phases", default="batch,preview", help="comma-separated subset")
    add("--people", type=int, default=1_000_000, help="user profiles (default 1,000,000)")
    add("--events-per-person", type=int, default=20, help="events = people x this (default 20)")
    add("--days", type=int, default=90, help="the events' period, ending at now (default 90)")
    add("--seed", type=int, default=1)
    add("--lake-dir", default="/tmp/plait-audience-bench", help="where the lake is cached")
    add("--drop-lake", action="store_true", help="remove the lake when done")
    add("--runs", type=int, default=3, help="batch: timed runs of each side, alternating")
    add("--preview-repeat", type=int, default=5, help="preview: previews of each audience")
    add("--explain", default="", help="batch: write EXPLAIN ANALYZE of both queries here")
    add("--json", default="", help="also write the results to this file")
    args = parser.parse_args()
    asked = set(args.phases.split(",")) - {""}
    args.phases = [p for p in PHASES if p in asked]
    unknown = asked - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.days < 31:
        parser.error("--days: at least 31 (the audiences look at 30 days and before)")
    try:
        results = run(args)
        failures = summary(results)
    finally:
        if args.drop_lake:
            clear_lake(Path(args.lake_dir))
            print(f"removed the lake in {args.lake_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
