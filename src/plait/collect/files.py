"""File sources: CSV, JSONL and Parquet files loaded into the log as identify or track calls.

A row becomes a Segment message through a mapping (``--map FIELD=COLUMN`` plus defaults),
then goes through exactly what the HTTP API does (:func:`plait.collect.ingest.prepare`:
validate, enrich, serialize) and is appended to the log in chunks, one transaction each.

- **Deterministic ids.** A row without a messageId gets ``file-<fingerprint>-<row>``, where
  the fingerprint is the SHA-256 of the file's bytes (not of its path). Re-running or
  resuming an import therefore never duplicates: the log keeps one row per
  (workspace, messageId).
- **Resumable.** After every chunk the ``imports`` table records how many rows are done,
  keyed by the file's fingerprint and the source (its ``fingerprint`` column holds
  sha256("<file sha256>:<source id>")). A re-run resumes after the last recorded row; a
  chunk committed to the log but not yet recorded is read again and deduplicated.
- **Event time.** A row's ``timestamp`` is the event's: a file has no send time, so
  ``sentAt`` is dropped (no clock-skew correction against the time of the import), and so
  is ``originalTimestamp`` when the row has a ``timestamp``.
- **Nothing dropped silently.** A row that cannot become a valid message is counted by
  reason and written to the rejected-rows report (``FILE.rejected.jsonl``), one JSON line
  ``{row, reason, code, field, data}`` each.

Row numbers start at 1: the first data record of a CSV (the header is not counted), the
first line of a JSONL file, the first row of a Parquet file.
"""

from __future__ import annotations

import base64
import codecs
import csv
import gzip
import hashlib
import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from plait.collect.guard import IngestGuards
from plait.collect.ingest import prepare
from plait.govern.pii import Keyring
from plait.log import backend_for
from plait.spec import MESSAGE_TYPES, Enrichment
from plait.spec.timestamps import format_timestamp, now_utc
from plait.store import Store
from plait.store.db import now_ms
from plait.store.schema import imports

FORMATS = ("csv", "jsonl", "parquet")
IMPORT_TYPES = ("identify", "track")
EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
DEFAULT_CHUNK_SIZE = 1000

# Columns named like a Segment field map to it without --map.
DEFAULT_FIELDS = {
    "userId": "userId", "user_id": "userId",
    "anonymousId": "anonymousId", "anonymous_id": "anonymousId",
    "event": "event", "timestamp": "timestamp", "originalTimestamp": "originalTimestamp",
    "messageId": "messageId", "message_id": "messageId", "sentAt": "sentAt",
}  # fmt: skip
# Fields holding an object: a column may fill one whole (a JSON object) or one key of it
# (a column named "traits.email", or --map traits.email=Email).
OBJECT_FIELDS = ("traits", "properties", "context", "integrations")
MAPPABLE_FIELDS = frozenset({*DEFAULT_FIELDS.values(), *OBJECT_FIELDS})

_NUMBER = re.compile(r"-?(?:0|[1-9]\d{0,14})(?:\.\d+)?(?:[eE][-+]?\d{1,3})?")


class FileImportError(ValueError):
    """An import that cannot start (or go on): a missing file, a bad option, a broken file."""


@dataclass(slots=True)
class RowError(Exception):
    """A row that cannot become a message; it is rejected and reported."""

    code: str
    field: str | None
    reason: str


@dataclass(slots=True)
class ImportOptions:
    msg_type: str | None = None  # identify or track for every row
    type_column: str | None = None  # or the column saying which (default: "type")
    fields: dict[str, str] = field(default_factory=dict)  # FIELD path -> column
    infer_types: bool = True  # CSV only: "12.5", "3", "true" become numbers and booleans
    format: str | None = None  # csv, jsonl, parquet; default from the file's extension
    delimiter: str | None = None  # CSV; default "," ("\t" for .tsv)
    encoding: str = "utf-8"  # CSV; a row that does not decode is rejected, not altered
    chunk_size: int = DEFAULT_CHUNK_SIZE  # rows per transaction
    rejected_path: Path | None = None  # default FILE.rejected.jsonl
    restart: bool = False  # import again from the first row


@dataclass(slots=True)
class Progress:
    rows_done: int  # the last row read and committed
    bytes_done: int
    total_bytes: int
    total_rows: int | None  # known for Parquet only
    accepted: int  # totals over every run of this import
    rejected: int


@dataclass(slots=True)
class ImportResult:
    path: Path
    format: str
    fingerprint: str
    rows_done: int
    accepted: int  # over every run of this import: valid rows, new or already in the log
    rejected: int
    inserted: int  # this run: rows new to the log
    duplicates: int  # this run: valid rows whose messageId the log already held
    resumed_from: int
    already_finished: bool  # nothing to do: a finished import of the same file
    finished: bool
    reasons: Counter  # (field, reason) -> rejected rows, over every run
    rejected_path: Path | None  # the report, when it holds anything
    types: Counter = field(default_factory=Counter)  # this run: accepted rows by type


def parse_map(specs: list[str]) -> dict[str, str]:
    """``["userId=customer", "traits.email=Email"]`` -> ``{"userId": "customer", ...}``."""
    fields: dict[str, str] = {}
    for spec in specs:
        name, sep, column = spec.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise FileImportError(f"--map expects FIELD=COLUMN, got {spec!r}")
        if name == "type":
            raise FileImportError("--map type=...: use --type-column COLUMN")
        parts = name.split(".")
        if (
            parts[0] not in MAPPABLE_FIELDS
            or not all(parts)
            or (len(parts) > 1 and parts[0] not in OBJECT_FIELDS)
        ):
            raise FileImportError(
                f"--map {spec!r}: unknown field {name!r}; use userId, anonymousId, event, "
                "timestamp, messageId, or a path under traits, properties, context, "
                "integrations (traits.email)"
            )
        if name in fields:
            raise FileImportError(f"--map names {name!r} twice")
        fields[name] = column
    return fields


def detect_format(path: Path, override: str | None = None) -> tuple[str, bool]:
    """The format and whether the file is gzip-compressed (CSV and JSONL only)."""
    compressed = path.suffix.lower() == ".gz"
    if override is not None:
        fmt = override.lower()
        if fmt not in FORMATS:
            raise FileImportError(f"--format must be one of {', '.join(FORMATS)}, not {override!r}")
    else:
        suffix = Path(path.stem).suffix if compressed else path.suffix
        fmt = EXTENSIONS.get(suffix.lower())
        if fmt is None:
            known = ", ".join(sorted(EXTENSIONS))
            raise FileImportError(
                f"{path}: unknown extension {path.suffix or '(none)'!r} (known: {known}, "
                "and .gz for CSV and JSONL); say --format csv|jsonl|parquet"
            )
    if compressed and fmt == "parquet":
        raise FileImportError(f"{path}: Parquet compresses inside the file; do not gzip it")
    return fmt, compressed


def fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes. Reading the file once more costs far less than importing
    it (hashing runs at over 1 GB/s), and unlike a sample it cannot miss an edit."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# Values ------------------------------------------------------------------------------


def infer(text: str) -> Any:
    """A CSV cell as what it says: integers (up to 15 digits, no leading zeros), decimals,
    true/false; anything else, "007" or "+33 6…" included, stays a string."""
    if text.isdigit() and text.isascii():
        return int(text) if len(text) < 16 and (text[0] != "0" or len(text) == 1) else text
    first = text[0]
    if first in "-0123456789":
        if _NUMBER.fullmatch(text):
            if "." in text or "e" in text or "E" in text:
                number = float(text)
                return number if math.isfinite(number) else text
            return int(text)
    elif len(text) in (4, 5):
        lowered = text.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    return text


_BASIC = (str, int, float, bool, type(None))


def plain(value: Any) -> Any:
    """A Parquet value as JSON can hold it; timestamps without a zone are taken as UTC."""
    if isinstance(value, _BASIC):
        return value
    if isinstance(value, datetime):
        return format_timestamp(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


# Mapping -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What to do with each column of one set of columns."""

    objects: list[tuple[str, str]] = field(default_factory=list)  # column -> whole object
    simple: list[tuple[str, str]] = field(default_factory=list)  # column -> top-level field
    nested: list[tuple[str, tuple[str, ...], bool]] = field(default_factory=list)  # + infer?
    rest: list[str] = field(default_factory=list)  # into traits/properties
    declared: str | None = None  # with --type: a "type" column, if it names a message type


class Mapper:
    """Turns a row (column -> value) into a Segment message of type identify or track.

    Precedence, from weakest: a JSON object filling a whole field (a "traits" column), the
    other columns (into traits or properties), then columns mapped to a field or path.
    """

    def __init__(self, options: ImportOptions, fmt: str):
        self.msg_type = options.msg_type
        self.type_column = options.type_column or (None if options.msg_type else "type")
        self.fields = options.fields
        self.infer = options.infer_types and fmt == "csv"
        self.jsonl = fmt == "jsonl"
        self.by_column: dict[str, list[tuple[str, ...]]] = {}
        for name, column in options.fields.items():
            self.by_column.setdefault(column, []).append(tuple(name.split(".")))
        self._plans: dict[tuple[str, ...], _Plan] = {}

    def plan(self, columns: tuple[str, ...]) -> _Plan:
        plan = self._plans.get(columns)
        if plan is None:
            if len(self._plans) > 10_000:  # JSONL lines with ever new keys
                self._plans.clear()
            plan = self._plans[columns] = self._compile(columns)
        return plan

    def _compile(self, columns: tuple[str, ...]) -> _Plan:
        plan = _Plan()
        for column in columns:
            if column == self.type_column:
                continue
            if column in self.by_column:
                paths = self.by_column[column]
            elif column == "type" and self.msg_type is not None:
                plan.declared = column
                continue
            elif (default := DEFAULT_FIELDS.get(column)) and default not in self.fields:
                paths = [(default,)]
            elif column in self.fields:  # its name is a field mapped from another column
                paths = []
            elif column in OBJECT_FIELDS:
                paths = [(column,)]
            elif column.partition(".")[0] in OBJECT_FIELDS and all(column.split(".")):
                paths = [tuple(column.split("."))]
            else:
                paths = []
            if not paths:
                plan.rest.append(column)
            for path in paths:
                if len(path) > 1:
                    infer_it = self.infer and path[0] in ("traits", "properties")
                    plan.nested.append((column, path, infer_it))
                elif path[0] in OBJECT_FIELDS:
                    plan.objects.append((column, path[0]))
                else:
                    plan.simple.append((column, path[0]))
        return plan

    def row_type(self, raw: dict[str, Any]) -> str:
        if self.msg_type is not None:
            return self.msg_type
        value = raw.get(self.type_column)
        if value is None or value == "":
            raise RowError("missing_type", self.type_column,
                           "is empty: it must say identify or track")  # fmt: skip
        text = str(value).strip().lower()
        if text not in IMPORT_TYPES:
            raise RowError("unsupported_type", self.type_column,
                           f"is {value!r}: a file row must be identify or track")  # fmt: skip
        return text

    def message(self, raw: dict[str, Any], columns: tuple[str, ...] | None = None) -> dict:
        """``columns``: the file's, when every row has the same (CSV, Parquet)."""
        plan = self.plan(tuple(raw) if columns is None else columns)
        msg_type = self.row_type(raw)
        msg: dict[str, Any] = {"type": msg_type}
        get = raw.get
        for column, name in plan.objects:
            value = get(column)
            if value is not None and value != "":
                obj = _object(column, value)
                msg[name] = {**msg[name], **obj} if name in msg else obj
        rest = {c: v for c in plan.rest if (v := get(c)) is not None and v != ""}
        if plan.declared is not None:
            value = get(plan.declared)
            if isinstance(value, str) and value in MESSAGE_TYPES:
                msg["type"] = value  # validate() rejects it if it is not --type
            elif value is not None and value != "":
                rest[plan.declared] = value
        if rest:
            # A JSONL line with an object-valued traits/properties/context/integrations is a
            # Segment message: its other keys stay where they are, as the HTTP API keeps them.
            if self.jsonl and any(isinstance(get(k), dict) for k in OBJECT_FIELDS):
                for key, value in rest.items():
                    msg.setdefault(key, value)
            else:
                key = "traits" if msg_type == "identify" else "properties"
                if self.infer:
                    rest = {k: infer(v) for k, v in rest.items()}
                msg[key] = {**msg[key], **rest} if key in msg else rest
        for column, name in plan.simple:
            value = get(column)
            if value is not None and value != "":
                if name == "messageId" and isinstance(value, int | float):
                    value = str(value)
                msg[name] = value
        for column, path, infer_it in plan.nested:
            value = get(column)
            if value is not None and value != "":
                _put(msg, path, infer(value) if infer_it and isinstance(value, str) else value)
        # A file has no send time: correcting for client clock skew against the time of
        # the import would move every event to today. The row's timestamp is the event's.
        msg.pop("sentAt", None)
        if "timestamp" in msg:
            msg.pop("originalTimestamp", None)
        return msg


def _object(column: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise RowError("invalid_field", column, "must be a JSON object") from None
    if not isinstance(value, dict):
        raise RowError("invalid_field", column, "must be a JSON object")
    return dict(value)


def _put(msg: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = msg
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise RowError(
                "invalid_field", ".".join(path), f"{where} is both a value and an object"
            )
        else:
            child = dict(child)  # never write into an object shared with the raw row
        node[part] = child
        node = child
    if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
        value = {**node[path[-1]], **value}
    node[path[-1]] = value


# Readers: each yields (row number, raw row or RowError) after ``skip`` rows ----------


class _Reader:
    columns: list[str] | None = None  # known before reading for CSV and Parquet
    total_rows: int | None = None
    last_row = 0  # the last row consumed, blank ones included

    def __init__(self, path: Path, **options):
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.total_bytes = os.fstat(self._file.fileno()).st_size
        try:
            self._open(**options)
        except BaseException:
            self._file.close()
            raise

    def _open(self, **options) -> None:
        pass

    def position(self) -> int:
        return self._file.tell()

    def rows(self, skip: int) -> Iterator[tuple[int, dict[str, Any] | RowError, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        self._file.close()


class _CsvReader(_Reader):
    def _open(self, compressed: bool, delimiter: str, encoding: str) -> None:
        path = self.path
        binary = gzip.GzipFile(fileobj=self._file) if compressed else self._file
        if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
            encoding = "utf-8-sig"  # and skip a byte-order mark
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise FileImportError(f"unknown encoding {encoding!r}") from None
        # Bytes that do not decode become lone surrogates, so the row can be rejected.
        self._text = io.TextIOWrapper(binary, encoding, "surrogateescape", newline="")
        csv.field_size_limit(max(csv.field_size_limit(), 16 * 1024 * 1024))
        self._reader = csv.reader(self._text, delimiter=delimiter)
        try:
            header = next(self._reader, None)
        except (csv.Error, OSError, EOFError) as exc:
            raise FileImportError(f"{path}: cannot read the CSV header: {exc}") from None
        if not header:
            raise FileImportError(f"{path}: empty file: a CSV import needs a header row")
        if not _decoded(header):
            raise FileImportError(f"{path}: the header is not {encoding} text (--encoding)")
        self.columns = [name.strip() or f"column_{i}" for i, name in enumerate(header, 1)]
        duplicated = sorted(n for n, c in Counter(self.columns).items() if c > 1)
        if duplicated:
            raise FileImportError(f"{path}: the header repeats {', '.join(duplicated)}")

    def rows(self, skip: int):
        columns, width = self.columns, len(self.columns)
        row_no = 0
        try:
            for row_no, cells in enumerate(self._reader, 1):
                self.last_row = row_no
                if row_no <= skip or not cells:
                    continue
                if not _decoded(cells):
                    data = dict(zip(columns, map(_shown, cells), strict=False))
                    yield row_no, RowError("invalid_text", None, "is not valid text"), data
                    continue
                if len(cells) != width:
                    data = dict(zip(columns, cells, strict=False))
                    if len(cells) > width:
                        data["_extra"] = cells[width:]
                    error = RowError(
                        "malformed_row", None, f"has {len(cells)} cells, the header {width}"
                    )
                    yield row_no, error, data
                    continue
                raw = dict(zip(columns, cells, strict=True))
                yield row_no, raw, raw
        except (csv.Error, OSError, EOFError) as exc:  # also a truncated or corrupt gzip
            raise FileImportError(f"{self.path}: after row {row_no}: {exc}") from None


def _decoded(cells: list[str]) -> bool:
    """False when a cell holds bytes the encoding could not decode (lone surrogates)."""
    try:
        "".join(cells).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(cell: str) -> str:
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _JsonlReader(_Reader):
    def _open(self, compressed: bool) -> None:
        self._lines = gzip.GzipFile(fileobj=self._file) if compressed else self._file

    def rows(self, skip: int):
        row_no = 0
        try:
            for row_no, line in enumerate(self._lines, 1):
                self.last_row = row_no
                if row_no <= skip or not line.strip():
                    continue
                try:
                    raw = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    yield row_no, RowError("invalid_json", None, f"not JSON: {exc}"), text
                    continue
                if not isinstance(raw, dict):
                    yield row_no, RowError("invalid_message", None, "must be a JSON object"), raw
                    continue
                yield row_no, raw, raw
        except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream
            raise FileImportError(f"{self.path}: after row {row_no}: {exc}") from None


class _ParquetReader(_Reader):
    def _open(self, batch_size: int) -> None:
        path = self.path
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self._parquet = pq.ParquetFile(self._file)
        except (pa.ArrowException, OSError) as exc:
            raise FileImportError(f"{path}: not a readable Parquet file: {exc}") from None
        schema = self._parquet.schema_arrow
        self.columns = list(schema.names)
        self.total_rows = self._parquet.metadata.num_rows
        basic = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer,
                 pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)  # fmt: skip
        self._convert = [f.name for f in schema if not any(t(f.type) for t in basic)]
        self._batch_size = batch_size
        self._row = 0

    def position(self) -> int:  # a columnar file is not read front to back: estimate
        return self.total_bytes * self._row // max(self.total_rows, 1)

    def rows(self, skip: int):
        meta = self._parquet.metadata
        groups, row_no = [], 0
        for index in range(meta.num_row_groups):  # skip whole row groups without reading
            size = meta.row_group(index).num_rows
            if not groups and row_no + size <= skip:
                row_no += size
                continue
            groups.append(index)
        self.last_row = self._row = row_no
        if not groups:
            return
        convert = self._convert
        for batch in self._parquet.iter_batches(batch_size=self._batch_size, row_groups=groups):
            for raw in batch.to_pylist():
                row_no += 1
                self.last_row = self._row = row_no
                if row_no <= skip:
                    continue
                for name in convert:
                    raw[name] = plain(raw[name])
                yield row_no, raw, raw


# The import ---------------------------------------------------------------------------


class FileImport:
    """One file into one source. Constructing it checks everything that can be checked
    before a row is written (the file, its format and header, the options) and reads the
    import's recorded progress; :meth:`run` does the work."""

    def __init__(
        self, store: Store, workspace_id: str, source_id: str, path: Path | str,
        options: ImportOptions | None = None,
    ):  # fmt: skip
        self.store = store
        self.workspace_id = workspace_id
        self.source_id = source_id
        self.path = Path(path)
        self.options = options = options or ImportOptions()
        if not self.path.exists():
            raise FileImportError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise FileImportError(f"{self.path}: not a file")
        self.format, compressed = detect_format(self.path, options.format)
        if options.msg_type is not None and options.msg_type not in IMPORT_TYPES:
            raise FileImportError(f"--type must be identify or track, not {options.msg_type!r}")
        if options.msg_type is not None and options.type_column is not None:
            raise FileImportError("give --type or --type-column, not both")
        if options.chunk_size < 1:
            raise FileImportError("the chunk size must be at least 1")
        for name in options.fields:
            parse_map([f"{name}=x"])  # the same checks for callers that skip parse_map
        self.rejected_path = options.rejected_path or self.path.with_name(
            self.path.name + ".rejected.jsonl"
        )
        self.fingerprint = fingerprint(self.path)
        # The import's key: the same file may go to several sources (or workspaces).
        self.key = hashlib.sha256(f"{self.fingerprint}:{source_id}".encode()).hexdigest()
        self._reader = self._open_reader(compressed)
        try:
            self._check_columns()
        except BaseException:
            self._reader.close()
            raise
        self.mapper = Mapper(options, self.format)
        with store.engine.connect() as conn:
            state = conn.execute(sa.select(imports).where(imports.c.fingerprint == self.key))
            self.state = state.mappings().first()
        fresh = self.state is None or options.restart
        self.already_finished = not fresh and bool(self.state["finished"])
        self.resume_from = 0 if fresh or self.already_finished else self.state["rows_done"]
        self.rows_done = self.resume_from

    def _open_reader(self, compressed: bool) -> _Reader:
        if self.format == "parquet":
            return _ParquetReader(self.path, batch_size=self.options.chunk_size)
        if self.format == "jsonl":
            return _JsonlReader(self.path, compressed=compressed)
        delimiter = self.options.delimiter
        if delimiter is None:
            suffix = Path(self.path.stem).suffix if compressed else self.path.suffix
            delimiter = "\t" if suffix.lower() == ".tsv" else ","
        if len(delimiter) != 1:
            raise FileImportError(f"the delimiter must be one character, not {delimiter!r}")
        return _CsvReader(
            self.path, compressed=compressed, delimiter=delimiter, encoding=self.options.encoding
        )

    def _check_columns(self) -> None:
        columns = self._reader.columns
        if columns is None:  # JSONL: every line has its own keys
            return
        names = ", ".join(columns)
        options = self.options
        for name, column in options.fields.items():
            if column not in columns:
                raise FileImportError(
                    f"--map {name}={column}: no column {column!r} (columns: {names})"
                )
        if options.type_column is not None and options.type_column not in columns:
            raise FileImportError(
                f"--type-column: no column {options.type_column!r} (columns: {names})"
            )
        if options.msg_type is None and options.type_column is None and "type" not in columns:
            raise FileImportError(
                "say what the rows are: --type identify|track, or --type-column COLUMN "
                f"(the file has no 'type' column; columns: {names})"
            )

    @property
    def total_bytes(self) -> int:
        return self._reader.total_bytes

    @property
    def total_rows(self) -> int | None:
        return self._reader.total_rows

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> FileImport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Running --------------------------------------------------------------------------

    def run(
        self,
        progress: Callable[[Progress], None] | None = None,
        max_chunks: int | None = None,
    ) -> ImportResult:
        """Import (or resume) the file. ``progress`` is called after every committed chunk;
        ``max_chunks`` stops early, as an interruption would (the import stays resumable)."""
        try:
            return self._run(progress, max_chunks)
        finally:
            self.close()

    def _run(self, progress, max_chunks) -> ImportResult:
        state = self.state
        result = ImportResult(
            path=self.path, format=self.format, fingerprint=self.fingerprint,
            rows_done=self.resume_from, accepted=0, rejected=0, inserted=0, duplicates=0,
            resumed_from=self.resume_from, already_finished=self.already_finished,
            finished=self.already_finished, reasons=Counter(), rejected_path=None,
        )  # fmt: skip
        if self.already_finished:
            result.rows_done = state["rows_done"]
            result.accepted, result.rejected = state["accepted"], state["rejected"]
            result.reasons = self._reasons_in_report(None)
            result.rejected_path = self._report_if_any()
            return result
        if self.resume_from:
            result.accepted, result.rejected = state["accepted"], state["rejected"]
            result.reasons = self._reasons_in_report(self.resume_from)
        else:
            self.rejected_path.unlink(missing_ok=True)  # a fresh start writes a fresh report
            self._save(0, 0, 0, False, insert=state is None)

        log = backend_for(self.store)
        # The PII policy and suppressions apply to imported rows as to the HTTP API's.
        guards = IngestGuards(self.store.engine, 0.0, Keyring.from_env())
        guard = guards.for_source(self.workspace_id, self.source_id)
        report = None
        chunks = 0
        rows = self._reader.rows(self.resume_from)
        columns = tuple(self._reader.columns) if self._reader.columns is not None else None
        try:
            while True:
                chunk, failure = self._next_chunk(rows)
                messages, meta, rejected = [], [], []
                for row_no, raw, data in chunk:
                    if isinstance(raw, RowError):
                        rejected.append((row_no, raw, data))
                        continue
                    try:
                        msg = self.mapper.message(raw, columns)
                    except RowError as exc:
                        rejected.append((row_no, exc, data))
                        continue
                    if not msg.get("messageId"):
                        msg["messageId"] = f"file-{self.fingerprint[:32]}-{row_no}"
                    messages.append(msg)
                    meta.append((row_no, data))
                env = Enrichment(received_at=now_utc(), workspace_id=self.workspace_id,
                                 source_id=self.source_id)  # fmt: skip
                prepared = prepare(messages, self.options.msg_type, env, guard)
                for item in prepared.rejected:
                    row_no, data = meta[item["index"]]
                    error = RowError(item["code"], item["field"], item["message"])
                    rejected.append((row_no, error, data))
                inserted = log.append(prepared.rows) if prepared.rows else 0
                accepted = len(prepared.rows)
                result.inserted += inserted
                result.duplicates += accepted - inserted
                result.types.update(prepared.types)
                if rejected:
                    report = report or open(self.rejected_path, "ab")  # noqa: SIM115
                    rejected.sort(key=lambda r: r[0])
                    for row_no, error, data in rejected:
                        report.write(orjson.dumps(
                            {"row": row_no, "reason": error.reason, "code": error.code,
                             "field": error.field, "data": data},
                            option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
                        ))  # fmt: skip
                        result.reasons[(error.field, error.reason)] += 1
                    report.flush()
                # Rows read up to here: the last of the chunk, or the end of the file.
                done = chunk[-1][0] if chunk and len(chunk) == self.options.chunk_size else None
                at_end = done is None and failure is None
                result.rows_done = self._reader.last_row if done is None else done
                result.accepted += accepted
                result.rejected += len(rejected)
                self._save(result.rows_done, result.accepted, result.rejected, at_end)
                self.rows_done = result.rows_done
                result.finished = at_end
                if failure is not None:
                    raise failure
                if progress is not None:
                    progress(Progress(result.rows_done, self._reader.position(),
                                      self.total_bytes, self.total_rows,
                                      result.accepted, result.rejected))  # fmt: skip
                chunks += 1
                if at_end or (max_chunks is not None and chunks >= max_chunks):
                    break
        finally:
            log.close()
            if report is not None:
                report.close()
        result.rejected_path = self._report_if_any()
        return result

    def _next_chunk(self, rows) -> tuple[list, FileImportError | None]:
        chunk = []
        try:
            for item in rows:
                chunk.append(item)
                if len(chunk) == self.options.chunk_size:
                    break
        except FileImportError as exc:  # commit what was read before the damage
            return chunk, exc
        return chunk, None

    def _save(self, rows_done: int, accepted: int, rejected: int, finished: bool,
              insert: bool = False) -> None:  # fmt: skip
        values = {
            "source_id": self.source_id, "path": str(self.path.resolve())[:1000],
            "rows_done": rows_done, "accepted": accepted, "rejected": rejected,
            "finished": finished, "updated_at": now_ms(),
        }  # fmt: skip
        with self.store.engine.begin() as conn:
            if insert:
                conn.execute(imports.insert().values(fingerprint=self.key, **values))
            else:
                conn.execute(
                    imports.update().where(imports.c.fingerprint == self.key).values(values)
                )

    def _report_if_any(self) -> Path | None:
        path = self.rejected_path
        return path if path.exists() and path.stat().st_size else None

    def _reasons_in_report(self, keep_up_to: int | None) -> Counter:
        """Counts by reason in the existing report. When resuming, lines past the recorded
        progress (written before an interruption caught the chunk uncommitted) are dropped:
        that chunk is read again and reports its rows again."""
        reasons: Counter = Counter()
        path = self.rejected_path
        if not path.exists():
            return reasons
        kept = []
        with open(path, "rb") as f:
            for line in f:
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError:  # a line cut short by a crash
                    continue
                if keep_up_to is not None and item.get("row", 0) > keep_up_to:
                    continue
                reasons[(item.get("field"), item.get("reason"))] += 1
                kept.append(line if line.endswith(b"\n") else line + b"\n")
        if keep_up_to is not None:
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(b"".join(kept))
            os.replace(partial, path)
        return reasons


def import_file(
    store: Store, workspace_id: str, source_id: str, path: Path | str,
    options: ImportOptions | None = None,
    progress: Callable[[Progress], None] | None = None,
    max_chunks: int | None = None,
) -> ImportResult:  # fmt: skip
    """Import (or resume) one file into a source: :class:`FileImport` in one call."""
    return FileImport(store, workspace_id, source_id, path, options).run(progress, max_chunks)
