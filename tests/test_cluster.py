"""Several instances sharing companies through Redis: a join spreads them gently, a drain
moves them away, an instance cut off from Redis closes its connections before its
leases expire and the others take its companies over within the lease TTL; never two
live connections for one company."""
from __future__ import annotations

import time

import pytest
import redis

from switchboard.supervision.shared import record_key

from .support.cluster import LEASE, Instances
from .support.servers import RedisServer

COMPANIES = [f"co{i}" for i in range(12)]


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def instances(server, tmp_path):
    made = Instances(server.url, tmp_path / "shared")
    yield made
    made.close()


def link_all(instances: Instances, board, companies: list[str]) -> None:
    for company_id in companies:
        board.session(company_id).start().get(timeout=5)
    for i, company_id in enumerate(companies):
        instances.wait(lambda: instances.status(company_id)[1].get("status") == "qr", 5, f"{company_id} qr")
        instances.network.scan(company_id, f"7999000{i:04d}")
    instances.wait(lambda: len(instances.connected_on()) == len(companies), 10, "all connected")


def test_a_joining_instance_takes_its_share_gently_and_nothing_connects_twice(instances):
    a = instances.start("a")
    link_all(instances, a, COMPANIES)
    assert set(instances.connected_on().values()) == {"a"}
    instances.start("b")
    check = lambda: instances.never_two_links(COMPANIES)     # noqa: E731
    instances.wait(lambda: "b" in set(instances.connected_on().values())
                   and len(instances.connected_on()) == len(COMPANIES), 20, "spread", check)
    where = instances.connected_on()
    assert 2 <= list(where.values()).count("b") <= 10
    assert [c for _t, c, why in a.cluster.moves if why == "hand_over"] == sorted(
        c for c, name in where.items() if name == "b")          # only b's share moved
    instances.never_two_links(COMPANIES)
    # The shared record says who is running, whoever owns it now.
    client = redis.Redis.from_url(instances.redis_url)
    assert all(client.hget(record_key(c), "desired") == b"running" for c in COMPANIES)


def test_hand_overs_are_bounded_per_round(instances):
    a = instances.start("a", max_moves=1)
    link_all(instances, a, COMPANIES)
    instances.start("b")
    instances.wait(lambda: list(instances.connected_on().values()).count("b") >= 2, 20, "two moved")
    rounds = {}
    for t, _company, why in a.cluster.moves:
        if why == "hand_over":
            rounds[t] = rounds.get(t, 0) + 1
    assert rounds and max(rounds.values()) == 1


def test_drain_moves_every_company_away(instances):
    a = instances.start("a")
    link_all(instances, a, COMPANIES)
    b = instances.start("b")
    b.cluster.drain("a")                               # from any instance
    check = lambda: instances.never_two_links(COMPANIES)     # noqa: E731
    instances.wait(lambda: set(instances.connected_on().values()) == {"b"}
                   and len(instances.connected_on()) == len(COMPANIES), 20, "drained", check)
    assert not a.company_ids() and not a.cluster.keeper.held()
    a.cluster.drain("a", False)
    instances.wait(lambda: "a" in set(instances.connected_on().values()), 20, "a gets companies again", check)


def test_an_instance_cut_off_from_redis_closes_in_time_and_is_taken_over(instances, server):
    a = instances.start("a")
    link_all(instances, a, COMPANIES)
    b = instances.start("b")
    check = lambda: instances.never_two_links(COMPANIES)     # noqa: E731
    instances.wait(lambda: "b" in set(instances.connected_on().values())
                   and len(instances.connected_on()) == len(COMPANIES), 20, "spread", check)
    on_a = [c for c, name in instances.connected_on().items() if name == "a"]
    assert on_a
    instances.partition("a")
    cut = time.monotonic()
    # a keeps its companies while its leases allow, then closes them before they expire.
    instances.wait(lambda: not any(instances.network.live_count(c) for c in on_a), LEASE.ttl * 2,
                   "a closed its links", check)
    assert time.monotonic() - cut < LEASE.ttl
    took = instances.wait(lambda: set(instances.connected_on().values()) == {"b"}
                          and len(instances.connected_on()) == len(COMPANIES), LEASE.ttl + 5,
                          "b took over", check)
    assert time.monotonic() - cut < LEASE.ttl + 5, took
    instances.heal("a", server.port)
    # a comes back: it sees b's leases and stops its own waiting actors (or gets some back, once).
    instances.wait(lambda: len(instances.connected_on()) == len(COMPANIES) and
                   all(c in b.company_ids() or c in a.company_ids() for c in COMPANIES), 20, "settled", check)
    time.sleep(1.0)
    instances.never_two_links(COMPANIES)
    assert len(instances.connected_on()) == len(COMPANIES)


def test_redis_unreachable_instances_keep_their_companies_while_leases_allow_then_close_then_resume(
        instances, server):
    a = instances.start("a")
    link_all(instances, a, COMPANIES)
    instances.start("b")
    check = lambda: instances.never_two_links(COMPANIES)     # noqa: E731
    instances.wait(lambda: "b" in set(instances.connected_on().values())
                   and len(instances.connected_on()) == len(COMPANIES), 20, "spread", check)
    server.pause()
    paused = time.monotonic()
    try:
        time.sleep(LEASE.renew_every * 2)
        assert len(instances.connected_on()) == len(COMPANIES)      # a short outage changes nothing
        instances.wait(lambda: not any(instances.network.live_count(c) for c in COMPANIES), LEASE.ttl * 2,
                       "every link closed", check)
        assert time.monotonic() - paused < LEASE.ttl                # closed before any lease could expire
    finally:
        server.resume()
    instances.wait(lambda: len(instances.connected_on()) == len(COMPANIES), 30, "all back", check)
    instances.never_two_links(COMPANIES)


def test_a_stale_stopped_actor_is_replaced_when_the_company_was_started_elsewhere(instances):
    from switchboard.supervision.placement import owner_for
    a = instances.start("a")
    b = instances.start("b")
    instances.wait(lambda: len(a.cluster.members) == 2 and len(b.cluster.members) == 2, 5, "both members")
    company = next(c for c in (f"x{i}" for i in range(100)) if owner_for(c, list(b.cluster.members.values())).id == "b")
    b.session(company)                              # b runs a stopped actor for it (it read desired: none) ...
    a.session(company).start().get(timeout=5)       # ... when a starts it, then hands it over to b
    instances.wait(lambda: company in b.directory.refs and company not in a.directory.refs
                   and instances.status(company)[1].get("status") == "qr", 10, "started on b")
