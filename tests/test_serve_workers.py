"""`plait serve --workers 2`: several processes share the store, the log and /metrics."""

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa
from test_durability import Server, logged_ids, provision
from test_identity_api import wait_for

from plait.store import open_store
from plait.store.schema import message_profiles


def processed(store_url: str) -> int:
    store = open_store(store_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(message_profiles))
    finally:
        store.dispose()


def test_two_workers_share_the_log_and_add_up_their_metrics(store_url, tmp_path):
    write_key = provision(store_url)
    server = Server({"PLAIT_DATABASE_URL": store_url}, tmp_path / "serve.log",
                    "--no-demo", "--workers", "2")  # fmt: skip
    try:

        def send(n: int) -> int:
            with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=30) as client:
                batch = [{"type": "track", "userId": f"u{n}", "event": "E",
                          "messageId": f"m{n}-{i}"} for i in range(20)]  # fmt: skip
                return client.post("/v1/batch", json={"batch": batch}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(send, range(100))) == {200}
        metrics = httpx.get(f"{server.url}/metrics").text
        pipeline_caught_up_in_its_process = wait_for(lambda: processed(store_url) == 2000)
    finally:
        server.stop()
    assert sum(logged_ids(store_url).values()) == 2000
    assert pipeline_caught_up_in_its_process  # plait serve ran the pipeline alongside
    accepted = re.findall(r'^plait_messages_accepted_total\{.*type="track"\} (\S+)', metrics, re.M)
    assert float(accepted[0]) == 2000.0  # both processes' counts, added up
    assert "Started server process" in (tmp_path / "serve.log").read_text()
    assert (tmp_path / "serve.log").read_text().count("Started server process") == 2


def test_the_pipeline_process_metrics_show_in_the_servers(tmp_path):
    store_url = f"sqlite:///{tmp_path / 'plait.db'}"
    write_key = provision(store_url)
    server = Server({"PLAIT_DATABASE_URL": store_url}, tmp_path / "serve.log", "--no-demo")
    try:
        batch = [{"type": "identify", "userId": f"u{i}", "traits": {"n": i}} for i in range(30)]
        sent = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(write_key, ""))
        assert sent.status_code == 200
        assert wait_for(lambda: processed(store_url) == 30)

        def pipeline_count() -> float:
            text = httpx.get(f"{server.url}/metrics").text
            found = re.findall(
                r'^plait_pipeline_messages_total\{outcome="processed"\} (\S+)', text, re.M
            )
            return float(found[0]) if found else 0.0

        assert wait_for(lambda: pipeline_count() == 30.0)
    finally:
        server.stop()
