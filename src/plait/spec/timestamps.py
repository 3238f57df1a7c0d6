"""ISO-8601 timestamps as Segment's SDKs send them, always handled in UTC."""

from datetime import UTC, datetime


def parse_timestamp(value: object) -> datetime:
    """Parse an ISO-8601 string; a value without an offset is taken as UTC.

    Raises ValueError for anything else (numbers included: the Segment spec sends strings).
    """
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string")
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_timestamp(dt: datetime) -> str:
    """UTC with milliseconds and a Z, the form Segment writes: 2024-01-02T03:04:05.678Z."""
    dt = dt.astimezone(UTC) if dt.tzinfo is not UTC else dt
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


def now_utc() -> datetime:
    return datetime.now(UTC)
