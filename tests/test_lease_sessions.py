"""Sessions owned by Redis leases: two gateways on one simulated WhatsApp never both
connect a company, and when Redis stops answering the owner closes its connection
before its lease can expire; once Redis is back the company connects again, once."""
from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import redis

from switchboard.actors.lease import LeaseKeeper, LeasePolicy

from .support.servers import RedisServer
from .support.sessions import FAST_BACKOFF, FAST_SETTINGS, StateWaiter, link, make_network

POLICY = LeasePolicy(ttl=1.5, renew_every=0.2, close_budget=0.4)
PATIENT = dataclasses.replace(FAST_SETTINGS, backoff=dataclasses.replace(FAST_BACKOFF, max_attempts=200))


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def pair(server, board_factory, tmp_path):
    """Two gateways, a and b, sharing one simulated WhatsApp and one data directory."""
    network = make_network()
    keepers, waiters, boards = [], [], []
    for name in ("a", "b"):
        client = redis.Redis.from_url(server.url, socket_timeout=0.1, socket_connect_timeout=0.1)
        keeper = LeaseKeeper(client, name, POLICY)
        board = board_factory(network, settings=PATIENT, data_dir=tmp_path / "shared", ownership=keeper.lease,
                              restore=False)
        keepers.append(keeper)
        boards.append(board)
        waiters.append(StateWaiter(board))
    yield network, boards, waiters
    for waiter in waiters:
        waiter.close()
    for board in boards:
        board.stop()
    for keeper in keepers:
        keeper.close()
        keeper.client.close()
    network.close()


def test_a_second_gateway_does_not_connect_a_company_the_first_owns(pair):
    network, (a, b), (wa, wb) = pair
    link(a, wa, "acme")
    b.session("acme").start().get(timeout=5)
    status = wb.until("acme", lambda s: "instance a holds" in (s.get("lastError") or ""))
    assert status["status"] == "reconnecting"
    assert network.max_seen("acme") == 1 and network.live_count("acme") == 1


def test_redis_unreachable_the_owner_closes_in_time_and_reconnects_once_redis_is_back(pair, server):
    network, (a, b), (wa, wb) = pair
    link(a, wa, "acme")
    b.session("acme").start().get(timeout=5)       # b wants it too: it must never get a second link
    closed = threading.Event()
    a.on_event(lambda e: e.data.get("state") == "reconnecting" and closed.set(), company_id="acme")
    server.pause()
    try:
        assert closed.wait(POLICY.ttl * 3)
        assert "lease could not be renewed" in wa.status("acme")["lastError"]
        assert network.live_count("acme") == 0
    finally:
        server.resume()
    # Whichever gateway retries first after the lease expires gets it; the other keeps waiting.
    wa.until("acme", lambda s: s["status"] in ("connected", "reconnecting"), timeout=10)
    deadline = time.monotonic() + 15
    while True:
        states = [w.status("acme")["status"] for w in (wa, wb)]
        if states.count("connected") == 1:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.05)
    assert network.max_seen("acme") == 1
