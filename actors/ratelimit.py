"""Sliding-window send limits, per company and per recipient."""
from __future__ import annotations

import collections
import dataclasses
import math
import time
from typing import Callable, Protocol


@dataclasses.dataclass(frozen=True)
class RateLimit:
    max_messages: int = 30
    window: float = 60.0                 # seconds
    per_recipient_max: int = 10          # to one recipient within the same window


class RateLimited(Exception):
    def __init__(self, retry_after_ms: int, scope: str) -> None:
        super().__init__(f"rate limit reached ({scope}); retry in {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms
        self.scope = scope


class Limiter(Protocol):
    """Counts a company's sends; `acquire` raises RateLimited when one would exceed a limit."""

    def acquire(self, recipient: str) -> None: ...


class SlidingWindowLimiter:
    """Exact "at most N in the last W seconds" log. Owned by one actor: not thread-safe."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._company: collections.deque[float] = collections.deque()
        self._recipients: dict[str, collections.deque[float]] = {}

    def acquire(self, recipient: str) -> None:
        """Record one send to `recipient`, or raise RateLimited without recording anything."""
        now = self._clock()
        horizon = now - self.limit.window
        self._prune(self._company, horizon)
        per = self._recipients.get(recipient)
        if per is not None:
            self._prune(per, horizon)
            if not per:
                del self._recipients[recipient]
                per = None
        if len(self._company) >= self.limit.max_messages:
            raise RateLimited(self._retry_after_ms(self._company, now), "company")
        if per is not None and len(per) >= self.limit.per_recipient_max:
            raise RateLimited(self._retry_after_ms(per, now), "recipient")
        self._company.append(now)
        self._recipients.setdefault(recipient, collections.deque()).append(now)
        if len(self._recipients) > 4 * self.limit.max_messages:
            self._forget_idle(horizon)

    def acquire_unchecked(self, recipient: str) -> None:
        """Record a send another authority (Redis) already allowed."""
        now = self._clock()
        self._company.append(now)
        self._recipients.setdefault(recipient, collections.deque()).append(now)
        horizon = now - self.limit.window
        self._prune(self._company, horizon)
        if len(self._recipients) > 4 * self.limit.max_messages:
            self._forget_idle(horizon)

    def _retry_after_ms(self, log: collections.deque[float], now: float) -> int:
        return max(1, math.ceil((log[0] + self.limit.window - now) * 1000))

    @staticmethod
    def _prune(log: collections.deque[float], horizon: float) -> None:
        while log and log[0] <= horizon:
            log.popleft()

    def _forget_idle(self, horizon: float) -> None:
        for key in [k for k, v in self._recipients.items() if not v or v[-1] <= horizon]:
            del self._recipients[key]
