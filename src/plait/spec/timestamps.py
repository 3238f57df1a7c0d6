"""ISO-8601 timestamps as Segment's SDKs send them, always handled in UTC."""

from datetime import UTC, datetime, timedelta


def parse_timestamp(value: object) -> datetime:
    """Parse an ISO-8601 string; a value without an offset is taken as UTC.

    Raises ValueError for anything else (numbers included: the Segment spec sends strings).
    """
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string")
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is UTC:  # "Z" or "+00:00": already what astimezone would return
        return dt
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # an offset that moves it past year 1 or 9999
        raise ValueError("out of the representable range") from None


# Formatting is on the ingestion hot path (three timestamps per message), so the
# "YYYY-MM-DDTHH:MM:" prefix is cached per minute and the rest comes from tables:
# about 4x faster than formatting every field.
_MINUTES: dict[tuple[int, int, int, int, int], str] = {}
_SECONDS = tuple(f"{s:02d}." for s in range(60))
_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def format_ms(ms: int) -> str:
    """Milliseconds since the epoch as format_timestamp writes them (integer arithmetic:
    no float rounding of the milliseconds)."""
    return format_timestamp(
        datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    )


def format_timestamp(dt: datetime) -> str:
    """UTC with milliseconds and a Z, the form Segment writes: 2024-01-02T03:04:05.678Z."""
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    key = (dt.year, dt.month, dt.day, dt.hour, dt.minute)
    prefix = _MINUTES.get(key)
    if prefix is None:
        if len(_MINUTES) >= 4096:
            _MINUTES.clear()
        # Not strftime: its %Y does not zero-pad years before 1000 on glibc.
        year, month, day, hour, minute = key
        prefix = _MINUTES[key] = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:"
    return prefix + _SECONDS[dt.second] + _MILLIS[dt.microsecond // 1000]


def now_utc() -> datetime:
    return datetime.now(UTC)


# Correcting clock skew on timestamps in format_timestamp's own form (analytics.js sends
# them so) needs no datetime: minutes since the epoch come from the "YYYY-MM-DDTHH:MM:"
# prefix, cached both ways, and seconds and milliseconds from tables.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_FIRST_MINUTE = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MINUTE
_LAST_MINUTE = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MINUTE
_MINUTE_TEXT: dict[int, str] = {}  # minutes since the epoch -> "YYYY-MM-DDTHH:MM:"
_MINUTE_OF: dict[str, int] = {}  # the reverse
_SECOND_US = {f"{s:02d}.": s * 1_000_000 for s in range(60)}
_MILLI_US = {f"{ms:03d}Z": ms * 1000 for ms in range(1000)}


def _minute_text(minute: int) -> str | None:
    """The "YYYY-MM-DDTHH:MM:" of a minute since the epoch; None out of datetime's range."""
    text = _MINUTE_TEXT.get(minute)
    if text is None and _FIRST_MINUTE <= minute <= _LAST_MINUTE:
        if len(_MINUTE_TEXT) >= 4096:
            _MINUTE_TEXT.clear()
            _MINUTE_OF.clear()
        text = _MINUTE_TEXT[minute] = format_timestamp(_EPOCH + minute * _MINUTE)[:17]
        _MINUTE_OF[text] = minute
    return text


def _minute_of(prefix: str) -> int | None:
    """The minute since the epoch a "YYYY-MM-DDTHH:MM:" prefix names, when _MINUTE_OF
    does not have it yet; None for another form."""
    try:
        start = datetime.fromisoformat(prefix[:16])
    except ValueError:
        return None
    if start.tzinfo is not None:
        return None
    minute = (start.replace(tzinfo=UTC) - _EPOCH) // _MINUTE
    return minute if _minute_text(minute) == prefix else None  # else another form


class ClockSkew:
    """timestamp = receivedAt - (sentAt - originalTimestamp) for one request's receivedAt
    and sentAt, on timestamps in format_timestamp's form."""

    __slots__ = ("_minutes", "_rest")

    def __init__(self, received_at: datetime, sent_at: datetime):
        delta = received_at - sent_at
        delta_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        self._minutes, self._rest = divmod(delta_us, 60_000_000)

    def correct(self, text: str) -> str | None:
        """The corrected ``text``; None when it is not in format_timestamp's form or the
        result is out of the representable range."""
        minute = _MINUTE_OF.get(text[:17])
        if minute is None:
            minute = _minute_of(text[:17])
        second = _SECOND_US.get(text[17:20])
        milli = _MILLI_US.get(text[20:])
        if minute is None or second is None or milli is None:
            return None
        minute += self._minutes
        rest = second + milli + self._rest  # below two minutes
        if rest >= 60_000_000:
            rest -= 60_000_000
            minute += 1
        prefix = _MINUTE_TEXT.get(minute) or _minute_text(minute)
        if prefix is None:
            return None
        return prefix + _SECONDS[rest // 1_000_000] + _MILLIS[rest % 1_000_000 // 1000]
