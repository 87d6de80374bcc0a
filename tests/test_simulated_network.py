"""The simulated WhatsApp network on its own: it must behave like WhatsApp where it matters."""
from __future__ import annotations

import queue
import threading

import pytest

from switchboard.actors.connection import (Cause, Connected, Disconnected, IncomingMessage, LoggedOut, Paired, QrCode,
                                           QrExhausted, Receipt, Replaced, SendError, TemporaryBan)
from switchboard.actors.payload import Text
from switchboard.actors.phone import InvalidInput
from switchboard.actors.transports.simulated import SimulatedNetwork, SimulatedTransport


@pytest.fixture
def net():
    network = SimulatedNetwork(qr_first=0.2, qr_next=0.05, qr_count=3)
    yield network
    network.close()


def opened(net, company_id, tmp_path):
    events: queue.Queue = queue.Queue()
    conn = SimulatedTransport(net).connect(company_id, tmp_path / company_id, events.put)
    conn.open()
    return conn, events


def next_event(events, kind, timeout=5):
    while True:
        event = events.get(timeout=timeout)
        if isinstance(event, kind):
            return event


def linked(net, company_id, tmp_path, phone):
    conn, events = opened(net, company_id, tmp_path)
    next_event(events, QrCode)
    net.scan(company_id, phone)
    next_event(events, Connected)
    return conn, events


def test_qr_codes_rotate_with_their_lifetimes_then_run_out(net, tmp_path):
    conn, events = opened(net, "acme", tmp_path)
    codes = [events.get(timeout=5) for _ in range(3)]
    assert [type(c) for c in codes] == [QrCode] * 3
    assert [c.expires_in for c in codes] == [0.2, 0.05, 0.05]
    assert len({c.code for c in codes}) == 3
    assert isinstance(events.get(timeout=5), QrExhausted)
    assert not conn.alive()
    with pytest.raises(LookupError):
        net.scan("acme", "79990001122")


def test_scan_links_and_credentials_reconnect_without_qr(net, tmp_path):
    conn, events = opened(net, "acme", tmp_path)
    next_event(events, QrCode)
    net.scan("acme", "79990001122")
    assert next_event(events, Paired).phone == "79990001122"
    assert next_event(events, Connected).phone == "79990001122"
    conn.close()
    conn2, events2 = opened(net, "acme", tmp_path)
    assert isinstance(events2.get(timeout=5), Connected)


def test_a_second_connection_replaces_the_first(net, tmp_path):
    first, events1 = linked(net, "acme", tmp_path, "79990001122")
    second, events2 = opened(net, "acme", tmp_path)
    assert isinstance(events2.get(timeout=5), Connected)
    assert isinstance(next_event(events1, Replaced), Replaced)
    assert not first.alive() and second.alive()
    assert net.max_seen("acme") == 2          # the inspection view shows the double connection
    assert net.live_count("acme") == 1


def test_messages_between_accounts(net, tmp_path):
    a, events_a = linked(net, "a", tmp_path, "79990000001")
    b, events_b = linked(net, "b", tmp_path, "79990000002")
    message_id = a.send("79990000002@s.whatsapp.net", Text("hi b")).result(timeout=5)
    incoming = next_event(events_b, IncomingMessage)
    receipt = next_event(events_a, Receipt)
    assert (receipt.message_ids, receipt.kind) == ((message_id,), "delivered")
    assert (incoming.id, incoming.phone, incoming.text) == (message_id, "79990000001", "hi b")
    assert net.messages("79990000002") == [{"id": message_id, "from": "79990000001", "text": "hi b",
                                             "timestamp": pytest.approx(incoming.timestamp, abs=1)}]


def test_faults(net, tmp_path):
    conn, events = linked(net, "acme", tmp_path, "79990001122")
    net.fault("acme", "drop")
    dropped = next_event(events, Disconnected)
    assert dropped.retryable and dropped.cause is Cause.DROPPED
    conn, events = opened(net, "acme", tmp_path)
    next_event(events, Connected)
    net.fault("acme", "ban", seconds=30)
    assert next_event(events, TemporaryBan).expires_in == 30
    conn, events = opened(net, "acme", tmp_path)
    assert next_event(events, TemporaryBan).expires_in <= 30      # still banned
    net.fault("acme", "ban", seconds=0)
    conn, events = opened(net, "acme", tmp_path)
    next_event(events, Connected)
    net.fault("acme", "logout")
    next_event(events, LoggedOut)
    conn, events = opened(net, "acme", tmp_path)
    assert isinstance(events.get(timeout=5), LoggedOut)             # the device is gone for good


def test_refuse_and_latency(net, tmp_path):
    conn, events = linked(net, "acme", tmp_path, "79990001122")
    net.fault("acme", "refuse", seconds=30)
    lost = next_event(events, Disconnected)
    assert lost.retryable and lost.cause is Cause.UNREACHABLE
    conn, events = opened(net, "acme", tmp_path)
    refused = next_event(events, Disconnected)
    assert "refused" in refused.reason and refused.cause is Cause.UNREACHABLE
    net.fault("acme", "refuse", seconds=0)
    net.fault("acme", "latency", seconds=0.1)
    conn, events = opened(net, "acme", tmp_path)
    assert events.empty()
    next_event(events, Connected)


def test_bad_fault_requests(net):
    with pytest.raises(InvalidInput):
        net.fault("acme", "explode")
    with pytest.raises(InvalidInput):
        net.fault("acme", "drop", seconds=-1)
    with pytest.raises(LookupError):
        net.fault("acme", "logout")


def test_send_when_not_connected_fails_retryably(net, tmp_path):
    conn, events = opened(net, "acme", tmp_path)
    next_event(events, QrCode)
    with pytest.raises(SendError) as error:
        conn.send("79001234567@s.whatsapp.net", Text("x")).result(timeout=5)
    assert error.value.retryable


def test_no_event_after_close(net, tmp_path):
    conn, events = linked(net, "acme", tmp_path, "79990001122")
    closing = conn.close()
    assert closing.done() and conn.close().done()        # in-process: gone at once
    net.fault("acme", "drop")
    net.deliver_inbound("acme", "79001234567", "while closed")
    assert events.empty()


def test_offline_messages_wait_for_the_next_connection(net, tmp_path):
    conn, events = linked(net, "acme", tmp_path, "79990001122")
    conn.close()
    message_id = net.deliver_inbound("acme", "79001234567", "queued at WhatsApp")
    conn, events = opened(net, "acme", tmp_path)
    next_event(events, Connected)
    assert next_event(events, IncomingMessage).id == message_id


def test_concurrent_use_is_safe(net, tmp_path):
    conns = [linked(net, f"c{i}", tmp_path, f"7999000000{i}")[0] for i in range(4)]
    errors = []

    def hammer(i):
        try:
            for n in range(200):
                conns[i].send(f"7999000000{(i + 1) % 4}@s.whatsapp.net", Text(f"{i}-{n}")).result(timeout=5)
                net.connections()
        except Exception as exc:          # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sum(len(net.messages(f"7999000000{i}")) for i in range(4)) == 800
