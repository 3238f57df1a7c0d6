"""The web console in real Chromium (Debian's, driven by Playwright with its executable
path) against a running Plait: signing in, the overview, sources with their keys and
snippets, the live debugger fed through the real HTTP API, and roles held by the API.
Screenshots of each area go to test-artifacts/console/.

Needs /usr/bin/chromium (or PLAIT_TEST_CHROMIUM) and the Python ``playwright`` package
(its bundled driver only: no ``playwright install``). Runs on the embedded store: the
browser is what it tests; the API under it runs on both backends in test_users.py.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import RunningServer, require, start_server, wait_processed
from segment.analytics import Client as SegmentClient

from plait.store.users import Users
from plait.store.workspaces import Workspaces

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("store_url", ["sqlite"],
                                                           indirect=True)]  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "console"
CHROMIUM = os.environ.get("PLAIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PASSWORD = "correct horse battery"
LAPTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def browser():
    require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the Python playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(store, tmp_path) -> RunningServer:
    """conftest's server, with its data and lake in the test's directory and the audience
    scheduler ticking fast (previews and memberships read the lake)."""
    repo = Workspaces(store)
    workspace = repo.create_workspace("acme", "Acme")
    source, key = repo.create_source(workspace["id"], "Website", "javascript")
    _, token = repo.create_token(workspace["id"], "test admin", ["admin"])
    thread, url = start_server(store, data_dir=tmp_path, lake_dir=tmp_path / "lake",
                               pipeline_poll_seconds=0.05, audience_tick_seconds=0.2,
                               lake_snapshot_seconds=0.0)  # fmt: skip
    yield RunningServer(url, store, thread.server.config.app, workspace["id"], source["id"],
                        key, token)  # fmt: skip
    thread.stop()


@pytest.fixture
def users(server: RunningServer):
    made = Users(server.store)
    for email, role in (("ann@acme.test", "admin"), ("eve@acme.test", "editor"),
                        ("vic@acme.test", "viewer")):  # fmt: skip
        made.create(server.workspace_id, email, role, PASSWORD, name=email.split("@")[0].title())
    return made


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    refusals = ("400", "401", "403")  # what a test provokes on purpose (shown on the page)

    def on_console(message) -> None:
        if message.type == "error" and not any(r in message.text for r in refusals):
            problems.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.problems = problems
    yield page
    context.close()
    assert not problems, problems  # no script error, no CSP refusal


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, server: RunningServer, email: str, password: str = PASSWORD) -> None:
    page.goto(server.url + "/")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def admin_get(server: RunningServer, path: str) -> dict:
    """What the API answers an admin (to check what the page saved)."""
    answer = httpx.get(server.url + path, headers={"Authorization": f"Bearer {server.admin_token}"},
                       timeout=10)  # fmt: skip
    return answer.raise_for_status().json()


def assert_revoked(server: RunningServer, token: str) -> None:
    """The page signs out at once and ends the session in the background: soon after."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        me = httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        if me.status_code == 401:
            return
        time.sleep(0.05)
    raise AssertionError("the token still works after signing out")


def send_events(server: RunningServer, write_key: str, events: list[tuple[str, str]]) -> None:
    """Through the real HTTP API, with Segment's Python SDK."""
    client = SegmentClient(write_key, host=server.url, sync_mode=True)
    for user, event in events:
        client.track(user, event, {"revenue": 12.5})
    client.flush()


def test_signing_in_shows_the_overview_with_what_arrived(server, users, page):
    send_events(server, server.write_key, [(f"user-{i}", "Order Completed") for i in range(7)])
    sign_in(page, server, "ann@acme.test", "a wrong password")
    page.get_by_role("alert").wait_for()
    assert "wrong email or password" in page.get_by_role("alert").inner_text()

    sign_in(page, server, "ann@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    assert page.get_by_test_id("role").inner_text() == "admin"
    assert page.get_by_test_id("workspace").inner_text() == "Acme"
    cards = page.get_by_test_id("events-total")
    cards.wait_for()
    assert cards.inner_text().startswith("7")
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    overview = httpx.get(f"{server.url}/api/v1/overview", headers=admin, timeout=10).json()
    profiles = page.get_by_test_id("profiles-total").inner_text().split()[0]
    assert int(profiles) == overview["profiles"]["total"]
    # One line for the website's source, and a legend naming it with its count.
    line = page.locator("polyline[data-series='Website']")
    assert line.count() == 1
    assert "Website (7)" in page.locator("figure").first.inner_text()
    assert page.locator("nav a[aria-current='page']").inner_text() == "Overview"
    shot(page, "overview")

    # The session survives a reload (it is the tab's), and signing out ends it.
    page.reload()
    page.get_by_role("heading", name="Overview").wait_for()
    token = page.evaluate("sessionStorage.getItem('plait.token')")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in to Plait").wait_for()
    assert_revoked(server, token)


def test_sources_keys_snippets_and_the_live_debugger(server, users, page):
    sign_in(page, server, "eve@acme.test")
    page.get_by_role("link", name="Sources").click()
    page.get_by_role("heading", name="Sources").wait_for()
    page.get_by_label("Name").fill("Checkout API")
    page.get_by_label("Type").select_option("python")
    page.get_by_role("button", name="Create source").click()
    page.get_by_role("heading", name="Checkout API").wait_for()
    key = page.get_by_test_id("new-key").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", key), key
    assert f'analytics.write_key = "{key}"' in page.get_by_test_id("snippet-Python").inner_text()
    assert server.url in page.get_by_test_id("snippet-Node").inner_text()

    # The live debugger shows what arrives through the real API, newest first.
    page.get_by_text("Listening…").first.wait_for()
    send_events(server, key, [("ada", "Cart Viewed"), ("ada", "Order Completed")])
    events = page.get_by_test_id("debugger-events")
    events.get_by_role("button", name=re.compile("Order Completed")).wait_for(timeout=10_000)
    items = events.get_by_role("button").all_inner_texts()
    assert "track · Order Completed · ada" in items[0] and "Cart Viewed" in items[1]
    events.get_by_role("button", name=re.compile("Order Completed")).click()
    detail = page.get_by_test_id("debugger-detail").inner_text()
    assert '"event": "Order Completed"' in detail and '"revenue": 12.5' in detail
    # Filtered by event: only what matches comes in.
    page.get_by_label("Event", exact=True).fill("Cart*")
    page.get_by_label("Event", exact=True).press("Enter")
    send_events(server, key, [("bob", "Order Completed"), ("bob", "Cart Viewed")])
    events.get_by_role("button", name=re.compile("Cart Viewed · bob")).wait_for(timeout=10_000)
    assert events.get_by_role("button").count() == 1
    shot(page, "sources")

    # Rotating makes a new key and revokes the old one: the old stops working.
    page.get_by_role("button", name="Rotate keys").click()
    page.get_by_test_id("new-key").filter(has_not_text=key).wait_for()
    rotated = page.get_by_test_id("new-key").inner_text()
    assert rotated != key
    assert page.get_by_role("row").filter(has_text="revoked").count() == 1
    refused = httpx.post(f"{server.url}/v1/track", auth=(key, ""), timeout=10,
                         json={"userId": "x", "event": "E"})  # fmt: skip
    assert refused.status_code == 401


def test_a_viewer_sees_but_cannot_change_anything(server, users, page):
    sign_in(page, server, "vic@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    assert page.get_by_test_id("role").inner_text() == "viewer"
    page.get_by_role("link", name="Sources").click()
    page.get_by_role("link", name="Website").click()
    page.get_by_role("heading", name="Write keys").wait_for()
    assert page.get_by_role("button", name="New key").count() == 0
    assert page.get_by_role("button", name=re.compile("Revoke")).count() == 0
    page.get_by_role("link", name="← Sources").click()
    page.get_by_role("heading", name="Sources").wait_for()
    assert page.get_by_role("button", name="Create source").count() == 0
    # Calling the actions directly, with the page's own session, is refused by the API.
    statuses = page.evaluate("""async () => {
        const auth = {Authorization: `Bearer ${sessionStorage.getItem('plait.token')}`,
                      'Content-Type': 'application/json'};
        const calls = [
          ['POST', '/api/v1/sources', {name: 'Sneaky', type: 'http'}],
          ['POST', '/api/v1/users',
           {email: 'x@acme.test', role: 'admin', password: 'x'.repeat(12)}],
          ['PUT', '/api/v1/audiences/vip', {definition: "traits.plan = 'pro'"}],
          ['POST', '/api/v1/regulations',
           {regulationType: 'DELETE_ONLY', subjectType: 'USER_ID', subjectIds: ['a']}],
        ];
        const out = [];
        for (const [method, path, body] of calls) {
          out.push((await fetch(path, {method, headers: auth, body: JSON.stringify(body)})).status);
        }
        return out;
    }""")
    assert statuses == [403, 403, 403, 403]
    names = [s["name"] for s in server.repo.list_sources(server.workspace_id)]
    assert names == ["Website"]
    shot(page, "viewer")


def test_a_token_signs_in_and_an_ended_session_asks_again(server, users, page):
    page.goto(server.url + "/")
    page.get_by_text("Sign in with an API token").click()
    page.get_by_label("Token", exact=True).fill(server.admin_token)
    page.get_by_role("button", name="Use token").click()
    page.get_by_role("heading", name="Overview").wait_for()
    assert page.get_by_test_id("role").inner_text() == "admin"
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in to Plait").wait_for()
    assert_revoked(server, server.admin_token)  # signing out revokes what signed in

    sign_in(page, server, "eve@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    users.update(server.workspace_id, "eve@acme.test", role="viewer")  # ends her sessions
    page.get_by_role("link", name="Sources").click()
    page.get_by_text("Your session ended: sign in again.").wait_for()


def test_pages_are_keyboard_navigable_labelled_and_fit_a_laptop(server, users, page):
    sign_in(page, server, "ann@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    for width in (1280, 1024):
        page.set_viewport_size({"width": width, "height": 800})
        for area in (
            "overview",
            "sources",
            "sources/Website",
            "profiles",
            "audiences",
            "audiences/new",
            "plans",
            "plans/new",
            "destinations",
            "destinations/new",
            "privacy",
            "users",
        ):
            page.goto(f"{server.url}/#/{area}")
            page.locator("main h1").wait_for()
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 0, (area, width, overflow)
            unlabelled = page.evaluate("""() => [...document.querySelectorAll(
                'input, select, textarea, button')].filter(el => !(el.labels?.length
                || el.getAttribute('aria-label') || el.textContent.trim()))
                .map(el => el.outerHTML)""")
            assert unlabelled == [], (area, unlabelled)
    # The keyboard alone: tab to the navigation and open Sources with Enter.
    page.goto(f"{server.url}/#/overview")
    page.locator("main h1").wait_for()
    focused = []
    for _ in range(8):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.textContent.trim()"))
        if focused[-1] == "Sources":
            break
    assert focused[-1] == "Sources", focused
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Sources").wait_for()


def wait_for_profile(server: RunningServer, identifier: str) -> dict:
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = httpx.get(f"{server.url}/api/v1/profiles/{identifier}/explain", headers=admin,
                          timeout=10)  # fmt: skip
        if found.status_code == 200 and len(found.json()["identifiers"]) >= 3:
            return found.json()
        time.sleep(0.1)
    raise AssertionError(f"no profile for {identifier}")


def test_a_profile_found_by_email_shows_its_graph_traits_timeline_and_unmerges(server, users, page):
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    client.page(anonymous_id="anon-1", name="Home")
    client.identify("u1", {"email": "ada@example.com", "plan": "pro"}, anonymous_id="anon-1")
    client.track("u1", "Order Completed", {"revenue": 10})
    client.identify("u2", {"email": "bob@example.com"})
    explain = wait_for_profile(server, "email:ada@example.com")

    sign_in(page, server, "ann@acme.test")
    page.get_by_role("link", name="Profiles").click()
    page.get_by_label("Identifier").fill("ADA@example.com")  # normalized as the pipeline does
    page.get_by_role("button", name="Search").click()
    found = page.get_by_role("table", name="Profiles found")
    found.get_by_role("link").click()
    page.get_by_test_id("profile-id").wait_for()
    assert page.get_by_test_id("profile-id").inner_text() == explain["profile_id"]

    nodes = page.locator("svg.graph [data-identifier]")
    assert sorted(nodes.evaluate_all("ns => ns.map(n => n.dataset.identifier)")) == [
        "anonymous_id:anon-1", "email:ada@example.com", "user_id:u1"]  # fmt: skip
    assert page.locator("svg.graph line.edge").count() == len(explain["edges"]) == 2
    page.locator("svg.graph [data-identifier='email:ada@example.com']").focus()
    assert "email:ada@example.com, first seen in message" in page.get_by_test_id(
        "graph-picked").inner_text()  # fmt: skip
    plan = page.get_by_test_id("traits").get_by_role("row").filter(has_text="plan")
    assert "pro" in plan.inner_text() and "Website" in plan.inner_text()
    timeline = page.get_by_test_id("timeline").locator("summary").all_inner_texts()
    assert len(timeline) == 3 and "track · Order Completed" in timeline[0]
    shot(page, "profile")

    # An admin takes the anonymous id out: the messages are resolved again without it.
    unmerge = page.get_by_role("form", name="Unmerge")
    unmerge.get_by_label("Identifier").select_option("anonymous_id:anon-1")
    unmerge.get_by_label("Reason").fill("shared computer")
    unmerge.get_by_role("button", name="Unmerge").click()
    done = page.get_by_role("status").filter(has_text="Unmerged: 3 messages resolved again")
    done.wait_for()
    after = httpx.get(f"{server.url}/api/v1/profiles/email:ada@example.com/explain", timeout=10,
                      headers={"Authorization": f"Bearer {server.admin_token}"}).json()  # fmt: skip
    assert {f"{i['type']}:{i['value']}" for i in after["identifiers"]} == {
        "email:ada@example.com", "user_id:u1"}  # fmt: skip
    # The link goes to the profile the person is now, whose lineage tells the unmerge.
    done.get_by_role("link", name=after["profile_id"]).click()
    page.get_by_test_id("profile-id").filter(has_text=after["profile_id"]).wait_for()
    assert page.locator("svg.graph [data-identifier]").count() == 2


def test_a_viewer_sees_a_profile_without_the_unmerge(server, users, page):
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    client.identify("u1", {"email": "ada@example.com"}, anonymous_id="anon-1")
    explain = wait_for_profile(server, "email:ada@example.com")
    sign_in(page, server, "vic@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    page.goto(f"{server.url}/#/profiles/{explain['profile_id']}")
    page.get_by_test_id("profile-id").wait_for()
    assert page.locator("svg.graph [data-identifier]").count() == 3
    assert page.get_by_role("form", name="Unmerge").count() == 0
    refused = page.evaluate("""async (id) => (await fetch(
        `/api/v1/profiles/segment_id:${id}/unmerge`, {method: 'POST', headers: {
          Authorization: `Bearer ${sessionStorage.getItem('plait.token')}`},
          body: JSON.stringify({identifier: 'anonymous_id:anon-1'})})).status""",
                            explain["profile_id"])  # fmt: skip
    assert refused == 403


def test_an_audience_built_with_help_previews_as_typed_and_shows_where_it_syncs(
    server, users, page
):
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    for user, orders in (("u1", 3), ("u2", 2), ("u3", 1)):
        client.identify(user, {"email": f"{user}@example.com", "plan": "pro"})
        for _ in range(orders):
            client.track(user, "Order Completed", {"revenue": 20, "currency": "EUR"})
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    deadline = time.monotonic() + 15
    while httpx.get(f"{server.url}/api/v1/overview", headers=admin).json()[
            "profiles"]["total"] < 3 and time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.1)

    sign_in(page, server, "eve@acme.test")
    page.get_by_role("link", name="Audiences").click()
    page.get_by_role("link", name="New audience").click()
    page.get_by_label("Key").fill("repeat_buyers")
    page.get_by_label("Name").fill("Repeat buyers")
    # What has been seen is offered: the event with its count, its properties, the traits.
    page.get_by_role("button", name='Insert performed "Order Completed"').click()
    assert page.get_by_role("button", name="Insert properties.revenue").count() == 1
    assert page.get_by_role("button", name="Insert traits.plan").count() == 1
    definition = page.get_by_label("Definition")
    assert definition.input_value() == 'performed "Order Completed"'
    # Completion as typed, by the keyboard: the event's name after performed, a trait.
    definition.fill("")
    completions = page.get_by_role("listbox", name="Completions")
    definition.type('performed "Or')
    completions.get_by_role("option", name="Order Completed").wait_for()
    definition.press("Enter")
    assert definition.input_value() == 'performed "Order Completed"'
    assert completions.is_hidden()
    definition.type(" at least 2 times and")
    page.get_by_test_id("preview").get_by_text("Not yet right").wait_for()
    definition.type(" pla")  # found by the trait's name alone
    assert completions.get_by_role("option").all_inner_texts() == ["traits.plan"]
    shot(page, "audience-completion")
    definition.press("Escape")
    assert completions.is_hidden()
    definition.type("n")
    definition.press("Enter")
    assert definition.input_value().endswith("and traits.plan")
    definition.type(' = "pro"')
    size = page.get_by_test_id("preview-size")
    size.wait_for()
    text = 'performed "Order Completed" at least 2 times and traits.plan = "pro"'
    expected = httpx.post(f"{server.url}/api/v1/audiences/preview", headers=admin, timeout=30,
                          json={"definition": text}).json()  # fmt: skip
    assert expected["size"] == 2 and size.inner_text() == "2"
    assert page.get_by_role("list", name="Sample").get_by_role("link").count() == 2
    shot(page, "audience-builder")
    page.get_by_role("button", name="Save audience").click()

    page.get_by_test_id("definition").wait_for()
    assert page.get_by_test_id("definition").inner_text() == text
    hook = {"type": "webhook", "audiences": ["repeat_buyers"],
            "settings": {"url": "http://127.0.0.1:9/hook"}}  # fmt: skip
    assert httpx.put(f"{server.url}/api/v1/destinations/crm_hook", headers=admin,
                     json=hook).status_code == 200  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the scheduler backfills the new audience
        page.reload()
        page.get_by_test_id("audience-size").wait_for()
        if page.get_by_test_id("audience-size").inner_text().startswith("2"):
            break
        time.sleep(0.3)
    assert page.get_by_test_id("audience-size").inner_text().startswith("2")
    assert "crm_hook (webhook)" in page.get_by_test_id("syncs").inner_text()
    assert page.locator("polyline[data-series='entered']").count() == 1
    assert page.get_by_role("table", name="Latest changes").get_by_role("row").count() == 3
    shot(page, "audience")


class Sink:
    """A webhook receiver: 400 to the events named in ``refuse``, else 200."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict] = []
        self.refuse = {"Broken Event"}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the standard library's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                refused = body.get("event") in sink.refuse
                if not refused:
                    sink.received.append(body)
                self.send_response(400 if refused else 200)
                self.end_headers()
                self.wfile.write(b'{"error": "bad event"}' if refused else b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_destination_connected_previewed_and_its_dead_letters_replayed(server, users, page):
    sink = Sink()
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    client.identify("u1", {"plan": "pro"})
    client.track("u1", "Order Completed", {"revenue": 5})
    wait_processed(server.store, 2)

    sign_in(page, server, "eve@acme.test")
    page.get_by_role("link", name="Destinations").click()
    page.get_by_role("link", name="Connect a destination").click()
    page.get_by_label("Key", exact=True).fill("crm_hook")
    # The settings' form is the connector's: Mixpanel asks for its service account.
    page.get_by_role("combobox", name="Type").select_option("mixpanel")
    assert page.get_by_label("secret (required)").get_attribute("type") == "password"
    endpoint = page.get_by_label("endpoint").get_attribute("placeholder")
    assert endpoint == "e.g. https://api.mixpanel.com"
    page.get_by_label("project_id (required)").fill("123")
    page.get_by_role("combobox", name="Type").select_option("webhook")  # Mixpanel's go
    settings_json = page.get_by_label("Settings (JSON)")
    assert json.loads(settings_json.input_value()) == {}
    page.get_by_label("url (required)").fill(sink.url)
    page.get_by_label("timeout", exact=True).fill("10")
    page.get_by_label("signature", exact=True).select_option("sha256")
    page.get_by_label("headers", exact=True).fill('{"X-Team": "growth"}')
    assert json.loads(settings_json.input_value()) == {
        "url": sink.url,
        "timeout": 10,
        "signature": "sha256",
        "headers": {"X-Team": "growth"},
    }
    # JSON edited by hand fills the form; the form writes the JSON.
    settings_json.fill(json.dumps({"url": sink.url}))
    settings_json.blur()
    assert page.get_by_label("timeout", exact=True).input_value() == ""
    assert page.get_by_label("signature", exact=True).input_value() == ""  # the default
    page.get_by_label("Filter").fill("event == 'Nothing Like It'")
    page.get_by_role("button", name="Preview on the latest event").click()
    outcome = page.get_by_test_id("preview-outcome")
    outcome.filter(has_text="filtered").wait_for()
    assert '"event": "Order Completed"' in page.get_by_test_id("preview-before").inner_text()
    assert page.get_by_test_id("preview-after").inner_text() == "(nothing)"
    page.get_by_label("Filter").fill("type == 'track'")
    page.get_by_role("button", name="Preview on the latest event").click()
    outcome.filter(has_text="sent").wait_for()
    assert '"revenue": 5' in page.get_by_test_id("preview-after").inner_text()
    older = page.get_by_role("button", name="Older event")
    older.click()  # a step back through real events: the identify before it
    outcome.filter(has_text="filtered: its filter leaves the message out").wait_for()
    assert '"type": "identify"' in page.get_by_test_id("preview-before").inner_text()
    assert older.is_disabled()  # nothing older
    # Its mapping, tried before it is saved: rename the event, compute a property.
    page.get_by_role("button", name="Add a transformation").click()
    page.get_by_label("Name", exact=True).fill("crm shape")
    page.get_by_label("From event").fill("Order Completed")
    page.get_by_label("To event").fill("Purchase")
    page.get_by_role("button", name="Add a rule to transformation 1").click()
    page.get_by_role("combobox", name="Rule 2").select_option("derive_property")
    page.get_by_label("Path to set").fill("properties.cents")
    page.get_by_label("Expression", exact=True).fill("round(properties.revenue * 100")
    page.get_by_role("button", name="Preview on the latest event").click()
    alert = page.get_by_role("alert")
    alert.filter(has_text="mapping[0].rules[1].derive_property.expr").wait_for()
    page.get_by_label("Expression", exact=True).fill("round(properties.revenue * 100)")
    page.get_by_role("button", name="Preview on the latest event").click()
    after = page.get_by_test_id("preview-after")
    after.filter(has_text='"event": "Purchase"').wait_for()
    assert '"cents": 500' in after.inner_text()
    assert '"event": "Order Completed"' in page.get_by_test_id("preview-before").inner_text()
    shot(page, "destination-editor")
    page.get_by_role("button", name="Save destination").click()
    page.get_by_test_id("delivered").wait_for()

    # What comes from now on: one delivered, one refused (a dead letter), one filtered.
    client.track("u1", "Order Completed", {"revenue": 7})
    client.track("u2", "Broken Event")
    client.identify("u3", {"plan": "pro"})
    failed = page.get_by_test_id("failed")
    failed.filter(has_text=re.compile(r"^1")).wait_for(timeout=20_000)
    assert page.get_by_test_id("delivered").inner_text().startswith("1")
    letters = page.get_by_role("table", name="Dead letters")
    assert "400" in letters.inner_text() and "bad event" in letters.inner_text()
    shot(page, "destination")

    sink.refuse.clear()  # the receiver is fixed: the dead letter goes again
    page.get_by_role("button", name="Replay dead letters").click()
    page.get_by_test_id("delivered").filter(has_text=re.compile(r"^2")).wait_for(timeout=20_000)
    assert page.get_by_test_id("failed").inner_text().startswith("0")
    assert [m["event"] for m in sink.received] == ["Purchase", "Broken Event"]
    assert sink.received[0]["properties"]["cents"] == 700
    assert "crm shape" in page.get_by_test_id("mapping").inner_text()
    # Edited later: the saved mapping comes back rule by rule; a rule removed stays removed.
    page.get_by_role("link", name="Edit").click()
    assert page.get_by_label("url (required)").input_value() == sink.url
    assert page.get_by_label("To event").input_value() == "Purchase"
    page.get_by_label("To event").fill("Order Placed")
    page.get_by_role("button", name="Remove rule 2").click()
    page.get_by_role("button", name="Save destination").click()
    page.get_by_test_id("mapping").filter(has_text="Order Placed").wait_for()
    assert "cents" not in page.get_by_test_id("mapping").inner_text()

    # A viewer sees the health, but no control, and the API refuses the replay.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, "vic@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    page.goto(f"{server.url}/#/destinations/crm_hook")
    page.get_by_test_id("delivered").wait_for()
    assert page.get_by_role("link", name="Edit").count() == 0
    assert "Order Placed" in page.get_by_test_id("mapping").inner_text()
    refused = page.evaluate(
        """async () => (await fetch("/api/v1/destinations/crm_hook/mapping", {method: "PUT",
             headers: {"Authorization": `Bearer ${sessionStorage.getItem("plait.token")}`,
                       "Content-Type": "application/json"},
             body: JSON.stringify({mapping: []})})).status"""
    )
    assert refused == 403
    page.goto(f"{server.url}/#/destinations")
    page.get_by_role("table", name="Destinations").wait_for()
    assert page.get_by_role("link", name="Connect a destination").count() == 0


def test_privacy_requests_filed_followed_with_receipts_exports_and_the_audit_log(
    server, users, page
):
    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    client.identify("u9", {"email": "gone@example.com"})
    client.identify("u8", {"email": "stays@example.com"})
    client.track("u9", "Order Completed")
    wait_processed(server.store, 3)

    sign_in(page, server, "ann@acme.test")
    page.get_by_role("link", name="Privacy").click()
    access = page.get_by_role("form", name="Access request")
    access.get_by_label("Identifier").fill("email:stays@example.com")
    with page.expect_download() as exported:
        access.get_by_role("button", name="Download their data").click()
    document = json.loads(Path(exported.value.path()).read_text())
    assert "stays@example.com" in json.dumps(document)
    assert "gone@example.com" not in json.dumps(document)

    filing = page.get_by_role("form", name="File a deletion or suppression")
    filing.get_by_label("Kind").select_option("DELETE_INTERNAL")
    filing.get_by_label("Identifier type").select_option("USER_ID")
    filing.get_by_label("Identifiers").fill("u9")
    filing.get_by_role("button", name="File request").click()
    filed = page.get_by_role("status").filter(has_text="filed")
    filed.wait_for()
    request_id = re.search(r"reg_\w+", filed.inner_text()).group(0)
    page.get_by_test_id(f"status-{request_id}").filter(has_text="FINISHED").wait_for(
        timeout=20_000)  # fmt: skip
    with page.expect_download() as receipt:
        page.get_by_role("button", name=f"Download the receipt of {request_id}").click()
    saved = json.loads(Path(receipt.value.path()).read_text())
    assert saved["id"] == request_id and saved["receipt"]
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    gone = httpx.get(f"{server.url}/api/v1/profiles/user_id:u9/explain", headers=admin)
    assert gone.status_code == 404

    # The audit log names the user who filed it, filtered by action.
    log = page.get_by_role("form", name="Filter the audit log")
    log.get_by_label("Action").fill("privacy")
    log.get_by_role("button", name="Filter").click()
    rows = page.get_by_role("table", name="Audit log").get_by_role("row")
    rows.filter(has_text="privacy.request").first.wait_for()
    ann = users.get(server.workspace_id, "ann@acme.test")["id"]
    assert ann in page.get_by_role("table", name="Audit log").inner_text()
    # Long JSON wraps within the page.
    assert page.evaluate("document.documentElement.scrollWidth - innerWidth") <= 0
    shot(page, "privacy")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, "vic@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    page.get_by_role("link", name="Privacy").click()
    page.get_by_role("table", name="Privacy requests").wait_for()
    assert page.get_by_role("form", name="File a deletion or suppression").count() == 0


def test_a_tracking_plan_edited_its_violations_and_the_quarantine_replayed(server, users, page):
    sign_in(page, server, "ann@acme.test")
    page.get_by_role("link", name="Tracking plans").click()
    page.get_by_role("link", name="New plan").click()
    page.get_by_label("Plan id").fill("main")
    plan = {"name": "Main plan", "sources": ["Website"],
            "modes": {"unplanned_event": "allow", "schema_violation": "block"},
            "events": {"Order Completed": {"properties": {
                "type": "object", "required": ["revenue"],
                "properties": {"revenue": {"type": "number"}}}}}}  # fmt: skip
    page.get_by_label("Plan (JSON, as in the workspace file)").fill(
        json.dumps({**plan, "modes": 3})
    )
    page.get_by_role("button", name="Save plan").click()
    page.get_by_role("alert").filter(has_text="modes").wait_for()  # the API names the field
    page.get_by_label("Plan (JSON, as in the workspace file)").fill(json.dumps(plan))
    page.get_by_role("button", name="Save plan").click()
    page.get_by_test_id("plan-version").filter(has_text="version 1").wait_for()

    client = SegmentClient(server.write_key, host=server.url, sync_mode=True)
    client.track("u1", "Order Completed", {"revenue": "twelve"})  # blocked: quarantined
    client.track("u1", "Order Completed", {"revenue": 12})
    client.track("u1", "Coupon Tried")  # unplanned, allowed
    wait_processed(server.store, 2)  # the blocked one is never a processed message
    page.get_by_role("link", name="← Tracking plans").click()
    by_event = page.get_by_role("table", name="Violations by event")
    by_event.get_by_role("row").filter(has_text="Coupon Tried").wait_for()
    assert "▲ 1" in by_event.get_by_role("row").filter(has_text="Coupon Tried").inner_text()
    by_property = page.get_by_role("table", name="Violations by property")
    assert "revenue" in by_property.inner_text()
    quarantine = page.get_by_role("table", name="Quarantine")
    assert quarantine.get_by_role("row").count() == 2  # the header and the blocked one
    assert '"twelve"' in quarantine.locator("pre").first.text_content()
    shot(page, "tracking-plans")

    # The plan is relaxed, and the quarantined message replayed through it passes.
    page.get_by_role("link", name="main").click()
    relaxed = {**plan, "events": {"Order Completed": {"properties": {"type": "object"}}}}
    page.get_by_label("Plan (JSON, as in the workspace file)").fill(json.dumps(relaxed))
    page.get_by_role("button", name="Save plan").click()
    page.get_by_text("Saved as version 2.").wait_for()
    page.get_by_role("link", name="← Tracking plans").click()
    page.get_by_role("checkbox", name=re.compile("Select ")).check()
    page.get_by_role("button", name="Replay selected").click()
    page.get_by_text("Replayed 1: 1 passed, 0 still blocked.").wait_for()
    assert "Nothing is quarantined." in page.get_by_role("table", name="Quarantine").inner_text()


def test_a_tracking_plan_built_in_the_form_keeps_what_the_form_does_not_show(server, users, page):
    sign_in(page, server, "ann@acme.test")
    page.get_by_role("link", name="Tracking plans").click()
    page.get_by_role("link", name="New plan").click()
    page.get_by_label("Plan id").fill("checkout")
    page.get_by_label("Name", exact=True).fill("Checkout plan")
    page.get_by_role("checkbox", name="Website").check()
    page.get_by_label("Unplanned properties").select_option("block")
    page.get_by_label("Remove event Order Completed").click()
    # The keyboard alone: Enter adds the event, the focus moves to its new property.
    page.get_by_label("New event").fill("Cart Viewed")
    page.get_by_label("New event").press("Enter")
    page.keyboard.type("cart_id")
    page.keyboard.press("Enter")
    page.get_by_label("cart_id is required (Cart Viewed)").check()
    page.get_by_label("New property (Cart Viewed)").fill("items")
    page.get_by_role("button", name="Add property to Cart Viewed").click()
    page.get_by_label("Type of items (Cart Viewed)").select_option("integer")
    page.get_by_label("New property (identify)").fill("email")
    page.get_by_label("New property (identify)").press("Enter")
    page.get_by_role("button", name="Save plan").click()
    page.get_by_test_id("plan-version").filter(has_text="version 1").wait_for()
    plan = admin_get(server, "/api/v1/tracking-plans/checkout")["plan"]
    assert plan["name"] == "Checkout plan" and plan["sources"] == ["Website"]
    assert plan["modes"]["unplanned_property"] == "block"
    assert plan["modes"]["schema_violation"] == "block"  # the template's, untouched
    assert plan["events"] == {"Cart Viewed": {"properties": {"type": "object",
        "properties": {"cart_id": {"type": "string"}, "items": {"type": "integer"}},
        "required": ["cart_id"]}}}  # fmt: skip
    assert plan["identify"] == {
        "traits": {"type": "object", "properties": {"email": {"type": "string"}}}
    }
    shot(page, "tracking-plan-form")

    # JSON edited by hand draws the form again; the form keeps what it does not show.
    json_box = page.get_by_label("Plan (JSON, as in the workspace file)")
    body = json.loads(json_box.input_value())
    body["events"]["Cart Viewed"]["properties"]["properties"]["cart_id"]["pattern"] = "^c_"
    body["events"]["Cart Viewed"]["properties"]["properties"]["coupon"] = {
        "type": ["string", "null"]
    }
    json_box.fill(json.dumps(body))
    json_box.blur()
    assert page.get_by_label("Type of coupon (Cart Viewed)").input_value() == "other"
    page.get_by_label("cart_id is required (Cart Viewed)").uncheck()
    page.get_by_label("Remove items (Cart Viewed)").click()
    page.get_by_role("button", name="Save plan").click()
    page.get_by_text("Saved as version 2.").wait_for()
    event = admin_get(server, "/api/v1/tracking-plans/checkout")["plan"]["events"]["Cart Viewed"]
    assert event["properties"] == {
        "type": "object",
        "properties": {
            "cart_id": {"type": "string", "pattern": "^c_"},
            "coupon": {"type": ["string", "null"]},
        },
    }
    json_box.fill("{not json")
    json_box.blur()
    page.get_by_role("alert").filter(has_text="Not JSON").wait_for()
    assert page.get_by_label("Type of coupon (Cart Viewed)").count() == 1  # the plan before

    # A viewer sees the form, and cannot change it.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, "vic@acme.test")
    page.goto(f"{server.url}/#/plans/checkout")
    page.get_by_label("Type of coupon (Cart Viewed)").wait_for()
    assert page.get_by_label("Type of coupon (Cart Viewed)").is_disabled()
    assert page.get_by_role("checkbox", name="Website").is_disabled()
    assert page.get_by_label("New event").count() == 0
    assert page.get_by_role("button", name="Save plan").count() == 0


def test_an_admin_manages_users_and_their_roles(server, users, page):
    sign_in(page, server, "ann@acme.test")
    page.get_by_role("link", name="Users").click()
    form = page.get_by_role("form", name="New user")
    form.get_by_label("Email").fill("new@acme.test")
    form.get_by_label("Role").select_option("viewer")
    form.get_by_label("Password (10 characters or more)").fill("short")
    form.get_by_role("button", name="Add user").click()  # the browser refuses it first
    assert users.list(server.workspace_id)[-1]["email"] != "new@acme.test"
    form.get_by_label("Password (10 characters or more)").fill(PASSWORD)
    form.get_by_role("button", name="Add user").click()
    page.get_by_text("new@acme.test may sign in as viewer.").wait_for()
    page.get_by_label("Role of new@acme.test").select_option("editor")
    page.get_by_text("new@acme.test is now editor. Their sessions ended.").wait_for()
    assert users.get(server.workspace_id, "new@acme.test")["role"] == "editor"
    shot(page, "users")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, "vic@acme.test")
    page.get_by_role("heading", name="Overview").wait_for()
    assert page.get_by_role("link", name="Users").count() == 0
