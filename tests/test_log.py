"""The durable log: appends, dedup, ordered reads, checkpoints, group commit."""

import asyncio
import gc
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from plait.log import LogWriter, Overloaded, backend_for
from plait.log.dedup import RecentMessageIds, now_us
from plait.store import open_store
from plait.store.db import MIGRATIONS_DIR


def rows(ids, workspace="ws_a"):
    return [(workspace, "src_a", mid, "track", 1_000, f'{{"messageId": "{mid}"}}') for mid in ids]


def test_append_returns_new_rows_and_dedups_per_workspace(store):
    log = backend_for(store)
    assert log.append(rows(["m1", "m2", "m2"])) == 2
    assert log.append(rows(["m2", "m3"])) == 1
    assert log.append(rows(["m1"], workspace="ws_b")) == 1
    assert [(r.workspace_id, r.message_id) for r in log.iter_all()] == [
        ("ws_a", "m1"), ("ws_a", "m2"), ("ws_a", "m3"), ("ws_b", "m1"),
    ]  # fmt: skip
    assert log.count("ws_a") == 3
    assert log.count() == 4


def test_offsets_only_grow_and_reads_resume_after_an_offset(store):
    log = backend_for(store)
    log.append(rows([f"m{i}" for i in range(10)]))
    everything = log.read(0, 100)
    offsets = [r.offset for r in everything]
    assert offsets == sorted(offsets) and len(set(offsets)) == 10
    tail = log.read(offsets[4], 100)
    assert [r.message_id for r in tail] == [f"m{i}" for i in range(5, 10)]
    assert log.read(offsets[4], 2, workspace_id="ws_other") == []
    assert log.last_offset() == offsets[-1]


def test_checkpoints_are_saved_and_can_commit_with_the_readers_effects(store):
    log = backend_for(store)
    assert log.checkpoint("pipeline") == 0
    log.save_checkpoint("pipeline", 41)
    log.save_checkpoint("pipeline", 42)
    assert log.checkpoint("pipeline") == 42
    with pytest.raises(RuntimeError):
        with store.engine.begin() as conn:  # a failed transaction takes its checkpoint along
            log.save_checkpoint("pipeline", 99, conn)
            raise RuntimeError("effects failed")
    assert log.checkpoint("pipeline") == 42


def test_group_commit_acknowledges_each_request_after_its_rows_commit(store):
    log = backend_for(store)
    commits = []

    async def scenario():
        writer = LogWriter(log, max_pending=10_000, on_commit=lambda n, new: commits.append(n))
        writer.start()
        await asyncio.gather(*(writer.append(rows([f"r{i}-{j}" for j in range(5)]))
                               for i in range(50)))  # fmt: skip
        await writer.stop()

    asyncio.run(scenario())
    assert log.count() == 250
    assert sum(commits) == 250
    assert len(commits) < 50  # concurrent requests shared transactions


def test_overload_refuses_without_queueing(store):
    log = backend_for(store)

    async def scenario():
        writer = LogWriter(log, max_pending=3)
        writer.start()
        with pytest.raises(Overloaded):
            await writer.append(rows(["a", "b", "c", "d"]))
        await writer.append(rows(["e"]))
        await writer.stop()

    asyncio.run(scenario())
    assert [r.message_id for r in log.iter_all()] == ["e"]


def test_a_failed_commit_is_reported_to_every_waiting_request(store, monkeypatch):
    log = backend_for(store)
    log.append(rows(["before"]))

    def broken_insert(conn, batch):
        conn.cursor().execute("INSERT INTO no_such_table VALUES (1)")

    monkeypatch.setattr(log, "_insert", broken_insert)

    async def scenario():
        writer = LogWriter(log, max_pending=100)
        writer.start()
        results = await asyncio.gather(writer.append(rows(["a"])), writer.append(rows(["b"])),
                                       return_exceptions=True)  # fmt: skip
        await writer.stop()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, Exception) for r in results)
    monkeypatch.undo()
    assert [r.message_id for r in log.iter_all()] == ["before"]
    assert log.append(rows(["after"])) == 1  # the writer connection recovers


# Deduplication on SQLite: a window of recent messageIds -----------------------------


def fresh(ids, workspace="ws_a"):
    """Rows received now (the window is loaded from rows received in the last 24 h)."""
    now = time.time_ns() // 1000
    return [(workspace, "src_a", mid, "track", now, "{}") for mid in ids]


def test_every_sqlite_appender_sees_the_messages_another_appended(tmp_path):
    # Two stores on one file stand for two processes (plait serve --workers, plait import).
    url = f"sqlite:///{tmp_path / 'plait.db'}"
    first, second = backend_for(open_store(url)), backend_for(open_store(url))
    assert first.append(fresh(["m1", "m2"])) == 2
    assert second.append(fresh(["m2", "m3"])) == 1  # loads the window from the log
    assert first.append(fresh(["m3", "m4"])) == 1  # catches up on what the other wrote
    assert second.append(fresh(["m4", "m1", "m5"])) == 1
    restarted = backend_for(open_store(url))
    assert restarted.append(fresh(["m1", "m5", "m6"])) == 1
    assert [r.message_id for r in first.iter_all()] == ["m1", "m2", "m3", "m4", "m5", "m6"]


def test_sqlite_forgets_a_message_id_after_the_window(tmp_path):
    url = f"sqlite:///{tmp_path / 'plait.db'}"
    log = backend_for(open_store(url, dedup_window_seconds=0.2))
    assert log.append(fresh(["m1"])) == 1
    time.sleep(0.25)
    assert log.append(fresh(["m1", "m2"])) == 1  # m1 is in the older generation
    time.sleep(0.25)
    assert log.append(fresh(["m1"])) == 1  # two windows on: forgotten, stored again
    assert log.append(fresh(["m2"])) == 0  # m2 was seen one window ago: still a duplicate
    # A restart loads only the rows received within the window.
    assert backend_for(open_store(url, dedup_window_seconds=0.2)).append(fresh(["m2"])) == 1


def test_sqlite_appenders_take_turns_on_the_append_lock(tmp_path):
    url = f"sqlite:///{tmp_path / 'plait.db'}"
    holder, waiter = backend_for(open_store(url)), backend_for(open_store(url))
    done = threading.Event()

    def append() -> None:
        waiter.append(fresh(["m2"]))
        done.set()

    with holder._append_lock():  # as another process's append would hold it
        thread = threading.Thread(target=append)
        thread.start()
        assert not done.wait(0.3)  # blocked on the file lock, not on SQLite's busy handler
        assert holder.count() == 0
    assert done.wait(5)
    thread.join()
    assert holder.append(fresh(["m1", "m2"])) == 1
    holder.close()
    waiter.close()


def test_the_dedup_window_is_per_workspace_and_invisible_to_the_garbage_collector():
    recent = RecentMessageIds(window_seconds=60)
    ids = [f"m{i}" for i in range(5000)]
    assert all(recent.add("ws_a", mid) for mid in ids)
    assert not any(recent.add("ws_a", mid) for mid in ids)
    assert all(recent.add("ws_b", mid) for mid in ids[:10])
    assert len(recent) == 5010
    # The collector's full passes would otherwise walk every remembered id (the
    # latency of the requests waiting on the writer): nothing in it may be tracked
    # but its containers of containers.
    shards = [ids for generation in (recent._current, recent._previous)
              for per_workspace in generation.values() for ids in per_workspace]  # fmt: skip
    assert shards and not any(gc.is_tracked(ids) for ids in shards)
    recent.rotate(now_us() + 61_000_000)
    assert not recent.add("ws_a", "m1")  # the older generation still answers
    assert recent.add("ws_a", "new")


def test_a_failed_sqlite_append_leaves_no_message_id_remembered(tmp_path):
    log = backend_for(open_store(f"sqlite:///{tmp_path / 'plait.db'}"))
    broken = ("ws_a", "src_a", "m2", "track", 1, None)  # payload is NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        log.append(fresh(["m1"]) + [broken])
    assert log.count() == 0
    assert log.append(fresh(["m1", "m2"])) == 2  # neither was stored: neither is a duplicate


def test_migration_0002_keeps_the_sqlite_log_and_its_offsets(tmp_path):
    url = f"sqlite:///{tmp_path / 'plait.db'}"
    old = open_store(url, migrate=False)
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with old.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    insert = sa.text("INSERT INTO log_messages VALUES (:o, 'ws_a', 'src_a', :m, 'track', :t, '{}')")
    with old.engine.begin() as conn:
        for offset, mid in ((5, "m1"), (9, "m2")):
            conn.execute(insert, {"o": offset, "m": mid, "t": time.time_ns() // 1000})
    old.dispose()
    log = backend_for(open_store(url))  # migrates to the newest revision
    assert [(r.offset, r.message_id) for r in log.iter_all()] == [(5, "m1"), (9, "m2")]
    assert log.append(fresh(["m2", "m3"])) == 1
    assert log.last_offset() == 10


def test_a_restarted_sqlite_appender_knows_the_recent_ids_of_every_source(tmp_path):
    # The window is read source by source from the log's index: none may be missed.
    url = f"sqlite:///{tmp_path / 'plait.db'}"
    first = backend_for(open_store(url))
    now = time.time_ns() // 1000
    old = now - 48 * 3600 * 1_000_000  # outside the 24-hour window
    pairs = [("ws_a", "src_1"), ("ws_a", "src_2"), ("ws_b", "src_1"), ("ws_c", "src_9")]
    assert first.append([(ws, src, f"{ws}-{src}", "track", now, "{}") for ws, src in pairs]) == 4
    assert first.append([("ws_a", "src_1", "ancient", "track", old, "{}")]) == 1
    restarted = backend_for(open_store(url))
    again = [(ws, src, f"{ws}-{src}", "track", now, "{}") for ws, src in pairs]
    assert restarted.append(again) == 0  # every one a duplicate
    assert restarted.append([("ws_a", "src_1", "ancient", "track", now, "{}")]) == 1
