"""The Redis Stream sink against a real redis-server: entries carry the log position, a
consumer group reads them (XREADGROUP, XACK, XAUTOCLAIM), nothing is added twice after a
crash, and a Redis outage holds up no other sink."""
from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import redis

from switchboard.supervision.delivery import Delivery
from switchboard.supervision.sinks.redis_stream import RedisStreamSink
from switchboard.supervision.sinks.webhook import WebhookConfig, WebhookSink

from .support.http import wait_until
from .support.receiver import Receiver
from .support.sessions import StateWaiter, link


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url, socket_timeout=2, decode_responses=True)
    yield c
    c.close()


def test_every_inbound_message_lands_in_the_stream_and_a_consumer_group_reads_it(board_factory, network,
                                                                                  redis_url, client):
    stream = f"test:{uuid.uuid4().hex}"
    board = board_factory(network, sinks=[RedisStreamSink.factory(redis_url, stream, maxlen=10_000)])
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    ids = [network.deliver_inbound("acme", "79001234567", f"n{n}") for n in range(60)]
    assert wait_until(lambda: sum(1 for _, f in client.xrange(stream) if f["event"] == "message") == 60, 10)
    entries = client.xrange(stream)
    seqs = [int(f["seq"]) for _, f in entries]
    assert seqs == sorted(set(seqs))                                   # in log order, once each
    messages = [f for _, f in entries if f["event"] == "message"]
    assert [json.loads(f["data"])["id"] for f in messages] == ids and {f["companyId"] for f in messages} == {"acme"}

    # the consumer-group recipe of the README
    client.xgroup_create(stream, "workers", id="0")
    first = client.xreadgroup("workers", "c1", {stream: ">"}, count=10)        # c1 reads 10 and dies
    assert len(first[0][1]) == 10
    done = []
    while True:
        batch = client.xreadgroup("workers", "c2", {stream: ">"}, count=25, block=100)
        if not batch:
            break
        for entry_id, fields in batch[0][1]:
            done.append(int(fields["seq"]))
            client.xack(stream, "workers", entry_id)
    time.sleep(0.15)
    start = "0-0"
    while True:                                                   # c2 claims the dead consumer's entries
        start, claimed, _deleted = client.xautoclaim(stream, "workers", "c2", min_idle_time=100, start_id=start)
        for entry_id, fields in claimed:
            done.append(int(fields["seq"]))
            client.xack(stream, "workers", entry_id)
        if start == "0-0":
            break
    assert sorted(done) == seqs and client.xpending(stream, "workers")["pending"] == 0
    waiter.close()


def test_nothing_is_added_twice_when_the_cursor_was_not_saved(tmp_path, redis_url, client):
    stream = f"test:{uuid.uuid4().hex}"
    d = Delivery(tmp_path / "data")
    d.add_sink(RedisStreamSink(redis.Redis.from_url(redis_url), stream))
    for n in range(10):
        d.log.append("acme", "message", {"id": f"m{n}"})
    assert wait_until(lambda: client.xlen(stream) == 10)
    d.close()
    (tmp_path / "data" / "events" / "cursors" / "redis-stream.json").write_text('{"seq": 0}')   # a crash before the save
    d = Delivery(tmp_path / "data")
    d.add_sink(RedisStreamSink(redis.Redis.from_url(redis_url), stream))
    d.log.append("acme", "message", {"id": "m10"})
    assert wait_until(lambda: client.xlen(stream) == 11)
    d.close()
    seqs = [int(f["seq"]) for _, f in client.xrange(stream)]
    assert seqs == list(range(1, 12))


def test_the_stream_is_capped(tmp_path, redis_url, client):
    stream = f"test:{uuid.uuid4().hex}"
    d = Delivery(tmp_path / "data")
    d.add_sink(RedisStreamSink(redis.Redis.from_url(redis_url), stream, maxlen=100))
    for n in range(1000):
        d.log.append("acme", "state", {"n": n})
    assert wait_until(lambda: client.xrevrange(stream, count=1) and
                      int(client.xrevrange(stream, count=1)[0][1]["seq"]) == 1000, 10)
    assert client.xlen(stream) < 400                   # approximate MAXLEN: trimmed in whole nodes
    d.close()


def test_redis_down_holds_up_no_other_sink_and_catches_up_later(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    receiver = Receiver()
    d = Delivery(tmp_path / "data")
    down = RedisStreamSink(redis.Redis(port=dead_port, socket_timeout=0.2, socket_connect_timeout=0.2), "x")
    runner = d.add_sink(down)
    d.add_sink(WebhookSink(WebhookConfig(receiver.url)))
    for n in range(20):
        d.log.append("acme", "message", {"id": f"m{n}"})
    receiver.wait_count(20)
    assert wait_until(lambda: runner.failures >= 1) and runner.cursor.seq == 0 and runner.lag == 20
    d.close()
    receiver.close()
