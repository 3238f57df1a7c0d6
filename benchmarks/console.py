#!/usr/bin/env python
"""Console benchmark: time to first render of the overview and of a profile page in real
Chromium, against the same API calls made by a plain HTTP client, in the same run.

Run by hand (never as a test), from the repository root:

    .venv/bin/python benchmarks/console.py                          # 1,000,000 events
    .venv/bin/python benchmarks/console.py --keep /tmp/plait-console  # fill once, run again
    .venv/bin/python benchmarks/console.py --database-url postgresql://postgres@127.0.0.1/test
                                          # on a fresh database of that PostgreSQL server

The store: a fresh embedded data directory with --events messages from --people persons
(each an identify linking an anonymous id, a user id and an email, then track events),
appended to the log and processed by the pipeline (not timed; with --keep, a directory
already filled is used as it is). Then `plait serve` runs on it, and for --runs rounds:

  api       httpx calls the endpoints the page calls (the server's share of the page).
  page      Chromium (Debian's, through Playwright) opens the console signed in and waits
            for the page's content: the overview's totals and charts, the profile's
            identity graph and timeline. Timed from the navigation's start to the moment
            the content is in the document (performance.now() in the page).

Target (the issue): each page's first render <= 1 s on this machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from import_files import drop_postgres, fresh_postgres
from ingest import free_port
from machine import describe

from plait.log import backend_for
from plait.pipeline.runner import Pipeline
from plait.runtime import tune_gc
from plait.spec import Enrichment, enrich, validate
from plait.store import open_store
from plait.store.workspaces import Workspaces

TARGET_SECONDS = 1.0
CHROMIUM = os.environ.get("PLAIT_TEST_CHROMIUM", "/usr/bin/chromium")
# Records when the page's content first appears (an init script runs before the page's
# own; the console's CSP does not apply to it).
WATCH = """
window.__rendered = null;
(function look() {
  if ((window.__wanted || []).every((selector) => document.querySelector(selector))) {
    window.__rendered = performance.now();
  } else {
    requestAnimationFrame(look);
  }
})();
"""


def fill(data_dir: Path, url: str, events: int, people: int) -> tuple[str, str]:
    """The workspace's data; returns an admin token and one person's user id."""
    store = open_store(url)
    repo = Workspaces(store)
    ws = repo.create_workspace("bench", "Benchmark")["id"]
    source = repo.create_source(ws, "Website", "javascript")[0]["id"]
    _, token = repo.create_token(ws, "bench", ["admin"])
    log = backend_for(store)
    env = Enrichment(received_at=datetime.now(UTC), workspace_id=ws, source_id=source)
    start = datetime.now(UTC) - timedelta(minutes=50)
    per_person = max(1, events // people)
    rows, n, t0 = [], 0, time.perf_counter()
    names = ("Product Viewed", "Product Added", "Order Completed", "Page Scrolled")
    for p in range(people):
        for i in range(per_person):
            at = (start + timedelta(microseconds=n * 3000 % 3_000_000_000)).isoformat()
            if i == 0:
                traits = {"email": f"person{p}@shop.example", "plan": ("free", "pro")[p % 2],
                          "country": ("FR", "DE", "US")[p % 3]}  # fmt: skip
                raw = {"type": "identify", "userId": f"user-{p}", "anonymousId": f"anon-{p}",
                       "traits": traits}  # fmt: skip
            else:
                raw = {"type": "track", "userId": f"user-{p}", "event": names[i % 4],
                       "properties": {"sku": f"sku-{i % 97}", "price": 19.5 + i % 7}}  # fmt: skip
            msg = enrich(validate({**raw, "timestamp": at}), env)
            rows.append((ws, source, msg["messageId"], msg["type"], time.time_ns() // 1000,
                         orjson.dumps(msg).decode()))  # fmt: skip
            n += 1
            if len(rows) == 10_000:
                log.append(rows)
                rows = []
    if rows:
        log.append(rows)
    print(f"  {n:,} messages appended in {time.perf_counter() - t0:.0f} s; processing…")
    t0 = time.perf_counter()
    pipeline = Pipeline(store, audiences=False)
    done = 0
    while count := pipeline.catch_up(ws):
        done += count
        if done // 100_000 != (done - count) // 100_000:
            print(
                f"    {done:,} processed ({done / (time.perf_counter() - t0):,.0f}/s)", flush=True
            )
    print(f"  processed in {time.perf_counter() - t0:.0f} s (not timed)")
    store.dispose()
    saved = {"token": token, "user": "user-1", "database_url": url}
    (data_dir / "bench.json").write_bytes(orjson.dumps(saved))
    return token, "user-1"


def serve(data_dir: Path, url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "PLAIT_DATA_DIR": str(data_dir), "PLAIT_DATABASE_URL": url,
           "PLAIT_PORT": str(port)}  # fmt: skip
    plait = Path(sys.executable).parent / "plait"
    server = subprocess.Popen([str(plait), "serve", "--no-demo"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    sys.exit("plait serve did not start")


def api_calls(url: str, token: str, profile_id: str | None) -> dict[str, list[str]]:
    """What each page calls on the way to its first render (as the console's modules do)."""
    space = "/v1/spaces/bench/collections/users/profiles"
    ref = f"segment_id:{profile_id}"
    return {
        "overview": ["/api/v1/me", "/api/v1/overview?minutes=60"],
        "profile": ["/api/v1/me", f"{space}/{ref}/traits?verbose=true&limit=200",
                    f"/api/v1/profiles/{ref}/explain", f"/api/v1/profiles/{ref}/audiences",
                    f"{space}/{ref}/consent", f"{space}/{ref}/events?limit=100",
                    "/api/v1/sources"],
    }  # fmt: skip


def timed_api(client: httpx.Client, paths: list[str]) -> float:
    """The page's calls, the first alone (as the page needs /me first), the rest at once
    in spirit: sequentially here, so the figure is an upper bound of the server's share."""
    t0 = time.perf_counter()
    for path in paths:
        client.get(path).raise_for_status()
    return time.perf_counter() - t0


def timed_page(browser, url: str, token: str, hash_path: str, wanted: list[str]) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    setup = (f"sessionStorage.setItem('plait.token', {orjson.dumps(token).decode()});"
             f"window.__wanted = {orjson.dumps(wanted).decode()};")  # fmt: skip
    context.add_init_script(setup + WATCH)
    page = context.new_page()
    page.goto(f"{url}/#/{hash_path}")
    deadline = time.monotonic() + 30
    # Polled (wait_for_function evaluates a string, which the console's CSP refuses).
    while (rendered := page.evaluate("window.__rendered")) is None:
        if time.monotonic() > deadline:
            sys.exit(f"{hash_path} did not render in 30 s")
        time.sleep(0.02)
    rendered /= 1000
    context.close()
    return rendered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="a data directory to fill once and reuse")
    parser.add_argument("--database-url", help="a PostgreSQL server (default: embedded SQLite)")
    args = parser.parse_args()
    tune_gc()  # as plait serve and plait worker do
    print(describe())
    import tempfile

    from playwright.sync_api import sync_playwright

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="plait-console-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    dropped = None  # a PostgreSQL database made for this run (without --keep: dropped)
    if (data_dir / "bench.json").exists():
        saved = orjson.loads((data_dir / "bench.json").read_bytes())
        token, user = saved["token"], saved["user"]
        database = saved.get("database_url") or f"sqlite:///{data_dir / 'plait.db'}"
        print(f"  using the data in {data_dir} ({database.split(':')[0]})")
    else:
        database = f"sqlite:///{data_dir / 'plait.db'}"
        if args.database_url:
            database, admin, name = fresh_postgres(args.database_url)
            dropped = None if args.keep else (admin, name)
        token, user = fill(data_dir, database, args.events, args.people)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = serve(data_dir, database, port)
    try:
        with httpx.Client(base_url=url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as client:  # fmt: skip
            found = client.get("/api/v1/overview?minutes=60").raise_for_status().json()
            events = sum(s["total"] for s in found["events"])
            profile = (
                client.get(f"/api/v1/profiles/user_id:{user}/explain")
                .raise_for_status()
                .json()["profile_id"]
            )
            print(f"  {events:,} events in the overview's hour, {found['profiles']['total']:,} "
                  f"profiles; profile page of {profile}")  # fmt: skip
            calls = api_calls(url, token, profile)
            # What the page shows when it has rendered: every selector present.
            pages = {"overview": ("overview", ["[data-testid=events-total]", "svg.chart polyline"]),
                     "profile": (f"profiles/{profile}", ["svg.graph [data-identifier]",
                                                         "[data-testid=timeline] li"])}  # fmt: skip
            results: dict[str, dict[str, list[float]]] = {p: {"api": [], "page": []} for p in pages}
            with sync_playwright() as pw:
                flags = ["--headless", "--no-sandbox", "--disable-gpu"]
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
                for run in range(args.runs):
                    for name, (path, wanted) in pages.items():
                        results[name]["api"].append(timed_api(client, calls[name]))
                        results[name]["page"].append(timed_page(browser, url, token, path, wanted))
                    print("  run " + str(run + 1) + ": " + ", ".join(
                        f"{n} page {r['page'][-1] * 1000:.0f} ms (api {r['api'][-1] * 1000:.0f} ms)"
                        for n, r in results.items()))  # fmt: skip
                browser.close()
    finally:
        server.terminate()
        server.wait(20)
        if dropped:
            drop_postgres(*dropped)
    for name, r in results.items():
        page, api = statistics.median(r["page"]), statistics.median(r["api"])
        verdict = "met" if page <= TARGET_SECONDS else "NOT met"
        print(f"  {name}: first render median {page * 1000:,.0f} ms (first run "
              f"{r['page'][0] * 1000:,.0f} ms), its API calls alone {api * 1000:,.0f} ms; "
              f"target <= {TARGET_SECONDS:.0f} s: {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
