"""Reconnect backoff: exponential from a base delay, capped, with jitter.

A session retries a cause that can heal without end (capped at `cap`); `max_attempts`
is when operators are told (`reconnect_failed`), not when it stops. Other users of the
policy (webhook deliveries) do stop at `max_attempts`."""
from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class BackoffPolicy:
    base: float = 5.0            # seconds before the first retry
    factor: float = 2.0
    cap: float = 300.0           # no delay is ever longer than this
    jitter: float = 0.2          # each delay is shortened by up to this fraction, at random
    max_attempts: int = 10       # a session: retries before `reconnect_failed` (and every as many after)
    stable_after: float = 60.0   # connected this long: the attempt counter starts over

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number `attempt` (0-based). Jitter only ever shortens it,
        so the cap holds and a herd of sessions dropped together spreads out."""
        raw = min(self.cap, self.base * self.factor ** min(attempt, 64))
        return raw * (1.0 - self.jitter * (rng or random).random())

    def worst_case_total(self) -> float:
        """Longest time `max_attempts` retries can take: the bound a recovery waits for."""
        return sum(min(self.cap, self.base * self.factor ** n) for n in range(self.max_attempts))
