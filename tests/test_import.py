"""`plait import`: CSV, JSONL and Parquet files into the log as identify and track calls."""

from __future__ import annotations

import csv
import gzip
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from plait.cli import app
from plait.collect import files
from plait.collect.files import FileImport, FileImportError, ImportOptions, import_file, infer
from plait.log import backend_for
from plait.settings import get_settings
from plait.store.schema import imports
from plait.store.workspaces import Workspaces


@pytest.fixture
def source(store) -> tuple[str, str]:
    repo = Workspaces(store)
    workspace = repo.create_workspace("demo")
    src, _ = repo.create_source(workspace["id"], "Files", "file")
    return workspace["id"], src["id"]


def run(store, source, path, progress=None, max_chunks=None, **options):
    return import_file(store, *source, path, ImportOptions(**options), progress, max_chunks)


def logged(store) -> list[dict]:
    return [orjson.loads(r.payload) for r in backend_for(store).iter_all()]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n"
                              for x in lines))  # fmt: skip
    return path


def report(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def file_id(path: Path, row: int) -> str:
    return f"file-{files.fingerprint(path)[:32]}-{row}"


# Mapping and defaults -------------------------------------------------------------------


def test_csv_identify_maps_segment_fields_and_puts_the_rest_in_traits(store, source, tmp_path):
    path = write_csv(tmp_path / "users.csv",
                     ["user_id", "anonymous_id", "email", "plan", "age", "score", "vip", "zip",
                      "timestamp"],
                     [["0042", "a-1", "ann@example.com", "pro", "30", "12.5", "true", "007",
                       "2024-01-02T03:04:05Z"],
                      ["u2", "", "", "free", "-3", "1e3", "FALSE", "",
                       "2024-01-02 10:00:00"]])  # fmt: skip
    result = run(store, source, path, msg_type="identify")
    assert (result.accepted, result.rejected, result.inserted, result.finished) == (2, 0, 2, True)
    assert result.rejected_path is None and not (tmp_path / "users.csv.rejected.jsonl").exists()
    first, second = logged(store)
    assert first["type"] == "identify" and first["userId"] == "0042"  # ids are never inferred
    assert first["anonymousId"] == "a-1"
    assert first["traits"] == {"email": "ann@example.com", "plan": "pro", "age": 30,
                               "score": 12.5, "vip": True, "zip": "007"}  # fmt: skip
    assert first["timestamp"] == "2024-01-02T03:04:05.000Z"
    assert first["messageId"] == file_id(path, 1)
    assert (first["sourceId"], first["workspaceId"]) == (source[1], source[0])
    # Empty cells are omitted, not written as "".
    assert "anonymousId" not in second
    assert second["traits"] == {"plan": "free", "age": -3, "score": 1000.0, "vip": False}
    assert second["timestamp"] == "2024-01-02T10:00:00.000Z"
    assert second["messageId"] == file_id(path, 2)


def test_csv_track_with_explicit_map(store, source, tmp_path):
    path = write_csv(tmp_path / "orders.csv",
                     ["Customer", "Action", "When", "Amount", "IP", "order_id", "coupon",
                      "properties.currency", "user_id"],
                     [["c1", "Order Completed", "2024-03-01T00:00:00+02:00", "12.50", "10.0.0.1",
                       "o-1", "SPRING", "EUR", "legacy-7"]])  # fmt: skip
    fields = files.parse_map(["userId=Customer", "event=Action", "timestamp=When",
                              "properties.revenue=Amount", "context.ip=IP",
                              "messageId=order_id"])  # fmt: skip
    run(store, source, path, msg_type="track", fields=fields)
    (msg,) = logged(store)
    assert msg["type"] == "track" and msg["event"] == "Order Completed"
    assert msg["userId"] == "c1" and msg["messageId"] == "o-1"
    assert msg["timestamp"] == "2024-02-29T22:00:00.000Z"
    assert msg["context"] == {"ip": "10.0.0.1"}
    # user_id no longer maps to userId (Customer does): it is one more property.
    assert msg["properties"] == {"revenue": 12.5, "coupon": "SPRING", "currency": "EUR",
                                 "user_id": "legacy-7"}  # fmt: skip


def test_nested_paths_and_json_object_columns(store, source, tmp_path):
    path = write_jsonl(tmp_path / "people.jsonl", [
        {"id": "u1", "attrs": {"plan": "pro", "address": {"zip": "75001"}}, "town": "Paris"},
        {"id": "u2", "attrs": '{"plan": "free"}', "town": "Lyon"},
        {"id": "u3", "attrs": {"address": "n/a"}, "town": "Nice"},
    ])  # fmt: skip
    fields = files.parse_map(["userId=id", "traits=attrs", "traits.address.city=town"])
    result = run(store, source, path, msg_type="identify", fields=fields)
    assert (result.accepted, result.rejected) == (2, 1)
    first, second = logged(store)
    assert first["traits"] == {"plan": "pro", "address": {"zip": "75001", "city": "Paris"}}
    assert second["traits"] == {"plan": "free", "address": {"city": "Lyon"}}
    (line,) = report(tmp_path / "people.jsonl.rejected.jsonl")
    assert (line["field"], line["reason"]) == (
        "traits.address.city", "traits.address is both a value and an object")  # fmt: skip
    # The report shows the row as it was read, not as the mapping changed it.
    assert line["data"] == {"id": "u3", "attrs": {"address": "n/a"}, "town": "Nice"}


def test_infer_types_can_be_turned_off(store, source, tmp_path):
    path = write_csv(tmp_path / "e.csv", ["userId", "event", "revenue", "paid"],
                     [["u1", "Paid", "12.50", "true"]])  # fmt: skip
    run(store, source, path, msg_type="track", infer_types=False)
    assert logged(store)[0]["properties"] == {"revenue": "12.50", "paid": "true"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("-3", -3), ("0", 0), ("12.5", 12.5), ("-0.25", -0.25), ("1e3", 1000.0),
     ("true", True), ("FALSE", False), ("True", True),
     ("007", "007"), ("+33612345678", "+33612345678"), ("1.", "1."), (".5", ".5"),
     ("12,5", "12,5"), (" 3", " 3"), ("1234567890123456", "1234567890123456"), ("nan", "nan"),
     ("inf", "inf"), ("1e999", "1e999"), ("yes", "yes"), ("-", "-"), ("2024-01-02", "2024-01-02")],
)  # fmt: skip
def test_infer(text, value):
    result = infer(text)
    assert result == value and type(result) is type(value)


def test_type_column_says_identify_or_track_per_row(store, source, tmp_path):
    path = write_csv(tmp_path / "mixed.csv", ["kind", "userId", "event", "plan", "type"],
                     [["identify", "u1", "", "pro", "x"],
                      ["Track", "u1", "Upgraded", "pro", ""],
                      ["page", "u1", "", "", ""],
                      ["", "u1", "Viewed", "", ""]])  # fmt: skip
    result = run(store, source, path, type_column="kind")
    assert (result.accepted, result.rejected) == (2, 2)
    identify, track = logged(store)
    assert identify["type"] == "identify" and identify["traits"] == {"plan": "pro", "type": "x"}
    assert track["type"] == "track" and track["properties"] == {"plan": "pro"}
    rejected = report(tmp_path / "mixed.csv.rejected.jsonl")
    assert [(r["row"], r["code"], r["field"]) for r in rejected] == [
        (3, "unsupported_type", "kind"), (4, "missing_type", "kind"),
    ]  # fmt: skip


def test_a_type_column_is_used_by_default(store, source, tmp_path):
    path = write_csv(tmp_path / "t.csv", ["type", "userId", "event"],
                     [["track", "u1", "A"], ["identify", "u2", ""]])  # fmt: skip
    run(store, source, path)
    assert [(m["type"], m["userId"]) for m in logged(store)] == [
        ("track", "u1"),
        ("identify", "u2"),
    ]
    assert "properties" not in logged(store)[0]  # the type column is not a property


def test_jsonl_segment_messages_pass_through_and_flat_lines_are_mapped(store, source, tmp_path):
    message = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m-1",
               "properties": {"plan": "pro"}, "context": {"library": {"name": "x"}},
               "timestamp": "2024-05-01T12:00:00.000Z",
               "originalTimestamp": "2024-05-01T11:59:00Z", "sentAt": "2024-05-01T11:59:01Z",
               "channel": "server", "writeKey": "secret"}  # fmt: skip
    path = write_jsonl(tmp_path / "events.jsonl", [
        message,
        {"type": "identify", "user_id": 7, "email": "x@example.com", "plan": None, "tags": ["a"]},
        b"",  # blank lines are not rows of data
        b"{not json",
        [1, 2],
        {"type": "page", "userId": "u1", "name": "Home"},
        {"type": "track", "anonymousId": "a1"},
    ])  # fmt: skip
    result = run(store, source, path)
    assert (result.rows_done, result.accepted, result.rejected) == (7, 2, 4)
    track, identify = logged(store)
    assert track["messageId"] == "m-1" and track["properties"] == {"plan": "pro"}
    assert track["context"] == {"library": {"name": "x"}}
    assert track["channel"] == "server" and "writeKey" not in track  # kept top-level, as HTTP
    # The row's timestamp is the event's: no clock-skew correction against the import time.
    assert track["timestamp"] == "2024-05-01T12:00:00.000Z" and "sentAt" not in track
    assert identify["userId"] == "7" and identify["messageId"] == file_id(path, 2)
    assert identify["traits"] == {"email": "x@example.com", "tags": ["a"]}  # null omitted
    rejected = report(tmp_path / "events.jsonl.rejected.jsonl")
    assert [(r["row"], r["code"], r["field"]) for r in rejected] == [
        (4, "invalid_json", None), (5, "invalid_message", None),
        (6, "unsupported_type", "type"), (7, "invalid_field", "event"),
    ]  # fmt: skip
    assert rejected[0]["data"] == "{not json" and rejected[1]["data"] == [1, 2]


def test_jsonl_with_type_rejects_lines_declaring_another_type(store, source, tmp_path):
    path = write_jsonl(tmp_path / "e.ndjson", [
        {"type": "track", "userId": "u1", "event": "A"},
        {"type": "identify", "userId": "u1"},
        {"userId": "u2", "event": "B", "type": "premium"},  # not a message type: a property
    ])  # fmt: skip
    result = run(store, source, path, msg_type="track")
    assert (result.accepted, result.rejected) == (2, 1)
    assert logged(store)[1]["properties"] == {"type": "premium"}
    (line,) = report(tmp_path / "e.ndjson.rejected.jsonl")
    assert line["row"] == 2 and line["field"] == "type" and "track" in line["reason"]


def test_gzipped_jsonl_and_tsv(store, source, tmp_path):
    path = tmp_path / "e.jsonl.gz"
    path.write_bytes(
        gzip.compress(b'{"userId": "u1", "event": "A"}\n{"userId": "u2", "event": "B"}\n')
    )
    assert run(store, source, path, msg_type="track").accepted == 2
    tsv = tmp_path / "people.tsv"
    tsv.write_text("userId\tname\nu3\tAnn, Smith\n")
    run(store, source, tsv, msg_type="identify")
    assert logged(store)[-1]["traits"] == {"name": "Ann, Smith"}


def test_csv_quoted_newlines_bom_and_json_object_columns(store, source, tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('\ufeffuserId,address,context,traits\r\n'
                    'u1,"1 Main St\nSpringfield","{""ip"": ""10.1.1.1""}","{""plan"": ""pro""}"\r\n'
                    'u2,x,not json,\r\n', encoding="utf-8")  # fmt: skip
    result = run(store, source, path, msg_type="identify")
    assert (result.accepted, result.rejected) == (1, 1)
    (msg,) = logged(store)
    assert msg["traits"] == {"plan": "pro", "address": "1 Main St\nSpringfield"}
    assert msg["context"] == {"ip": "10.1.1.1"}
    (line,) = report(tmp_path / "q.csv.rejected.jsonl")
    assert (line["row"], line["field"], line["reason"]) == (2, "context", "must be a JSON object")


def write_parquet(path: Path, n: int, row_group_size: int) -> Path:
    table = pa.table({
        "userId": pa.array(range(1, n + 1), pa.int64()),
        "event": pa.array(["Order Completed"] * n),
        "timestamp": pa.array([datetime(2024, 1, 1, 0, 0, i % 60, tzinfo=UTC) for i in range(n)],
                              pa.timestamp("us", tz="UTC")),
        "revenue": pa.array([None if i % 5 == 0 else i * 1.5 for i in range(n)], pa.float64()),
        "paid": pa.array([i % 2 == 0 for i in range(n)]),
        "price": pa.array([Decimal("9.90")] * n, pa.decimal128(5, 2)),
        "tags": pa.array([["a", "b"]] * n, pa.list_(pa.string())),
        "day": pa.array([datetime(2024, 1, 1).date()] * n, pa.date32()),
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_rows_keep_their_types(store, source, tmp_path):
    path = write_parquet(tmp_path / "orders.parquet", 20, row_group_size=7)
    result = run(store, source, path, msg_type="track", chunk_size=5)
    assert (result.rows_done, result.accepted, result.rejected, result.finished) == (
        20,
        20,
        0,
        True,
    )
    messages = logged(store)
    first, second = messages[0], messages[1]
    assert first["userId"] == "1" and first["timestamp"] == "2024-01-01T00:00:00.000Z"
    assert first["properties"] == {"paid": True, "price": 9.9, "tags": ["a", "b"],
                                   "day": "2024-01-01"}  # null revenue omitted  # fmt: skip
    assert second["properties"]["revenue"] == 1.5 and second["properties"]["paid"] is False
    assert [m["messageId"] for m in messages] == [file_id(path, i) for i in range(1, 21)]


def test_parquet_import_resumes_inside_a_row_group(store, source, tmp_path):
    path = write_parquet(tmp_path / "orders.parquet", 20, row_group_size=7)
    first = run(store, source, path, msg_type="track", chunk_size=4, max_chunks=3)
    assert (first.rows_done, first.finished) == (12, False)
    second = run(store, source, path, msg_type="track", chunk_size=4)
    assert (second.resumed_from, second.inserted, second.duplicates) == (12, 8, 0)
    assert [m["userId"] for m in logged(store)] == [str(i) for i in range(1, 21)]


# Rejected rows, resume, re-import --------------------------------------------------------


def numbered_csv(path: Path, n: int, bad: set[int]) -> Path:
    """Rows 1..n; the rows in ``bad`` have no user id."""
    rows = [["" if i in bad else f"u{i}", "Clicked", str(i)] for i in range(1, n + 1)]
    return write_csv(path, ["userId", "event", "n"], rows)


def test_rejected_rows_are_counted_by_reason_and_reported(store, source, tmp_path):
    path = write_csv(tmp_path / "e.csv", ["userId", "event", "timestamp"],
                     [["u1", "A", ""], ["", "B", ""], ["u3", "", ""], ["u4", "D", "soon"],
                      ["u5", "E"], ["", "F", ""]])  # fmt: skip
    out = tmp_path / "reports" / "bad.jsonl"
    out.parent.mkdir()
    result = run(store, source, path, msg_type="track", rejected_path=out)
    assert (result.accepted, result.rejected, result.rejected_path) == (1, 5, out)
    assert result.reasons == {
        ("userId", "userId or anonymousId is required"): 2,
        ("event", "is required and must be a non-empty string"): 1,
        ("timestamp", "must be an ISO-8601 timestamp"): 1,
        (None, "has 2 cells, the header 3"): 1,
    }
    lines = report(out)
    assert [line["row"] for line in lines] == [2, 3, 4, 5, 6]
    assert set(lines[0]) == {"row", "reason", "code", "field", "data"}
    assert lines[0]["data"] == {"userId": "", "event": "B", "timestamp": ""}
    assert lines[3]["code"] == "malformed_row"
    assert lines[3]["data"] == {"userId": "u5", "event": "E"}
    assert not (tmp_path / "e.csv.rejected.jsonl").exists()


def test_resume_after_an_interruption_loses_and_duplicates_nothing(store, source, tmp_path):
    path = numbered_csv(tmp_path / "clicks.csv", 45, bad={7, 33})
    seen = []
    first = run(store, source, path, msg_type="track", chunk_size=10, max_chunks=2,
                progress=seen.append)  # fmt: skip
    assert (first.rows_done, first.accepted, first.rejected, first.finished) == (20, 19, 1, False)
    assert [p.rows_done for p in seen] == [10, 20] and seen[-1].bytes_done > 0
    assert backend_for(store).count() == 19
    with store.engine.connect() as conn:
        state = conn.execute(sa.select(imports)).mappings().one()
    assert (state["rows_done"], state["accepted"], state["rejected"], state["finished"]) == (
        20, 19, 1, False)  # fmt: skip

    job = FileImport(store, *source, path, ImportOptions(msg_type="track", chunk_size=10))
    assert job.resume_from == 20
    second = job.run()
    assert (second.resumed_from, second.rows_done, second.finished) == (20, 45, True)
    assert (second.accepted, second.rejected, second.inserted, second.duplicates) == (43, 2, 24, 0)
    assert [m["properties"]["n"] for m in logged(store)] == [
        i for i in range(1, 46) if i not in (7, 33)
    ]
    assert [line["row"] for line in report(tmp_path / "clicks.csv.rejected.jsonl")] == [7, 33]
    assert second.reasons == {("userId", "userId or anonymousId is required"): 2}


def test_ctrl_c_during_an_import_keeps_every_committed_chunk(store, source, tmp_path):
    path = numbered_csv(tmp_path / "clicks.csv", 50, bad=set())

    def interrupt(progress):
        if progress.rows_done == 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(store, source, path, msg_type="track", chunk_size=10, progress=interrupt)
    assert backend_for(store).count() == 30
    result = run(store, source, path, msg_type="track", chunk_size=10)
    assert (result.resumed_from, result.inserted, backend_for(store).count()) == (30, 20, 50)


def test_a_crash_between_the_log_commit_and_the_progress_record(store, source, tmp_path,
                                                                monkeypatch):  # fmt: skip
    """The chunk is in the log and its rejected rows in the report, but the import does
    not know it: resuming reads it again, and neither the log nor the report doubles."""
    path = numbered_csv(tmp_path / "clicks.csv", 30, bad={15})
    save, calls = FileImport._save, []

    def crashing_save(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 3:  # the fresh record, chunk 1, then chunk 2
            raise RuntimeError("power cut")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(FileImport, "_save", crashing_save)
    with pytest.raises(RuntimeError):
        run(store, source, path, msg_type="track", chunk_size=10)
    assert backend_for(store).count() == 19  # chunk 2 committed, its progress not
    assert [line["row"] for line in report(tmp_path / "clicks.csv.rejected.jsonl")] == [15]
    monkeypatch.setattr(FileImport, "_save", save)
    result = run(store, source, path, msg_type="track", chunk_size=10)
    assert (result.resumed_from, result.inserted, result.duplicates) == (10, 10, 9)
    assert (result.accepted, result.rejected) == (29, 1)
    assert backend_for(store).count() == 29
    assert [line["row"] for line in report(tmp_path / "clicks.csv.rejected.jsonl")] == [15]


def test_reimport_is_a_no_op_and_restart_only_finds_duplicates(store, source, tmp_path):
    path = numbered_csv(tmp_path / "clicks.csv", 25, bad={3})
    first = run(store, source, path, msg_type="track", chunk_size=10)
    assert (first.accepted, first.inserted) == (24, 24)
    again = run(store, source, path, msg_type="track")
    assert again.already_finished and (again.accepted, again.rejected, again.inserted) == (24, 1, 0)
    assert again.reasons == first.reasons and again.rejected_path == first.rejected_path
    # The import is known by the file's content, not its path.
    moved = tmp_path / "elsewhere" / "renamed.csv"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert run(store, source, moved, msg_type="track").already_finished
    restarted = run(store, source, path, msg_type="track", restart=True)
    assert (restarted.resumed_from, restarted.inserted, restarted.duplicates) == (0, 0, 24)
    assert [line["row"] for line in report(tmp_path / "clicks.csv.rejected.jsonl")] == [3]
    assert backend_for(store).count() == 24


def test_the_same_file_in_another_source_or_workspace(store, source, tmp_path):
    path = numbered_csv(tmp_path / "clicks.csv", 5, bad=set())
    run(store, source, path, msg_type="track")
    repo = Workspaces(store)
    other_source, _ = repo.create_source(source[0], "More files", "file")
    # Its own import, but the same rows: the workspace's log already holds them.
    same_ws = run(store, (source[0], other_source["id"]), path, msg_type="track")
    assert not same_ws.already_finished and (same_ws.inserted, same_ws.duplicates) == (0, 5)
    workspace = repo.create_workspace("other")
    src, _ = repo.create_source(workspace["id"], "Files", "file")
    assert run(store, (workspace["id"], src["id"]), path, msg_type="track").inserted == 5
    assert backend_for(store).count() == 10


# Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [("userId", "expects FIELD=COLUMN"), ("=col", "expects FIELD=COLUMN"),
     ("userId=", "expects FIELD=COLUMN"), ("email=Email", "unknown field 'email'"),
     ("traits.=x", "unknown field"), ("userId.x=y", "unknown field"),
     ("type=kind", "--type-column")],
)  # fmt: skip
def test_bad_map_syntax(spec, message):
    with pytest.raises(FileImportError, match=message):
        files.parse_map([spec])


def test_a_field_mapped_twice():
    with pytest.raises(FileImportError, match="twice"):
        files.parse_map(["userId=a", "userId=b"])


def test_bad_inputs_fail_before_anything_is_written(store, source, tmp_path):
    good = numbered_csv(tmp_path / "good.csv", 3, bad=set())
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "dup.csv").write_text("userId,a,a\nu1,1,2\n")
    (tmp_path / "fake.parquet").write_text("not parquet")
    shutil.copy(good, tmp_path / "good.txt")
    cases = [
        (tmp_path / "missing.csv", {}, "no such file"),
        (tmp_path, {}, "not a file"),
        (tmp_path / "good.txt", {}, "unknown extension '.txt'"),
        (good, {"format": "xml"}, "--format must be one of"),
        (good, {"msg_type": "page"}, "--type must be identify or track"),
        (good, {"msg_type": "track", "type_column": "event"}, "not both"),
        (good, {}, "no 'type' column"),
        (good, {"type_column": "kind"}, "no column 'kind'"),
        (good, {"msg_type": "track", "fields": {"userId": "customer"}}, "no column 'customer'"),
        (good, {"msg_type": "track", "delimiter": ";;"}, "one character"),
        (good, {"msg_type": "track", "chunk_size": 0}, "at least 1"),
        (tmp_path / "empty.csv", {"msg_type": "track"}, "needs a header"),
        (tmp_path / "dup.csv", {"msg_type": "track"}, "repeats a"),
        (tmp_path / "fake.parquet", {"msg_type": "track"}, "not a readable Parquet file"),
        (tmp_path / "x.parquet.gz", {"msg_type": "track"}, "no such file"),
    ]
    for path, options, message in cases:
        with pytest.raises(FileImportError, match=message):
            run(store, source, path, **options)
    (tmp_path / "x.parquet.gz").write_bytes(b"")
    with pytest.raises(FileImportError, match="do not gzip"):
        run(store, source, tmp_path / "x.parquet.gz", msg_type="track")
    assert backend_for(store).count() == 0
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(imports)).scalar() == 0
    # --format reads a file whatever its name.
    assert run(store, source, tmp_path / "good.txt", format="csv", msg_type="track").accepted == 3


def test_bytes_that_do_not_decode_reject_their_row_only(store, source, tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"userId,event,city\nu1,A,Paris\nu2,B,S\xe3o Paulo\nu3,C,Lyon\n")
    result = run(store, source, path, msg_type="track")
    assert (result.accepted, result.rejected) == (2, 1)
    (line,) = report(tmp_path / "e.csv.rejected.jsonl")
    assert (line["row"], line["code"]) == (2, "invalid_text")
    assert line["data"] == {"userId": "u2", "event": "B", "city": "S\ufffdo Paulo"}
    # Told the file's encoding, the row imports.
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"userId,event,city\nu2,B,S\xe3o Paulo\n")
    run(store, source, latin, msg_type="track", encoding="latin-1")
    assert logged(store)[-1]["properties"] == {"city": "S\u00e3o Paulo"}
    with pytest.raises(FileImportError, match="unknown encoding"):
        run(store, source, latin, msg_type="track", encoding="klingon")


def test_a_file_cut_short_keeps_what_was_read_before(store, source, tmp_path):
    data = gzip.compress(b"userId,event\n" + b"".join(b"u%d,A\n" % i for i in range(50_000)))
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileImportError, match=r"after row \d+") as caught:
        run(store, source, path, msg_type="track", chunk_size=1000)
    with store.engine.connect() as conn:
        state = conn.execute(sa.select(imports)).mappings().one()
    assert 1000 < state["rows_done"] < 50_000 and not state["finished"]
    assert f"after row {state['rows_done']}" in str(caught.value)
    assert backend_for(store).count() == state["rows_done"] == state["accepted"]


# The command ---------------------------------------------------------------------------------


@pytest.fixture
def cli(store_url, store, source):
    """Invoke `plait` on the test's store (settings are cached: cleared around the test)."""
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args):
        env = {"PLAIT_DATABASE_URL": store_url, "COLUMNS": "250"}
        result = runner.invoke(app, [str(a) for a in args], env=env)
        result.text = " ".join(result.output.split())  # Rich wraps at the terminal's width
        return result

    yield invoke
    get_settings.cache_clear()


def test_cli_imports_resumes_and_reports(cli, store, source, tmp_path):
    path = numbered_csv(tmp_path / "clicks.csv", 30, bad={4})
    partial = run(store, source, path, msg_type="track", chunk_size=10, max_chunks=1)
    assert partial.rows_done == 10

    result = cli("import", path, "--source", "Files", "--type", "track", "--chunk-size", 10)
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.text and "after row 10" in result.text
    assert "accepted │ 29" in result.text and "rejected │ 1" in result.text
    assert "userId or anonymousId is required" in result.text
    assert f"Rejected rows are in {path}.rejected.jsonl" in result.text
    assert backend_for(store).count() == 29

    result = cli("import", path, "-s", "Files", "-t", "track", "-q")
    assert result.exit_code == 0 and "already imported" in result.text


def test_cli_maps_columns_and_explains_errors(cli, store, tmp_path):
    path = write_csv(tmp_path / "orders.csv", ["customer", "what", "amount"],
                     [["c1", "Order Completed", "12.5"]])  # fmt: skip
    result = cli("import", path, "-s", "Files", "-t", "track", "-m", "userId=customer",
                 "--map", "event=what", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    (msg,) = logged(store)
    assert (msg["userId"], msg["event"], msg["properties"]) == ("c1", "Order Completed",
                                                                {"amount": 12.5})  # fmt: skip

    for args, message in [
        (["-s", "Nope", "-t", "track"], "source 'Nope' not found"),
        (["-s", "Files", "-t", "track", "-w", "nope"], "workspace 'nope' not found"),
        (["-s", "Files", "-t", "track", "--map", "userId"], "--map expects FIELD=COLUMN"),
        (["-s", "Files", "-t", "track", "--format", "xml"], "--format must be one of"),
    ]:
        result = cli("import", path, *args)
        assert result.exit_code == 1 and message in result.text, result.output
    result = cli("import", tmp_path / "missing.csv", "-s", "Files", "-t", "track")
    assert result.exit_code == 1 and "no such file" in result.text
    result = cli("import", path, "-s", "Files", "-t", "identify", "--restart", "-q")
    assert result.exit_code == 1 and "every row was rejected" in result.text  # no user id


def test_cli_refuses_a_disabled_source(cli, store, source, tmp_path):
    Workspaces(store).update_source(source[0], "Files", enabled=False)
    path = numbered_csv(tmp_path / "c.csv", 1, bad=set())
    result = cli("import", path, "-s", "Files", "-t", "track")
    assert result.exit_code == 1 and "disabled" in result.text
