"""Durability: a 2xx means committed. The real server runs as its own process (`plait
serve`); client threads stream batches at it; it is SIGKILLed mid-stream and restarted on
the same store. Every acknowledged message must then be in the log exactly once, nothing
that was never sent may be there, and re-sending (as an SDK retries) adds nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from plait.log import backend_for
from plait.store import open_store
from plait.store.workspaces import Workspaces

PLAIT = Path(sys.executable).with_name("plait")
THREADS = 6
BATCH = 50
STREAM_SECONDS = 1.0  # stream this long (or until MIN_ACKED messages) before the kill
MIN_ACKED = 3000


@pytest.fixture(autouse=True)
def _needs_plait_command():
    if not PLAIT.exists():
        pytest.skip(f"{PLAIT} not found: run `make install-test`")


class Server:
    """``plait serve`` in a subprocess of its own, with its output kept in a file."""

    def __init__(self, env: dict[str, str], out: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = out
        self.proc = subprocess.Popen(
            [str(PLAIT), "serve", "--port", str(self.port), *args],
            env={**os.environ, **env},
            stdout=out.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"plait serve exited: {out.read_text()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"plait serve did not become ready: {out.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def message(thread: int, seq: int, i: int) -> dict:
    return {
        "type": "track",
        "messageId": f"dur-{thread}-{seq}-{i}",
        "userId": f"user-{thread}-{i % 7}",
        "event": "Item Viewed",
        "properties": {"thread": thread, "seq": seq, "i": i},
    }


@dataclass
class Stream:
    """Client threads sending batches until the server dies; what each got back."""

    url: str
    write_key: str
    sent: dict[str, dict] = field(default_factory=dict)  # every message that left a client
    acked: set[str] = field(default_factory=set)  # those in a batch answered 2xx
    refusals: list[str] = field(default_factory=list)  # any other answer: a failure
    killed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, thread: int) -> None:
        with httpx.Client(base_url=self.url, auth=(self.write_key, ""), timeout=10) as client:
            seq = 0
            while True:
                batch = [message(thread, seq, i) for i in range(BATCH)]
                with self.lock:
                    self.sent.update((m["messageId"], m) for m in batch)
                try:
                    response = client.post("/v1/batch", json={"batch": batch})
                except httpx.TransportError as exc:
                    if not self.killed.is_set():
                        with self.lock:
                            self.refusals.append(f"thread {thread}: {exc!r} before the kill")
                    return  # the server is gone: this batch's fate is unknown
                if response.status_code // 100 != 2:
                    with self.lock:
                        self.refusals.append(f"{response.status_code} {response.text}")
                    return
                with self.lock:
                    self.acked.update(m["messageId"] for m in batch)
                seq += 1

    @property
    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


def provision(store_url: str) -> str:
    """A workspace and source on the server's database, before the server starts."""
    store = open_store(store_url)
    try:
        repo = Workspaces(store)
        workspace = repo.create_workspace("durable", "Durable")
        _, key = repo.create_source(workspace["id"], "Stream", "http")
    finally:
        store.dispose()
    return key


def logged_ids(store_url: str) -> Counter:
    store = open_store(store_url, migrate=False)
    try:
        return Counter(r.message_id for r in backend_for(store).iter_all())
    finally:
        store.dispose()


def resend(url: str, write_key: str, messages: list[dict]) -> None:
    with httpx.Client(base_url=url, auth=(write_key, ""), timeout=30) as client:
        for start in range(0, len(messages), 500):
            response = client.post("/v1/batch", json={"batch": messages[start : start + 500]})
            assert response.status_code == 200, response.text
            assert response.json() == {"success": True}


def test_acknowledged_messages_survive_sigkill(store_url, tmp_path):
    write_key = provision(store_url)
    env = {"PLAIT_DATABASE_URL": store_url, "PLAIT_LOG_LEVEL": "WARNING"}
    out = tmp_path / "server.out"
    server = Server(env, out, "--no-demo")
    stream = Stream(server.url, write_key)
    threads = [threading.Thread(target=stream.run, args=(n,), daemon=True) for n in range(THREADS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline and stream.acked_count < MIN_ACKED:
            time.sleep(0.01)
        stream.killed.set()
        server.kill()  # SIGKILL, requests in flight: no shutdown hook runs
        for t in threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in threads)
        assert stream.refusals == []
        assert stream.acked, f"nothing was acknowledged before the kill: {out.read_text()}"

        server = Server(env, out, "--no-demo")  # same store, new process
        counts = logged_ids(store_url)
        in_doubt = set(stream.sent) - stream.acked
        print(
            f"{len(stream.sent)} sent, {len(stream.acked)} acknowledged, "
            f"{len(counts)} in the log after the restart, "
            f"{len(set(counts) & in_doubt)} of {len(in_doubt)} unacknowledged committed"
        )
        assert [m for m, n in counts.items() if n > 1] == []  # each at most once
        assert stream.acked - set(counts) == set()  # every 2xx survived the kill
        assert set(counts) - set(stream.sent) == set()  # nothing that was not sent

        # SDKs retry what they were not sure of, and sometimes what was acknowledged:
        # neither may duplicate anything.
        resend(server.url, write_key, [stream.sent[m] for m in sorted(stream.acked)])
        assert logged_ids(store_url) == counts
        resend(server.url, write_key, [stream.sent[m] for m in sorted(in_doubt)])
        counts = logged_ids(store_url)
        assert set(counts) == set(stream.sent) and set(counts.values()) == {1}

        store = open_store(store_url, migrate=False)
        try:  # and each is the message that was sent, not a mix-up
            for record in backend_for(store).iter_all():
                payload = json.loads(record.payload)
                sent = stream.sent[record.message_id]
                assert payload["properties"] == sent["properties"]
                assert payload["userId"] == sent["userId"]
        finally:
            store.dispose()
    finally:
        stream.killed.set()
        server.stop()


def test_embedded_store_zero_config_survives_sigkill(tmp_path):
    """The default first start (PLAIT_DATA_DIR, demo workspace, key printed once): a
    message acknowledged just before a SIGKILL is there after the restart."""
    env = {"PLAIT_DATA_DIR": str(tmp_path / "data"), "PLAIT_DATABASE_URL": ""}
    out = tmp_path / "server.out"
    server = Server(env, out)
    try:
        key = re.search(r"write key\s+(\S+)", out.read_text()).group(1)
        response = httpx.post(
            f"{server.url}/v1/track",
            auth=(key, ""),
            json={"userId": "u1", "event": "Kept", "messageId": "keep-1"},
        )
        assert response.status_code == 200, response.text
        server.kill()
        server = Server(env, out)
        assert "write key" not in out.read_text().split("Plait on http://")[-1]  # shown once
        store_url = f"sqlite:///{tmp_path / 'data' / 'plait.db'}"
        assert logged_ids(store_url) == Counter({"keep-1": 1})
        response = httpx.post(
            f"{server.url}/v1/track",
            auth=(key, ""),
            json={"userId": "u1", "event": "Kept", "messageId": "keep-1"},
        )
        assert response.status_code == 200
        assert logged_ids(store_url) == Counter({"keep-1": 1})
    finally:
        server.stop()
