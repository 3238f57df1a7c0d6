"""Prometheus metrics and structured JSON logs."""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from plait.runtime import MULTIPROCESS_DIR_ENV

MESSAGES_ACCEPTED = Counter(
    "plait_messages_accepted_total", "Messages accepted into the log", ["source", "type"]
)
MESSAGES_REJECTED = Counter(
    "plait_messages_rejected_total", "Messages or requests refused", ["source", "reason"]
)
LOG_WRITTEN = Counter("plait_log_rows_written_total", "Rows committed to the log (new ones)")
LOG_DUPLICATES = Counter(
    "plait_log_duplicates_total", "Messages dropped as duplicates of a stored messageId"
)
LOG_COMMIT_ROWS = Histogram(
    "plait_log_commit_rows",
    "Rows per group commit",
    buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
)
LOG_PENDING = Gauge(
    "plait_log_pending_messages", "Messages waiting for a log commit", multiprocess_mode="livesum"
)
LOG_LAST_OFFSET = Gauge(
    "plait_log_last_offset", "Highest offset in the log", multiprocess_mode="max"
)
PIPELINE_MESSAGES = Counter(
    "plait_pipeline_messages_total", "Log messages the pipeline processed", ["outcome"]
)
GOVERNED_MESSAGES = Counter(
    "plait_governed_messages_total",
    "Messages governance kept out of profiles (dropped by a transformation, blocked by a "
    "tracking plan) or rejected at ingestion (suppressed)",
    ["outcome"],
)
AUDIENCE_PASSED_OVER = Counter(
    "plait_audience_passed_over_total",
    "Audience steps (a batch's messages) that failed and were passed over (the next "
    "reconciliation over the lake sets their profiles right)",
)
DELIVERIES = Counter(
    "plait_deliveries_total",
    "Messages per destination: delivered, filtered (left out by its filters or consent), "
    "retried (an attempt that failed and will be tried again), failed (dead letters)",
    ["destination", "outcome"],
)
PIPELINE_MERGES = Counter("plait_profile_merges_total", "Profiles merged into another")
PIPELINE_BATCH_SECONDS = Histogram(
    "plait_pipeline_batch_seconds",
    "Time to process one pipeline batch (stages and commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REQUEST_SECONDS = Histogram(
    "plait_http_request_duration_seconds",
    "HTTP request latency",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def exposition() -> tuple[bytes, str]:
    """The metrics page: this process's, or every worker's added up under --workers."""
    if os.environ.get(MULTIPROCESS_DIR_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def record_commit(rows: int, inserted: int) -> None:
    LOG_WRITTEN.inc(inserted)
    if rows > inserted:
        LOG_DUPLICATES.inc(rows - inserted)
    LOG_COMMIT_ROWS.observe(rows)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key.startswith("plait_"):
                entry[key[6:]] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
