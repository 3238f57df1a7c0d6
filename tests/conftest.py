"""Shared fixtures: a store on each backend, and a real Plait server on a free port.

Tests that take ``store_url`` (or ``server``) run twice: on the embedded SQLite store and
on PostgreSQL. PostgreSQL comes from PLAIT_TEST_POSTGRES_URL (default: the local server);
when it cannot be reached those runs skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
import uvicorn

from plait.api.app import PlaitApp
from plait.settings import Settings
from plait.store import Store, open_store
from plait.store.schema import metadata
from plait.store.workspaces import Workspaces

POSTGRES_URL = os.environ.get(
    "PLAIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _restore_logging():
    """A command a test runs (``plait worker``, ``plait serve``) points the root logger at
    its stderr, which the test runner closes afterwards: later records would fail there."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def require(condition: bool, reason: str) -> None:
    """Skip when a service is missing, but fail under CI=true: CI must prove it."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: tests needing it must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database():
    """A database of our own on the PostgreSQL server, created once per session."""
    admin_url = sa.engine.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    try:
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # unreachable server: the reason is printed with the skip
        yield None, f"PostgreSQL unreachable at {POSTGRES_URL}: {exc}"
        return
    name = f"plait_test_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    open_store(url).dispose()
    yield url, None
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'plait.db'}"
    url, reason = request.getfixturevalue("postgres_database")
    require(url is not None, reason or "PostgreSQL unavailable")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # each test starts from empty tables
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def store(store_url) -> Store:
    s = open_store(store_url, sqlite_synchronous="NORMAL")
    yield s
    s.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    store: Store
    app: PlaitApp
    workspace_id: str
    source_id: str
    write_key: str
    admin_token: str

    @property
    def repo(self) -> Workspaces:
        return Workspaces(self.store)


class ServerThread:
    """uvicorn serving a PlaitApp in a thread of the test process: a real HTTP server."""

    def __init__(self, app: PlaitApp, port: int):
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                access_log=False, loop="asyncio", http="httptools")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def wait_processed(store: Store, count: int, timeout: float = 15.0) -> None:
    """Until the pipeline has processed ``count`` messages (blocked ones never count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            if conn.execute(sa.text("SELECT count(*) FROM message_profiles")).scalar() >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"the pipeline did not process {count} messages")


def start_server(store: Store, **overrides) -> tuple[ServerThread, str]:
    port = free_port()
    settings = Settings(
        port=port, write_key_cache_seconds=0.0, governance_cache_seconds=0.0, **overrides
    )
    app = PlaitApp(settings, store)
    thread = ServerThread(app, port)
    thread.start()
    return thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def server(store) -> RunningServer:
    repo = Workspaces(store)
    workspace = repo.create_workspace("acme", "Acme")
    source, key = repo.create_source(workspace["id"], "Website", "javascript")
    _, token = repo.create_token(workspace["id"], "test admin", ["admin"])
    thread, url = start_server(store)
    yield RunningServer(url, store, thread.server.config.app, workspace["id"], source["id"],
                        key, token)  # fmt: skip
    thread.stop()
