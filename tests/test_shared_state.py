"""Shared state for takeover: what a new owner needs is in Redis, and a stale owner
cannot change it. A send accepted by an instance that is then cut off is sent by the
instance that takes the company over, once; an idempotency key used before the takeover
is recognised after it; the cut-off instance can neither accept sends nor rewrite the
record once it has lost the lease."""
from __future__ import annotations

import pytest
import redis

from switchboard.actors.errors import OutboxUnavailable
from switchboard.actors.lease import LeaseKeeper, fence_key, lease_key
from switchboard.supervision.shared import SharedJournal, outbox_key, record_key

from .support.cluster import LEASE, Instances
from .support.servers import RedisServer

PHONE = "79001234567"


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


def link(instances: Instances, board, company_id: str) -> None:
    board.session(company_id).start().get(timeout=5)
    instances.wait(lambda: instances.status(company_id)[1].get("status") == "qr", 5, "qr")
    instances.network.scan(company_id, "79990001122")
    instances.wait(lambda: instances.connected_on().get(company_id), 5, "connected")


def test_a_send_accepted_before_a_takeover_is_sent_once_by_the_new_owner(instances, server):
    a = instances.start("a")
    link(instances, a, "acme")
    instances.network.fault("acme", "refuse", 3.0)              # WhatsApp unreachable for a while
    instances.wait(lambda: instances.status("acme")[1].get("status") == "reconnecting", 5, "reconnecting")
    receipt = a.session("acme").send(PHONE, "accepted on a", "key-1").get(timeout=5)
    client = redis.Redis.from_url(server.url)
    assert client.llen(outbox_key("acme")) == 1                   # durable where b can read it
    b = instances.start("b")
    b.cluster.drain("b")                                          # b takes nothing yet ...
    instances.partition("a")                                      # ... then a is cut off
    b.cluster.drain("b", False)
    instances.wait(lambda: "acme" in b.directory.refs, LEASE.ttl + 5, "b took acme over")
    instances.wait(lambda: [m["text"] for m in instances.network.messages(PHONE)] == ["accepted on a"], 10,
                   "sent by b")
    # The same key on the new owner is the same send: not sent again.
    again = b.session("acme", create=False).send(PHONE, "accepted on a", "key-1").get(timeout=5)
    assert again.id == receipt.id
    instances.wait(lambda: instances.connected_on().get("acme") == "b", 10, "connected on b")
    b.session("acme", create=False).send(PHONE, "after", None).get(timeout=5)
    instances.wait(lambda: [m["text"] for m in instances.network.messages(PHONE)] == ["accepted on a", "after"],
                   10, "second send")
    assert instances.network.max_seen("acme") == 1


def test_a_stale_owner_can_neither_accept_sends_nor_rewrite_shared_state(server):
    client = redis.Redis.from_url(server.url, socket_timeout=0.5)
    a, b = LeaseKeeper(client, "a", LEASE), LeaseKeeper(client, "b", LEASE)
    try:
        old = a.lease("acme")
        assert old.acquire(lambda _r: None)
        journal = SharedJournal(a.scripts, "acme", old)
        list(journal.read())
        journal.append({"op": "add", "id": "1"})
        a.close()                                                 # a freezes ...
        client.delete(lease_key("acme"))                          # ... its lease expires
        with pytest.raises(OSError):                              # no owner: a's lease is gone, a writes nothing
            journal.append({"op": "add", "id": "2"})
        new = b.lease("acme")
        assert new.acquire(lambda _r: None)
        with pytest.raises(OSError):
            journal.rewrite([])
        assert client.llen(outbox_key("acme")) == 1
        fresh = SharedJournal(b.scripts, "acme", new)
        assert [r["id"] for r in fresh.read()] == ["1"]
        fresh.append({"op": "done", "id": "1", "messageId": "m"})
        assert client.llen(outbox_key("acme")) == 2
        assert int(client.get(fence_key("acme"))) == new.token
    finally:
        a.close()
        b.close()
        client.close()


def test_a_cut_off_owner_refuses_sends_once_its_lease_is_gone(instances):
    a = instances.start("a")
    link(instances, a, "acme")
    instances.partition("a")
    instances.wait(lambda: instances.status("acme")[1].get("status") == "reconnecting", LEASE.ttl * 2,
                   "fenced")
    with pytest.raises(OutboxUnavailable):
        a.session("acme", create=False).send(PHONE, "must not be accepted").get(timeout=5)
    assert not instances.network.messages(PHONE)


def test_the_record_of_a_running_company_is_shared(instances, server):
    a = instances.start("a")
    link(instances, a, "acme")
    client = redis.Redis.from_url(server.url)
    assert client.hget(record_key("acme"), "desired") == b"running"
    assert client.hget(record_key("acme"), "phone") == b"79990001122"
    a.session("acme", create=False).stop().get(timeout=5)
    instances.wait(lambda: client.hget(record_key("acme"), "desired") == b"stopped", 5, "stopped shared")
