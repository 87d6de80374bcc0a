"""Redis leases with fencing tokens, against a real redis-server of the test's own:
exclusive ownership, renewal, takeover after expiry, a stale holder's writes refused,
and self-fencing when Redis stops answering (closed before the lease can expire)."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from switchboard.actors.lease import LeaseKeeper, LeasePolicy, fence_key, lease_key

from .support.servers import RedisServer

POLICY = LeasePolicy(ttl=1.5, renew_every=0.2, close_budget=0.4, drift=0.02)


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def keepers(server):
    made: list[LeaseKeeper] = []

    def make(instance_id: str, policy: LeasePolicy = POLICY) -> LeaseKeeper:
        client = redis.Redis.from_url(server.url, socket_timeout=0.1, socket_connect_timeout=0.1)
        keeper = LeaseKeeper(client, instance_id, policy)
        made.append(keeper)
        return keeper
    yield make
    for keeper in made:
        keeper.close()
        keeper.client.close()


class Lost:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.at: float | None = None
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.at = time.monotonic()
        self.event.set()


def test_one_owner_at_a_time_and_each_new_owner_gets_a_larger_token(keepers):
    a, b = keepers("a"), keepers("b")
    first = a.lease("acme")
    assert first.acquire(Lost()) and first.held
    token = first.token
    contender = b.lease("acme")
    assert not contender.acquire(Lost()) and not contender.held
    assert "instance a holds" in contender.describe()
    first.release()
    assert contender.acquire(Lost()) and contender.token == token + 1


def test_two_leases_of_one_instance_exclude_each_other(keepers):
    a = keepers("a")
    old, new = a.lease("acme"), a.lease("acme")      # a crashed actor's, still closing; its successor's
    assert old.acquire(Lost())
    assert not new.acquire(Lost())
    old.release()
    assert new.acquire(Lost())


def test_a_held_lease_is_renewed_past_its_ttl(keepers):
    a, b = keepers("a"), keepers("b")
    lost = Lost()
    lease = a.lease("acme")
    assert lease.acquire(lost)
    time.sleep(POLICY.ttl * 2.5)          # several TTLs: only renewal keeps it
    assert lease.held and not lost.reasons
    assert not b.lease("acme").acquire(Lost())


def test_a_stale_holders_renewal_and_writes_are_refused(keepers, server):
    a, b = keepers("a"), keepers("b")
    raw = redis.Redis.from_url(server.url)
    lease_a = a.lease("acme")
    lost_a = Lost()
    assert lease_a.acquire(lost_a)
    a.close()                                     # A freezes: nobody renews its lease
    raw.pexpire(lease_key("acme"), 50)            # ... until it expires on the server
    time.sleep(0.1)
    lease_b = b.lease("acme")
    assert lease_b.acquire(Lost())
    assert lease_b.token == lease_a.token + 1
    target = "switchboard:record:{acme}"
    fenced = b.scripts.fenced_hset
    assert fenced(keys=[lease_key("acme"), fence_key("acme"), target],
                  args=[lease_b.owner, lease_b.token, 1, "desired", "running"]) == 1
    assert fenced(keys=[lease_key("acme"), fence_key("acme"), target],
                  args=[lease_a.owner, lease_a.token, 1, "desired", "stopped"]) == 0
    assert raw.hget(target, "desired") == b"running"
    # The old holder's renew script finds another owner: refused, and the lease is given up.
    assert a.scripts.renew(keys=[lease_key("acme")], args=[lease_a.owner, lease_a.token, 1000]) == 0
    assert a.scripts.release(keys=[lease_key("acme")], args=[lease_a.owner, lease_a.token]) == 0
    assert lease_b.held and raw.hget(lease_key("acme"), "owner").decode() == lease_b.owner


def test_a_keeper_that_finds_its_lease_taken_tells_the_owner(keepers, server):
    a, b = keepers("a"), keepers("b")
    raw = redis.Redis.from_url(server.url)
    lost = Lost()
    lease_a = a.lease("acme")
    assert lease_a.acquire(lost)
    raw.delete(lease_key("acme"))                 # expired behind its back (e.g. a Redis failover)
    assert b.lease("acme").acquire(Lost())
    assert lost.event.wait(POLICY.renew_every * 5)
    assert "another instance" in lost.reasons[0] and not lease_a.held


def test_redis_unreachable_gives_the_lease_up_before_it_can_expire(keepers, server):
    a = keepers("a")
    raw = redis.Redis.from_url(server.url)
    lost = Lost()
    lease = a.lease("acme")
    assert lease.acquire(lost)
    time.sleep(POLICY.renew_every * 2)            # renewed at least once
    server.pause()
    paused_at = time.monotonic()
    try:
        assert lost.event.wait(POLICY.ttl * 2), "the lease was never given up"
        assert not lease.held
        # The last renew was sent before the pause, so on the server the lease lives at
        # least until paused_at + ttl - renew_every: we gave up with the close budget to spare.
        assert lost.at - paused_at <= POLICY.ttl - POLICY.close_budget + 0.15
        assert "could not be renewed in time" in lost.reasons[0]
    finally:
        server.resume()
    # The lease was not released (the connection may still be closing); it expires by itself.
    deadline = time.monotonic() + POLICY.ttl * 2
    while raw.exists(lease_key("acme")):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_acquire_while_redis_is_unreachable_says_so_and_holds_nothing(keepers, server):
    a = keepers("a")
    server.pause()
    try:
        lease = a.lease("acme")
        started = time.monotonic()
        assert not lease.acquire(Lost())
        assert time.monotonic() - started < 1.0
        assert "Redis is unreachable" in lease.describe() and not lease.held
    finally:
        server.resume()


def test_a_policy_without_room_to_renew_and_close_is_refused():
    with pytest.raises(ValueError):
        LeasePolicy(ttl=2.0, renew_every=1.0, close_budget=1.0)
