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


# ---- across an outage: what was counted in memory is written back --------------------------------

from .support.redis_proc import RedisProcess   # noqa: E402


@pytest.fixture
def own_redis(tmp_path):
    server = RedisProcess(tmp_path)
    yield server
    server.stop()


def _limiter(url, now, limit=RateLimit(5, 60, 10)):
    client = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
    return client, RedisLimiter(client, "acme", limit, prefix="t", clock=lambda: now[0])


def test_a_paused_redis_gets_the_outage_sends_back_and_no_fresh_window(own_redis, caplog):
    from switchboard.actors.redis_limiter import ON_FALLBACK
    now = [1000.0]
    client, limiter = _limiter(own_redis.url, now)
    limiter.acquire("79000000001")                       # counted in Redis
    own_redis.pause()
    try:
        limiter.acquire("79000000002")                   # Redis frozen: counted in memory
        assert limiter.using_fallback and "acme" in ON_FALLBACK
        limiter.acquire("79000000003")
        assert "counting in memory" in caplog.text
    finally:
        own_redis.resume()
    now[0] += RETRY_REDIS_AFTER + 1
    limiter.acquire("79000000004")                       # Redis again: the outage is written back first
    assert not limiter.using_fallback and "acme" not in ON_FALLBACK
    assert limiter.written_back >= 2 and "wrote back" in caplog.text
    assert client.zcard("t:rl:{acme}") == 4
    limiter.acquire("79000000005")
    with pytest.raises(RateLimited) as refused:          # 5 in the window: the outage opened no new one
        limiter.acquire("79000000006")
    assert refused.value.scope == "company"
    other = RedisLimiter(client, "acme", RateLimit(5, 60, 10), prefix="t")
    with pytest.raises(RateLimited):                     # another instance sees the same window
        other.acquire("79000000007")
    client.close()


def test_redis_restarted_with_empty_data_gets_the_whole_window_back(own_redis):
    now = [1000.0]
    client, limiter = _limiter(own_redis.url, now, RateLimit(4, 60, 10))
    limiter.acquire("79000000001")
    limiter.acquire("79000000002")
    own_redis.kill()
    limiter.acquire("79000000003")                        # down: in memory
    own_redis.start()                                     # back, with nothing in it
    now[0] += RETRY_REDIS_AFTER + 1
    limiter.acquire("79000000004")
    fresh = redis.Redis.from_url(own_redis.url, socket_timeout=1)
    assert fresh.zcard("t:rl:{acme}") == 4                # the two from before, the outage's, this one
    with pytest.raises(RateLimited):
        limiter.acquire("79000000005")
    fresh.close()
    client.close()


def test_a_send_older_than_the_window_is_not_written_back(own_redis):
    now = [1000.0]
    client, limiter = _limiter(own_redis.url, now, RateLimit(5, 10, 10))
    own_redis.kill()
    limiter.acquire("79000000001")
    own_redis.start()
    now[0] += 11                                           # the window went by meanwhile
    limiter.acquire("79000000002")
    assert redis.Redis.from_url(own_redis.url).zcard("t:rl:{acme}") == 1
    client.close()
