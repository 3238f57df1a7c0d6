"""Slows password guessing: failed sign-ins are counted per email and per client address
over a sliding window; past the limit, sign-in answers 429 (with Retry-After) until the
oldest failure ages out, even to the right password. A success clears the email's count.

The counts live in the server process (``--workers N`` lets a guesser try N times as
often), which is enough to make guessing a 10-character password hopeless."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 15 * 60
PER_EMAIL = 10  # failures a window for one account
PER_ADDRESS = 50  # for one client address, across accounts
_SWEEP_AT = 10_000  # keys held before the expired ones are swept


class FailedAttempts:
    """Failures per key over the last ``window`` seconds."""

    def __init__(self, limit: int, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[-self.limit] + self.window - self.clock())

    def failed(self, key: str) -> None:
        if len(self._failures) >= _SWEEP_AT:
            for old in list(self._failures):
                self._recent(old)
        self._failures.setdefault(key, deque()).append(self.clock())
        times = self._failures[key]
        while len(times) > self.limit:  # older ones no longer decide the wait
            times.popleft()

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


class SignInGuard:
    """The two counts sign-in consults: by email and by client address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.by_email = FailedAttempts(PER_EMAIL, clock=clock)
        self.by_address = FailedAttempts(PER_ADDRESS, clock=clock)

    def retry_after(self, email: str, address: str) -> int:
        """Whole seconds to wait before trying (0: try now)."""
        wait = max(self.by_email.wait(email.lower()), self.by_address.wait(address))
        return math.ceil(wait)

    def failed(self, email: str, address: str) -> None:
        self.by_email.failed(email.lower())
        self.by_address.failed(address)

    def succeeded(self, email: str) -> None:
        self.by_email.succeeded(email.lower())
