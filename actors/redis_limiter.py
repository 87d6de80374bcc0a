"""The send limits kept in Redis, so that every gateway instance counts against the same
window; with a fallback to this process's in-memory window while Redis is unreachable.

An outage never opens a fresh window: every send this limiter allowed within the window
(by Redis, or in memory during the outage) is kept here with its member id and age, and
written back to Redis when it answers again (ZADD of the same members at their original
times, on the server clock), before the next decision. So a paused Redis that resumes
counts the outage's sends, and a Redis restarted with empty data gets the whole window
back. While on the fallback the limiter logs it (when it starts, and when it ends, with
the sends written back) and `switchboard_rate_limit_fallback` counts the companies on it.
"""
from __future__ import annotations

import collections
import logging
import time
import uuid
from typing import Callable

import redis

from .ratelimit import RateLimit, RateLimited, SlidingWindowLimiter

log = logging.getLogger(__name__)

# One atomic decision on the server clock: prune both logs, check both limits, record.
# KEYS: company log, recipient log. ARGV: max, window_ms, per_recipient_max, member.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now, 'company'}
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now, 'recipient'}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return {1, 0, ''}
"""

# The sends of the outage (and the window before it), at their ages: ARGV = window_ms, then
# (member, age_ms, recipient key) triples. The same member again is the same send (ZADD).
_WRITE_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV, 3 do
  local at = now - tonumber(ARGV[i + 1])
  if at > now - window then
    redis.call('ZADD', KEYS[1], at, ARGV[i])
    redis.call('ZADD', ARGV[i + 2], at, ARGV[i])
    redis.call('PEXPIRE', ARGV[i + 2], window)
    n = n + 1
  end
end
if n > 0 then redis.call('PEXPIRE', KEYS[1], window) end
return n
"""

RETRY_REDIS_AFTER = 5.0     # seconds on the fallback before Redis is tried again
STILL_DOWN_EVERY = 60.0     # while on the fallback, the warning is repeated this often
ON_FALLBACK: set[str] = set()     # companies whose limiter counts in memory now (the metric)


class RedisLimiter:
    """Same interface as SlidingWindowLimiter. Owned by one actor."""

    def __init__(self, client: redis.Redis, company_id: str, limit: RateLimit, *, prefix: str = "switchboard",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._client = client
        self._script = client.register_script(_SLIDING_WINDOW)
        self._write_back_script = client.register_script(_WRITE_BACK)
        self.company_id = company_id
        self._key = f"{prefix}:rl:{{{company_id}}}"          # hash tag: both keys in one cluster slot
        self._fallback = SlidingWindowLimiter(limit, clock)
        self._clock = clock
        self._down_until = 0.0
        self._owed = False                 # sends counted in memory that Redis has not seen yet
        self._window: collections.deque[tuple[float, str, str]] = collections.deque()   # (at, recipient, member)
        self.written_back = 0
        self._warned_at = float("-inf")

    @property
    def using_fallback(self) -> bool:
        return self._clock() < self._down_until

    def acquire(self, recipient: str) -> None:
        if self.using_fallback:
            self._acquire_in_memory(recipient)
            return
        member = uuid.uuid4().hex
        try:
            if self._owed:
                self._write_back()
            allowed, retry_ms, scope = self._script(
                keys=[self._key, f"{self._key}:to:{recipient}"],
                args=[self.limit.max_messages, int(self.limit.window * 1000), self.limit.per_recipient_max, member])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            now = self._clock()
            if not self._owed or now - self._warned_at >= STILL_DOWN_EVERY:
                self._warned_at = now
                log.warning("Redis unreachable for the rate limit of %s (%s); counting in memory (%d send(s) of "
                            "the window so far), retrying Redis every %g s", self.company_id, exc, len(self._window),
                            RETRY_REDIS_AFTER)
            self._down_until = self._clock() + RETRY_REDIS_AFTER
            self._owed = True
            ON_FALLBACK.add(self.company_id)
            # A timed-out script may still run once Redis wakes: the same member keeps it one send.
            self._acquire_in_memory(recipient, member)
            return
        if not allowed:
            raise RateLimited(max(1, int(retry_ms)), scope.decode() if isinstance(scope, bytes) else scope)
        self._fallback.acquire_unchecked(recipient)   # keep the fallback warm for a Redis outage
        self._keep(recipient, member)

    def _acquire_in_memory(self, recipient: str, member: str | None = None) -> None:
        self._fallback.acquire(recipient)             # raises RateLimited, recording nothing
        self._keep(recipient, member or uuid.uuid4().hex)

    def _keep(self, recipient: str, member: str) -> None:
        now = self._clock()
        self._window.append((now, recipient, member))
        while self._window and self._window[0][0] <= now - self.limit.window:
            self._window.popleft()

    def _write_back(self) -> None:
        """Redis answers again: give it every send of the window it may have missed."""
        now = self._clock()
        args: list[object] = [int(self.limit.window * 1000)]
        for at, recipient, member in self._window:
            if at > now - self.limit.window:
                args += [member, int((now - at) * 1000), f"{self._key}:to:{recipient}"]
        written = self._write_back_script(keys=[self._key], args=args) if len(args) > 1 else 0
        self._owed = False
        self.written_back += int(written)
        ON_FALLBACK.discard(self.company_id)
        log.warning("Redis answers again for the rate limit of %s; wrote back the %d send(s) of the window",
                    self.company_id, int(written))
