"""The send limits kept in Redis, so that every gateway instance counts against the same
window; with a fallback to this process's in-memory window while Redis is unreachable."""
from __future__ import annotations

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

RETRY_REDIS_AFTER = 5.0     # seconds on the fallback before Redis is tried again


class RedisLimiter:
    """Same interface as SlidingWindowLimiter. Owned by one actor."""

    def __init__(self, client: redis.Redis, company_id: str, limit: RateLimit, *, prefix: str = "switchboard",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._client = client
        self._script = client.register_script(_SLIDING_WINDOW)
        self._key = f"{prefix}:rl:{{{company_id}}}"          # hash tag: both keys in one cluster slot
        self._fallback = SlidingWindowLimiter(limit, clock)
        self._clock = clock
        self._down_until = 0.0

    @property
    def using_fallback(self) -> bool:
        return self._clock() < self._down_until

    def acquire(self, recipient: str) -> None:
        if self.using_fallback:
            self._fallback.acquire(recipient)
            return
        try:
            allowed, retry_ms, scope = self._script(
                keys=[self._key, f"{self._key}:to:{recipient}"],
                args=[self.limit.max_messages, int(self.limit.window * 1000), self.limit.per_recipient_max,
                      uuid.uuid4().hex])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("Redis unreachable for the rate limit (%s); counting in memory for %g s",
                        exc, RETRY_REDIS_AFTER)
            self._down_until = self._clock() + RETRY_REDIS_AFTER
            self._fallback.acquire(recipient)
            return
        if not allowed:
            raise RateLimited(max(1, int(retry_ms)), scope.decode() if isinstance(scope, bytes) else scope)
        self._fallback.acquire_unchecked(recipient)   # keep the fallback warm for a Redis outage
