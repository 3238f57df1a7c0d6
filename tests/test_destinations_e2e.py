"""Delivery end to end: a real ``plait serve`` (its own processes), a destination made
over the admin API, events from the Segment SDK, a real local webhook server; the server
and its pipeline process are SIGKILLed mid-delivery and restarted on the same store:
every event still arrives, in order per person, repeated only with the same idempotency
key. Dead letters are listed and replayed over HTTP, and /metrics counts deliveries."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from segment.analytics import Client as SegmentClient
from test_durability import PLAIT, Server
from webhook_server import WebhookServer

from plait.store import open_store
from plait.store.workspaces import Workspaces

PEOPLE, EACH = 6, 40


@pytest.fixture(autouse=True)
def _needs_plait_command():
    if not PLAIT.exists():
        pytest.skip(f"{PLAIT} not found: run `make install-test`")


def provision(store_url: str) -> tuple[str, str]:
    store = open_store(store_url)
    repo = Workspaces(store)
    ws = repo.create_workspace("acme", "Acme")
    _, key = repo.create_source(ws["id"], "Website", "javascript")
    _, token = repo.create_token(ws["id"], "ops", ["admin"])
    store.dispose()
    return key, token


def kill_group(server: Server) -> None:
    """SIGKILL the server and its pipeline process (deliveries run there): no shutdown."""
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=10)


def wait_for(check, timeout=60.0, what="it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_deliveries_survive_sigkill_and_dead_letters_replay_over_http(store_url, tmp_path):
    write_key, token = provision(store_url)
    env = {"PLAIT_DATABASE_URL": store_url, "PLAIT_LOG_LEVEL": "WARNING",
           "PLAIT_DELIVERY_POLL_SECONDS": "0.02"}  # fmt: skip
    out = tmp_path / "server.out"
    rejected = {"on": True}

    def respond(n, request):  # one event is refused until it is fixed
        if rejected["on"] and request.messages[0]["event"] == "Bad Event":
            return 400, {}
        return 200, {}

    with WebhookServer(respond, delay=0.01) as hook:
        server = Server(env, out, "--no-demo")
        try:
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
            put = api.put("/api/v1/destinations/hook", json={
                "type": "webhook", "settings": {"url": hook.url, "secret": "shh"},
                "backoff": 0.05, "max_backoff": 0.2,
            })  # fmt: skip
            assert put.status_code == 200, put.text
            bad = api.put("/api/v1/destinations/broken", json={"type": "webhook", "settings": {}})
            assert bad.status_code == 400 and bad.json()["error"]["field"] == (
                "destinations[1].settings.url"
            )
            shown = api.get("/api/v1/destinations/hook").json()
            assert shown["settings"]["secret"] == "********"

            segment = SegmentClient(write_key, host=server.url, sync_mode=True)
            for i in range(EACH):
                for p in range(PEOPLE):
                    segment.track(f"person-{p}", "Step", {"i": i})
            segment.track("person-0", "Bad Event", {"i": -1})
            segment.flush()
            wait_for(lambda: len(hook.delivered()) >= PEOPLE * EACH // 3, what="deliveries")
            kill_group(server)  # mid-delivery
            halfway = len(hook.delivered())
            assert halfway < PEOPLE * EACH, "everything arrived before the kill: too fast"

            server = Server(env, out, "--no-demo")  # the same store, new processes
            api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})

            def all_steps():
                got = {(m["userId"], m["properties"]["i"]) for _, m in hook.delivered()
                       if m["event"] == "Step"}  # fmt: skip
                return len(got) == PEOPLE * EACH

            wait_for(all_steps, what="every event after the restart")
            first_key: dict[str, str] = {}
            order: dict[str, list[int]] = {}
            for key, m in hook.delivered():
                assert first_key.setdefault(m["messageId"], key) == key  # repeats: same key
                seq = order.setdefault(m["userId"], [])
                if m["event"] == "Step" and m["properties"]["i"] not in seq:
                    seq.append(m["properties"]["i"])
            assert all(seq == list(range(EACH)) for seq in order.values()), order

            dead = wait_for(lambda: api.get("/api/v1/destinations/hook/deliveries",
                                            params={"status": "failed"}).json()["deliveries"],
                            what="the dead letter")  # fmt: skip
            assert len(dead) == 1 and dead[0]["last_status"] == 400
            message = api.get(f"/api/v1/deliveries/{dead[0]['message_id']}").json()
            assert message["destinations"][0]["status"] == "failed"
            rejected["on"] = False
            assert api.post("/api/v1/destinations/hook/replay",
                            json={"dead_letters": True}).json() == {"queued": 1}  # fmt: skip
            wait_for(lambda: any(m["event"] == "Bad Event" for _, m in hook.delivered()
                                 if True), what="the replayed dead letter")  # fmt: skip
            status = wait_for(lambda: (s := api.get("/api/v1/destinations/hook").json()["status"])
                              and s["queue"] == {"retrying": 0, "waiting": 0, "failed": 0}
                              and s["behind"] == 0 and s, what="an empty queue")  # fmt: skip
            assert status["delivered"] >= PEOPLE * EACH + 1
            metrics = httpx.get(f"{server.url}/metrics").text
            assert 'plait_deliveries_total{destination="hook",outcome="delivered"}' in metrics
            refused = api.post("/api/v1/destinations/hook/replay", json={"start": "yesterday"})
            assert refused.status_code == 400
        finally:
            if server.proc.poll() is None:
                server.stop()
