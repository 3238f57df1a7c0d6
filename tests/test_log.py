"""The durable log: appends, dedup, ordered reads, checkpoints, group commit."""

import asyncio

import pytest

from plait.log import LogWriter, Overloaded, backend_for


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
