"""A website runs analytics.js (@segment/analytics-next from npm) in real Chromium against
Plait alone: the settings document comes from Plait's ``/v1/projects/{writeKey}/settings``
and the events go to its short paths, cross-origin, from a page served on another port.

Needs Debian's chromium (/usr/bin/chromium, or PLAIT_TEST_CHROMIUM), the Python
``playwright`` package (its bundled driver only: no ``playwright install``), Node.js and
``npm ci`` in tests/js (for @segment/analytics-next and esbuild, which bundles
tests/js/browser_entry.js). Runs on the embedded store only: the browser is what it tests.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from conftest import RunningServer, require

from plait.log import backend_for

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("PLAIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ESBUILD = JS_DIR / "node_modules" / ".bin" / "esbuild"  # a native binary or a node shim
ANALYTICS_NEXT = JS_DIR / "node_modules" / "@segment" / "analytics-next" / "package.json"

TRAITS = {"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro"}
PROPERTIES = {
    "orderId": "o-1001",
    "revenue": 42.5,
    "currency": "EUR",
    "products": [{"sku": "sku-1", "quantity": 2}],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The page's directory with the bundle built from browser_entry.js, served by a plain
    HTTP server on its own port (another origin than Plait's)."""
    require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    node = shutil.which("node")
    require(node is not None, "Node.js not found (apt-get install nodejs npm)")
    require(ANALYTICS_NEXT.exists() and ESBUILD.exists(),
            "@segment/analytics-next or esbuild missing: run `npm ci` in tests/js")  # fmt: skip
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "the Python playwright package is missing (pip install -e '.[test]')")

    root = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [str(ESBUILD), "browser_entry.js", "--bundle", "--format=iife",
         "--platform=browser", "--target=es2020", "--log-level=warning",
         f"--outfile={root / 'analytics.bundle.js'}"],
        cwd=JS_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, f"esbuild failed:\n{build.stderr}"

    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _write_page(root: Path, name: str, config: dict) -> None:
    (root / name).write_text(
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>Plait shop</title>\n"
        "<link rel='icon' href='data:,'>\n"
        f"<script>window.PLAIT_CONFIG = {json.dumps(config)};</script>\n"
        "<script src='analytics.bundle.js'></script></head>\n"
        "<body style='font-family: sans-serif'><h1>Plait shop</h1>"
        "<p>analytics.js (@segment/analytics-next) against Plait only</p>"
        "<pre id='status'>loading analytics.js</pre></body></html>\n"
    )


def _run_page(browser, server: RunningServer, site, page_name: str, config: dict):
    """Open the page, wait for its three calls, and return (result, requests, failures,
    console, context, page) with every request the browser made."""
    root, site_url = site
    _write_page(root, page_name, config)
    context = browser.new_context()
    requests, failures, console = [], [], []
    context.on("request", lambda r: requests.append(r))
    context.on("requestfailed", lambda r: failures.append(f"{r.method} {r.url}: {r.failure}"))
    page = context.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(f"{site_url}/{page_name}")
    try:
        page.wait_for_function("window.plaitResult !== undefined", timeout=20_000)
    except Exception as exc:
        urls = [r.url for r in requests]
        raise AssertionError(
            f"analytics.js did not finish: {exc}\nconsole: {console}\n"
            f"requests: {urls}\nfailed: {failures}"
        ) from None
    result = page.evaluate("window.plaitResult")
    assert result["ok"], f"{result['error']}\nconsole: {console}\nfailed: {failures}"
    return result, requests, failures, console, context, page


def _logged(server: RunningServer, expected: int, timeout: float = 10.0) -> list[dict]:
    log = backend_for(server.store)
    deadline = time.monotonic() + timeout
    while True:
        messages = [orjson.loads(r.payload) for r in log.read(workspace_id=server.workspace_id)]
        if len(messages) >= expected or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def _check_delivery(server: RunningServer, site_url: str, result, requests, failures, console):
    plait_host = urlsplit(server.url).netloc
    assert urlsplit(site_url).netloc != plait_host  # another origin: CORS is exercised

    # Nothing but the page's server and Plait: no Segment CDN, API or metrics.
    hosts = {urlsplit(r.url).hostname for r in requests}
    assert hosts == {"127.0.0.1"}, [r.url for r in requests]
    assert not failures, failures
    assert not [c for c in console if c.startswith(("error", "pageerror"))], console

    # The settings document came from Plait, and Segment.io points at Plait.
    settings_url = f"{server.url}/v1/projects/{server.write_key}/settings"
    assert settings_url in [r.url for r in requests if r.method == "GET"]
    assert result["segmentio"] == {
        "writeKey": server.write_key,
        "apiHost": f"{plait_host}/v1",
        "protocol": "http",
    }

    # One text/plain POST per call to the short paths, answered 200 with CORS headers.
    posts = [r for r in requests if r.method == "POST"]
    basic = base64.b64encode(f"{server.write_key}:".encode()).decode()
    assert sorted(r.url for r in posts) == sorted(f"{server.url}/v1/{p}" for p in "pit")
    for request in posts:
        headers = request.all_headers()
        assert headers["content-type"].startswith("text/plain")
        # analytics.js also sends the write key as Basic auth, which is not a CORS-safelisted
        # header: the browser sent this POST only after Plait's preflight allowed it.
        assert headers["authorization"] == f"Basic {basic}"
        assert headers["origin"] == site_url
        response = request.response()
        assert response is not None and response.status == 200, request.url
        assert response.all_headers()["access-control-allow-origin"] == site_url
        assert json.loads(request.post_data)["writeKey"] == server.write_key

    # And they are in the log, as sent.
    sent = {s["event"]["type"]: s for s in result["sent"]}
    assert all(s["failed"] is None for s in sent.values()), sent
    messages = {m["type"]: m for m in _logged(server, 3)}
    assert sorted(messages) == ["identify", "page", "track"]
    anonymous_id = result["anonymousId"]
    assert anonymous_id and result["userId"] == "user-42"
    for msg_type, message in messages.items():
        assert message["messageId"] == sent[msg_type]["event"]["messageId"]
        assert message["anonymousId"] == anonymous_id
        assert message["sourceId"] == server.source_id
        assert "writeKey" not in message
        assert message["context"]["library"]["name"] == "analytics.js"
        assert message["context"]["library"]["version"].startswith("npm:next-")
        assert message["context"]["page"]["url"].startswith(site_url)
        assert "HeadlessChrome" in message["context"]["userAgent"]
        assert message["receivedAt"] and message["timestamp"]

    page = messages["page"]
    assert (page["category"], page["name"]) == ("Docs", "Getting Started")
    assert page["properties"]["section"] == "install"
    assert page.get("userId") is None  # sent before identify

    identify = messages["identify"]
    assert identify["userId"] == "user-42"
    assert identify["traits"] == TRAITS

    track = messages["track"]
    assert track["userId"] == "user-42"
    assert track["event"] == "Order Completed"
    assert track["properties"] == PROPERTIES


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_analytics_next_with_api_host_override(browser, site, server: RunningServer):
    """The README's setup: cdnURL and the Segment.io integration both point at Plait."""
    _, site_url = site
    config = {
        "writeKey": server.write_key,
        "cdnURL": server.url,
        "apiHost": f"{urlsplit(server.url).netloc}/v1",
        "protocol": "http",
    }
    result, requests, failures, console, context, page = _run_page(
        browser, server, site, "override.html", config
    )
    try:
        _check_delivery(server, site_url, result, requests, failures, console)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "analytics-next.png"), full_page=True)
        context.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_analytics_next_with_cdn_url_only(browser, site, server: RunningServer):
    """Only cdnURL: the API host comes from Plait's settings document alone."""
    _, site_url = site
    config = {"writeKey": server.write_key, "cdnURL": server.url}
    result, requests, failures, console, context, page = _run_page(
        browser, server, site, "cdn-only.html", config
    )
    try:
        _check_delivery(server, site_url, result, requests, failures, console)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "analytics-next-cdn-only.png"), full_page=True)
        context.close()
