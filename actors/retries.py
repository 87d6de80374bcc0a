"""The session's reconnect schedule: attempts so far, the one pending wake-up (the next
retry, or the end of a ban), and how many reconnects each cause has caused.

A session has at most one wake-up pending; each carries a ticket, and a timer whose
ticket is no longer the pending one (the state changed after it was set) is stale.
The delays come from the BackoffPolicy; the timers post RetryDue/BanOver to the actor.
A cause that can heal is retried without end: an outage of any length never strands a
company. Every `max_attempts` attempts the schedule says operators should be told.
"""
from __future__ import annotations

import itertools
import random
import time
from typing import Any, Callable

from . import messages as m
from .backoff import BackoffPolicy
from .connection import Cause
from .scheduler import Scheduler


class Retries:
    def __init__(self, policy: BackoffPolicy, scheduler: Scheduler, rng: random.Random,
                 tell: Callable[[Any], None]) -> None:
        self._policy = policy
        self._scheduler = scheduler
        self._rng = rng
        self._tell = tell
        self._tickets = itertools.count(1)
        self._ticket = 0
        self.attempts = 0
        self.next_at: float | None = None            # wall clock of the pending wake-up
        self.by_cause: dict[str, int] = {}

    def schedule(self, cause: Cause) -> bool:
        """Count a reconnect for `cause` and set the next retry. True when this attempt
        is the `max_attempts`-th (or a multiple of it): time to tell operators."""
        self.by_cause[cause.value] = self.by_cause.get(cause.value, 0) + 1
        delay = self._policy.delay(self.attempts, self._rng)
        self.attempts += 1
        self.retry_in(delay)
        every = max(1, self._policy.max_attempts)
        return self.attempts % every == 0

    def retry_in(self, delay: float) -> None:
        """A retry after `delay` seconds, not counted as an attempt (e.g. a restore's turn)."""
        self._arm(delay, m.RetryDue)

    def ban(self, expires_in: float) -> float:
        """Wait out a ban; its delay. A ban with no (or a zero) expiry must not become a loop."""
        delay = max(expires_in if expires_in > 0 else self._policy.cap, self._policy.base)
        self._arm(delay, m.BanOver)
        return delay

    def due(self, timer: m.RetryDue | m.BanOver) -> bool:
        return timer.ticket == self._ticket

    def cancel(self) -> None:
        self._ticket, self.next_at = 0, None

    def reset(self) -> None:
        """The connection was stable long enough: the next drop starts from the base delay."""
        self.attempts = 0

    def retry_after_ms(self) -> int | None:
        if self.next_at is None:
            return None
        return max(1, int((self.next_at - time.time()) * 1000))

    def _arm(self, delay: float, message: type) -> None:
        self._ticket = next(self._tickets)
        self.next_at = time.time() + delay
        self._scheduler.call_later(delay, self._tell, message(self._ticket))
