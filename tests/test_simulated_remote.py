"""The remote simulated transport against the Connection contract (actors/connection.py):
a link is a socket; close() resolves once it is gone; nothing is emitted after; a dead
service is a Disconnected; what the client never acknowledged is held again; the
service's memory survives its own restart."""
from __future__ import annotations

import json
import queue
import socket
import time

import pytest

from switchboard.actors.connection import (Cause, Connected, Disconnected, IncomingMessage, LoggedOut, QrCode,
                                           Replaced, SendError)
from switchboard.actors.payload import Text
from switchboard.actors.transports.simulated import SimulatedNetwork
from switchboard.actors.transports.simulated.remote import RemoteTransport
from switchboard.actors.transports.simulated.service import LinkServer

from tests.test_simulated_faults import JID, PHONE, next_event, no_event

pytestmark = pytest.mark.timeout(60)


class Service:
    def __init__(self, data_dir=None) -> None:
        self.net = SimulatedNetwork(qr_first=2.0, qr_next=1.0, qr_count=3, ack_deadline=5.0, data_dir=data_dir)
        self.links = LinkServer(self.net).start()

    def stop(self) -> None:
        self.links.stop()
        self.net.close()


@pytest.fixture
def service():
    s = Service()
    yield s
    s.stop()


@pytest.fixture
def transports():
    made: list[RemoteTransport] = []

    def make(service: Service) -> RemoteTransport:
        transport = RemoteTransport("http://127.0.0.1:9")
        transport._address = ("127.0.0.1", service.links.port)
        made.append(transport)
        return transport
    yield make
    for transport in made:
        transport.close()


def opened(transport, tmp_path, company_id="acme"):
    events: queue.Queue = queue.Queue()

    def take(event):
        # what the gateway's Inbound does once a message is in its event log: acknowledge it
        if getattr(event, "ack", None) is not None:
            event.ack()
        events.put(event)
    conn = transport.connect(company_id, tmp_path / company_id, take)
    conn.open()
    return conn, events


def linked(service, transport, tmp_path, company_id="acme", phone=PHONE):
    conn, events = opened(transport, tmp_path, company_id)
    next_event(events, QrCode)
    service.net.scan(company_id, phone)
    next_event(events, Connected)
    return conn, events


def test_close_resolves_once_the_socket_is_gone_and_nothing_follows(service, transports, tmp_path):
    conn, events = linked(service, transports(service), tmp_path)
    assert service.net.live_count("acme") == 1
    closing = conn.close()
    assert not conn.alive() and conn.close() is closing
    closing.result(timeout=5)
    assert service.net.live_count("acme") == 0
    service.net.deliver_inbound("acme", "79001234567", "after close")
    service.net.fault("acme", "drop")
    assert no_event(events, object, 0.2)
    with pytest.raises(SendError) as failed:
        conn.send(JID, Text("x")).result(timeout=5)
    assert failed.value.retryable
    conn, events = opened(transports(service), tmp_path)              # the next link gets what was held
    next_event(events, Connected)
    assert next_event(events, IncomingMessage).text == "after close"


def test_inbound_racing_a_close_is_delivered_once_on_one_link_or_the_next(service, transports, tmp_path):
    transport = transports(service)
    conn, events = linked(service, transport, tmp_path)
    sent = [service.net.deliver_inbound("acme", "79001234567", f"m{i}") for i in range(20)]
    conn.close().result(timeout=5)
    got = []
    while not events.empty():
        if isinstance(event := events.get(), IncomingMessage):
            got.append(event.id)
    conn, events = opened(transport, tmp_path)
    next_event(events, Connected)
    while len(got) < len(sent):
        got.append(next_event(events, IncomingMessage).id)
    assert got == sent and no_event(events, IncomingMessage, 0.2)    # in order, none lost, none twice


def test_a_message_the_client_never_acknowledged_is_held_again(service, transports, tmp_path):
    transport = transports(service)
    conn, events = linked(service, transport, tmp_path)
    conn.close().result(timeout=5)
    credentials = json.loads((tmp_path / "acme" / "simulated-device.json").read_text())
    # a client that dies between receiving a message and acknowledging it
    raw = socket.create_connection(("127.0.0.1", service.links.port), timeout=5)
    raw.sendall(json.dumps({"op": "hello", "version": 1, "company": "acme", "credentials": credentials}).encode()
                + b"\n")
    lines = raw.makefile("rb")
    assert json.loads(lines.readline())["type"] == "Connected"
    message_id = service.net.deliver_inbound("acme", "79001234567", "unacknowledged")
    assert json.loads(lines.readline())["fields"]["id"] == message_id
    raw.close()
    lines.close()
    deadline = time.monotonic() + 5
    while service.net.live_count("acme") and time.monotonic() < deadline:
        time.sleep(0.01)
    conn, events = opened(transport, tmp_path)
    next_event(events, Connected)
    assert next_event(events, IncomingMessage).id == message_id


def test_a_dead_service_is_a_drop_and_an_unanswered_send_is_unconfirmed(service, transports, tmp_path):
    conn, events = linked(service, transports(service), tmp_path)
    service.net.fault("acme", "slow", seconds=30)
    waiting = conn.send(JID, Text("in flight"))
    service.links.stop()
    assert service.net.live_count("acme") == 0                      # the service ended its side too
    dropped = next_event(events, Disconnected)
    assert dropped.retryable and dropped.cause is Cause.DROPPED
    with pytest.raises(SendError) as failed:
        waiting.result(timeout=5)
    assert failed.value.unconfirmed
    assert not conn.alive() and conn.close().result(timeout=5) is None
    assert no_event(events, Disconnected, 0.2)                        # said once


def test_an_unreachable_service_is_unreachable(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                   # nothing listens there once closed
    transport = RemoteTransport("http://127.0.0.1:9")
    transport._address = ("127.0.0.1", port)
    try:
        conn, events = opened(transport, tmp_path)
        failed = next_event(events, Disconnected)
        assert failed.cause is Cause.UNREACHABLE and failed.retryable and "cannot reach" in failed.reason
        assert not conn.alive() and conn.close().result(timeout=5) is None
        assert transport._address is None                           # asked again next time
    finally:
        transport.close()


def test_own_logout_ends_the_link_without_an_event_and_unlinks_the_device(service, transports, tmp_path):
    transport = transports(service)
    conn, events = linked(service, transport, tmp_path)
    assert conn.logout().result(timeout=5).told_whatsapp
    conn.close().result(timeout=5)
    assert no_event(events, Disconnected, 0.2)
    assert service.net.live_count("acme") == 0
    conn, events = opened(transport, tmp_path)
    assert isinstance(next_event(events, LoggedOut), LoggedOut)


def test_a_second_gateway_on_the_same_credentials_replaces_the_first_and_is_recorded(service, transports,
                                                                                  tmp_path):
    first, events1 = linked(service, transports(service), tmp_path)
    second, events2 = opened(transports(service), tmp_path)           # another gateway, same directory
    next_event(events2, Connected)
    assert isinstance(next_event(events1, Replaced), Replaced)
    assert service.net.max_seen("acme") == 2                           # the double is on record
    assert service.net.connections()["accounts"][PHONE]["maxSeen"] == 2
    assert service.net.live_count("acme") == 1


def test_a_bad_hello_is_refused_and_the_service_goes_on(service, transports, tmp_path):
    for hello in (b"not json\n", b'{"op": "hello", "version": 1, "company": "../x"}\n', b'{"op": "send"}\n'):
        raw = socket.create_connection(("127.0.0.1", service.links.port), timeout=5)
        raw.sendall(hello)
        answer = raw.makefile("rb").readline()
        assert json.loads(answer)["op"] == "error"
        assert raw.recv(10) == b""                                    # and closed
        raw.close()
    linked(service, transports(service), tmp_path)


def test_the_service_remembers_devices_and_held_messages_across_its_restart(tmp_path, transports):
    data = tmp_path / "sim"
    service = Service(data)
    transport = transports(service)
    conn, events = linked(service, transport, tmp_path)
    conn.close().result(timeout=5)
    service.net.deliver_inbound("acme", "79001234567", "held across the restart")
    service.stop()
    service = Service(data)
    try:
        transport._address = ("127.0.0.1", service.links.port)
        conn, events = opened(transport, tmp_path)
        assert next_event(events, Connected).phone == PHONE           # no QR
        assert next_event(events, IncomingMessage).text == "held across the restart"
        conn.close().result(timeout=5)
        conn, events = opened(transport, tmp_path)
        next_event(events, Connected)
        assert no_event(events, IncomingMessage, 0.2)                  # acknowledged: not held any more
    finally:
        service.stop()


def test_a_message_the_client_did_not_acknowledge_comes_again_on_the_next_link(service, transports, tmp_path):
    """The gateway acknowledges a message only once it is in its event log: one that was
    emitted but never acknowledged (a gateway killed in between) is delivered again."""
    transport = transports(service)
    events: queue.Queue = queue.Queue()
    conn = transport.connect("acme", tmp_path / "acme", events.put)         # takes, never acknowledges
    conn.open()
    next_event(events, QrCode)
    service.net.scan("acme", PHONE)
    next_event(events, Connected)
    sent = service.net.deliver_inbound("acme", "79001234567", "not acknowledged")
    assert next_event(events, IncomingMessage).id == sent
    conn.close().result(5)
    again, events2 = opened(transport, tmp_path)
    assert next_event(events2, Connected)
    assert next_event(events2, IncomingMessage).id == sent
    again.close().result(5)


def test_closed_while_connecting_never_links(service, transports, tmp_path):
    transport = transports(service)
    for _ in range(20):
        conn, events = opened(transport, tmp_path)
        conn.close().result(timeout=5)
        assert not conn.alive()
    deadline = time.monotonic() + 5
    while service.net.live_count("acme") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.net.live_count("acme") == 0 and service.net.max_seen("acme") <= 1


def test_a_closed_transport_fails_new_links_at_once(tmp_path):
    transport = RemoteTransport("http://127.0.0.1:9")
    transport.close()
    conn, events = opened(transport, tmp_path)
    assert next_event(events, Disconnected).cause is Cause.OPEN_FAILED
    assert conn.close().result(timeout=1) is None
