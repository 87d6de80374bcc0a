"""Send limits shared through a real (throwaway) redis-server, and the fallback when it is down."""
from __future__ import annotations

import socket
import uuid

import pytest
import redis

from switchboard.actors.ratelimit import RateLimit, RateLimited
from switchboard.actors.redis_limiter import RETRY_REDIS_AFTER, RedisLimiter
from switchboard.actors.context import SessionSettings

from .support.sessions import FAST_BACKOFF, StateWaiter, link


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, socket_timeout=1)
    yield c
    c.close()


def test_two_instances_share_one_window(client):
    prefix = uuid.uuid4().hex
    limit = RateLimit(max_messages=3, window=60, per_recipient_max=10)
    a = RedisLimiter(client, "acme", limit, prefix=prefix)
    b = RedisLimiter(client, "acme", limit, prefix=prefix)
    a.acquire("79000000001")
    b.acquire("79000000002")
    a.acquire("79000000003")
    with pytest.raises(RateLimited) as refused:
        b.acquire("79000000004")
    assert refused.value.scope == "company" and 59_000 <= refused.value.retry_after_ms <= 60_000
    RedisLimiter(client, "other", limit, prefix=prefix).acquire("79000000001")   # per company


def test_per_recipient_limit_in_redis(client):
    limit = RateLimit(max_messages=100, window=60, per_recipient_max=2)
    limiter = RedisLimiter(client, "acme", limit, prefix=uuid.uuid4().hex)
    limiter.acquire("79000000001")
    limiter.acquire("79000000001")
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("79000000001")
    assert refused.value.scope == "recipient"
    limiter.acquire("79000000002")


def test_falls_back_to_memory_when_redis_is_down_and_returns():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    client = redis.Redis(port=dead_port, socket_timeout=0.2, socket_connect_timeout=0.2)
    now = [100.0]
    limiter = RedisLimiter(client, "acme", RateLimit(2, 60, 10), clock=lambda: now[0])
    limiter.acquire("79000000001")                 # Redis down: counted in memory
    assert limiter.using_fallback
    limiter.acquire("79000000002")
    with pytest.raises(RateLimited):
        limiter.acquire("79000000003")             # the in-memory window still limits
    now[0] += RETRY_REDIS_AFTER + 1
    assert not limiter.using_fallback              # tries Redis again after a while
    client.close()


def test_board_with_redis_enforces_the_limit(board_factory, network, redis_url):
    settings = SessionSettings(backoff=FAST_BACKOFF, rate_limit=RateLimit(2, 60, 10))
    board = board_factory(network, settings=settings, redis_url=redis_url)
    waiter = StateWaiter(board)
    company = f"acme-{uuid.uuid4().hex[:8]}"
    link(board, waiter, company)
    session = board.session(company)
    session.send("79001234567", "1").get(timeout=5)
    session.send("79001234568", "2").get(timeout=5)
    with pytest.raises(RateLimited):
        session.send("79001234569", "3").get(timeout=5)
    assert board.redis.exists(f"switchboard:rl:{{{company}}}") == 1
    waiter.close()
