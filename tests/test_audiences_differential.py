"""Real time and batch agree: the demo stream goes through the pipeline (every profile
evaluated in memory as its events arrive, merges and all), then the same audiences and
computed traits are evaluated in one DuckDB query over the lake; the memberships and values
must be equal, for 25 audiences covering every construct of the language."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa
from log_messages import append

from plait.audiences import batch, manage, scheduler
from plait.demo import generate
from plait.lake import use_lake_dir
from plait.pipeline.runner import Pipeline
from plait.store.schema import audience_members, computed_values
from plait.store.workspaces import Workspaces

END = datetime(2024, 6, 30, 12, tzinfo=UTC)
NOW = int(END.timestamp() * 1000)

TRAITS = [
    {"key": "orders_30d", "kind": "count", "event": "Order Completed", "window": "30 days"},
    {"key": "lifetime_revenue", "kind": "sum", "event": "Order Completed", "property": "revenue"},
    {"key": "avg_order", "kind": "avg", "event": "Order Completed", "property": "revenue"},
    {"key": "max_order", "kind": "max", "event": "Order Completed", "property": "total"},
    {"key": "min_order", "kind": "min", "event": "Order Completed", "property": "total",
     "window": "14 days"},
    {"key": "first_product", "kind": "first", "event": "Order Completed",
     "property": "products[0].name"},
    {"key": "last_plan", "kind": "last", "type": "identify", "property": "traits.plan"},
    {"key": "favourite_category", "kind": "most_frequent", "event": "Product Viewed",
     "property": "category"},
    {"key": "categories", "kind": "unique_list", "event": "Product Viewed",
     "property": "category", "where": "properties.price > 30"},
    {"key": "days_since_order", "kind": "days_since_last", "event": "Order Completed"},
    {"key": "calls", "kind": "count", "event": "Call Completed"},
    {"key": "pages_7d", "kind": "count", "type": "page", "window": "7 days"},
]  # fmt: skip
DEFINITIONS = [
    'performed "Order Completed" at least 2 times in last 30 days where properties.revenue > 50',
    'performed "Order Completed" and not performed "Order Completed" in last 14 days',
    'performed page at least 3 times in last 7 days where properties.path starts with "/products"',
    'performed "Product Viewed" at least 2 times in last 30 days '
    'and not performed "Order Completed" in last 30 days',
    'traits.plan = "pro"',
    'traits.plan in ["plus", "pro"] and traits.address.country in ["FR", "DE", "ES", "IT", "GB"]',
    "traits.createdAt in last 10 days",
    "account.traits.industry exists",
    "account.traits.employees > 100",
    "computed.lifetime_revenue >= 200",
    "computed.orders_30d >= 2 or computed.calls >= 1",
    'audience "a0" and not audience "a4"',
    'performed "Call Completed" where properties.satisfaction <= 2',
    'performed "Call Completed" exactly 1 times',
    'performed "Signed Up" where properties.method = "google"',
    "performed any at most 12 times",
    'performed "Order Completed" where properties.coupon exists',
    'performed "Order Completed" where context.library.name = "analytics-python"',
    'computed.favourite_category = "Apparel" or computed.categories contains "Outerwear"',
    "computed.days_since_order <= 7 and not computed.max_order > 300",
    'traits.email ends with "example.com" and not traits.phone exists',
    "performed identify at least 2 times",
    'performed "Order Completed" at least 2 times in last 60 days '
    "where (properties.revenue > 20 and not properties.coupon exists)",
    'performed page "Checkout" in last 3 days and not performed page "Order Confirmation" '
    "in last 3 days",
    'computed.last_plan != "free" and computed.pages_7d >= 1',
]


@pytest.fixture
def fed(store, tmp_path):
    use_lake_dir(tmp_path / "lake")
    repo = Workspaces(store)
    ws = repo.create_workspace("demo")["id"]
    src = repo.create_source(ws, "Website", "javascript")[0]["id"]
    audiences = [{"key": f"a{i}", "definition": d, "emit": "identify" if i % 3 else "both"}
                 for i, d in enumerate(DEFINITIONS)]  # fmt: skip
    manage.check(repo, ws, {"computed_traits": TRAITS, "audiences": audiences})
    manage.save(repo, ws, {"computed_traits": TRAITS, "audiences": audiences})
    messages = list(generate(250, seed=5, days=60, end=END))
    pipeline = Pipeline(store, clock=lambda: NOW, batch_size=500)
    for start in range(0, len(messages), 1500):
        append(store, ws, messages[start : start + 1500], src)
        pipeline.catch_up(ws)
    while pipeline.catch_up(ws):  # the messages the audiences emitted
        pass
    yield store, ws, tmp_path / "lake", len(messages)
    use_lake_dir(None)


def test_real_time_memberships_and_values_equal_the_batch_evaluation(fed):
    store, ws, lake_dir, count = fed
    assert count > 5000
    defs = scheduler.definitions(store, ws)
    assert len(defs.audiences) >= 20
    manage.fresh_lake(store, ws, lake_dir, 0)
    lake = batch.audience_members(lake_dir, ws, defs, list(defs.audiences), NOW)
    with store.engine.connect() as conn:
        live: dict[str, set[str]] = {key: set() for key in defs.audiences}
        for key, pid in conn.execute(
            sa.select(audience_members.c.audience_key, audience_members.c.profile_id).where(
                audience_members.c.workspace_id == ws
            )
        ):
            live[key].add(pid)
        c = computed_values.c
        query = sa.select(c.trait_key, c.profile_id, c.value).where(c.workspace_id == ws)
        stored = {(k, p): orjson.loads(v) for k, p, v in conn.execute(query)}
    for key in defs.audiences:
        assert live[key] == lake[key], (key, defs.audiences[key].text)
    sizes = sorted(len(m) for m in lake.values())
    assert sum(1 for n in sizes if n > 0) >= 18, sizes  # the audiences select something
    assert sum(1 for key in lake if 0 < len(lake[key]) < 200) >= 12, sizes  # and not everyone
    values = batch.trait_values(lake_dir, ws, defs, list(defs.traits), NOW)
    from_lake = {(k, p): v for k, by in values.items() for p, v in by.items()}
    assert set(from_lake) == set(stored)
    for pair, value in from_lake.items():
        if isinstance(value, float):
            assert math.isclose(value, stored[pair], rel_tol=1e-9), pair
        else:
            assert value == stored[pair], pair
    assert len({k for k, _ in stored}) == len(TRAITS)  # every trait has values
    # and a reconciliation of the same state (the batch path applied) changes nothing
    report = scheduler.reconcile(store, ws, lake_dir, NOW)
    assert report.from_lake > 100
    assert (report.entered, report.exited, report.traits) == (0, 0, 0)
