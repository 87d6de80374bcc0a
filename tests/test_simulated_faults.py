"""Every fault the simulated WhatsApp injects, seen at the transport: the events a
Connection emits and what its futures do. Each test runs twice: on an in-process link
and on a link over a real socket to the service's link server (the same network
behind both), so the remote transport must emit exactly what the in-process one does."""
from __future__ import annotations

import queue
import re
import time

import pytest

from switchboard.actors.connection import (Cause, ConnectFailure, Connected, Disconnected, IncomingMessage, Interrupted, LoggedOut,
                                           PairingCode, Paired, QrCode, QrExhausted, Receipt, Replaced, SendError,
                                           TemporaryBan)
from switchboard.actors.payload import Text
from switchboard.actors.phone import InvalidInput
from switchboard.actors.transports.simulated import LOGIN_OUTCOMES, SimulatedNetwork, SimulatedTransport
from switchboard.actors.transports.simulated.codes import PAIR_ALPHABET, QR_PREFIX
from switchboard.actors.transports.simulated.remote import RemoteTransport
from switchboard.actors.transports.simulated.service import LinkServer

pytestmark = pytest.mark.timeout(60)
PHONE = "79990001122"
JID = "79001234567@s.whatsapp.net"


class World:
    """A network, a transport onto it, and helpers that wait on events (never sleep)."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.net = SimulatedNetwork(qr_first=2.0, qr_next=1.0, qr_count=3, ack_deadline=0.6)
        self.tmp_path = tmp_path
        self.links = None
        if kind == "remote":
            self.links = LinkServer(self.net).start()
            self.transport = RemoteTransport("http://127.0.0.1:9")      # the address is given below, not asked
            self.transport._address = ("127.0.0.1", self.links.port)
        else:
            self.transport = SimulatedTransport(self.net)

    def open(self, company_id: str = "acme"):
        events: queue.Queue = queue.Queue()
        conn = self.transport.connect(company_id, self.tmp_path / company_id, events.put)
        conn.open()
        return conn, events

    def linked(self, company_id: str = "acme", phone: str = PHONE):
        conn, events = self.open(company_id)
        next_event(events, QrCode)
        self.net.scan(company_id, phone)
        next_event(events, Connected)
        return conn, events

    def close(self) -> None:
        if self.links is not None:
            self.transport.close()
            self.links.stop()
        self.net.close()


@pytest.fixture(params=["in-process", "remote"])
def world(request, tmp_path):
    w = World(request.param, tmp_path)
    yield w
    w.close()


def next_event(events: queue.Queue, kind, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(event, kind):
            return event


def no_event(events: queue.Queue, kind, within: float) -> bool:
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            if isinstance(events.get(timeout=left), kind):
                return False
        except queue.Empty:
            return True
    return True


def error_of(future, timeout: float = 5.0) -> SendError:
    with pytest.raises(SendError) as failed:
        future.result(timeout=timeout)
    return failed.value


# ---- codes -------------------------------------------------------------------------------------

def test_qr_codes_and_pairing_codes_are_shaped_like_whatsapps(world):
    conn, events = world.open()
    qr = next_event(events, QrCode)
    ref, noise, identity, adv, client = qr.code[len(QR_PREFIX):].split(",")
    assert qr.code.startswith(QR_PREFIX) and ref.startswith("2@") and client == "1"
    assert all(len(key) == 44 and key.endswith("=") for key in (noise, identity, adv))   # 32 bytes, base64
    code = conn.pair_phone("79990001122").result(timeout=5)
    assert re.fullmatch(f"[{PAIR_ALPHABET}]{{4}}-[{PAIR_ALPHABET}]{{4}}", code)
    # usable while the QR session lives: 2 + 2 x 1 s from the first code, not from the request
    assert isinstance(code, PairingCode) and 0 < code.expires_in <= world.net.qr_window == 4.0
    assert world.net.scan("acme")["phone"] == "79990001122"          # the phone entered the code


# ---- the faults that were there before ----------------------------------------------------------

def test_drop_ban_logout_replace_refuse_latency(world):
    conn, events = world.linked()
    world.net.fault("acme", "drop")
    assert next_event(events, Disconnected).cause is Cause.DROPPED
    conn, events = world.open()
    next_event(events, Connected)                                  # the stored credentials still work
    world.net.fault("acme", "ban", seconds=30)
    assert next_event(events, TemporaryBan).expires_in == 30
    conn, events = world.open()
    assert next_event(events, TemporaryBan).expires_in <= 30
    world.net.fault("acme", "ban", seconds=0)
    world.net.fault("acme", "refuse", seconds=30)
    conn, events = world.open()
    assert next_event(events, Disconnected).cause is Cause.UNREACHABLE
    world.net.fault("acme", "refuse", seconds=0)
    world.net.fault("acme", "latency", seconds=0.2)
    conn, events = world.open()
    assert no_event(events, Connected, 0.1)
    next_event(events, Connected)
    world.net.fault("acme", "latency", seconds=0)
    world.net.fault("acme", "replace")
    assert isinstance(next_event(events, Replaced), Replaced)
    conn, events = world.open()
    next_event(events, Connected)
    world.net.fault("acme", "logout")
    next_event(events, LoggedOut)
    conn, events = world.open()
    assert isinstance(next_event(events, LoggedOut), LoggedOut)        # the device is gone for good


def test_a_fault_for_a_company_the_simulator_never_saw_is_a_lookup_error(world):
    with pytest.raises(LookupError):
        world.net.fault("ghost", "drop")
    with pytest.raises(InvalidInput):
        world.net.fault("ghost", "melt")
    with pytest.raises(InvalidInput):
        world.net.fault("ghost", "login", outcome="explode")
    with pytest.raises(InvalidInput):
        world.net.fault("ghost", "no-lid", phone="12")


# ---- a drop the client heals, and a keep-alive black hole ---------------------------------------

def test_interrupt_heals_on_the_same_link_and_holds_inbound_until_then(world):
    conn, events = world.linked()
    world.net.fault("acme", "interrupt", seconds=0.3)
    interrupted = next_event(events, Interrupted)
    assert interrupted.cause is Cause.DROPPED and conn.alive()
    failed = error_of(conn.send(JID, Text("during")))
    assert failed.retryable and not failed.unconfirmed                  # nothing left: safe to retry
    world.net.deliver_inbound("acme", "79001234567", "while interrupted")
    assert world.net.live_count("acme") == 1                            # one client, reconnecting
    got = []
    while not isinstance(event := events.get(timeout=5), IncomingMessage):
        got.append(event)
    assert any(isinstance(e, Connected) for e in got)                  # Connected again, then the message
    assert event.text == "while interrupted"
    assert conn.send(JID, Text("after")).result(timeout=5)
    assert world.net.max_seen("acme") == 1


def test_keepalive_black_hole_sends_get_no_answer_then_unconfirmed(world):
    conn, events = world.linked()
    world.net.fault("acme", "blackhole", seconds=1.0)
    assert next_event(events, Interrupted).cause is Cause.KEEPALIVE
    into_the_hole = conn.send(JID, Text("lost"))
    time_sent = time.monotonic()
    failed = error_of(into_the_hole)
    assert failed.unconfirmed and not failed.retryable                # may have left: never resent by itself
    assert time.monotonic() - time_sent >= 0.5                          # no answer until the deadline
    next_event(events, Connected)
    assert world.net.messages("79001234567") == []
    assert conn.send(JID, Text("after")).result(timeout=5)


def test_an_answer_slower_than_the_deadline_is_unconfirmed_but_was_delivered(world):
    conn, events = world.linked()
    world.net.fault("acme", "slow", seconds=0.2)
    started = time.monotonic()
    assert conn.send(JID, Text("slow")).result(timeout=5)
    assert time.monotonic() - started >= 0.2
    world.net.fault("acme", "slow", seconds=10)                         # past the 0.6 s deadline
    failed = error_of(conn.send(JID, Text("too slow")))
    assert failed.unconfirmed and "timed out" in str(failed)
    # WhatsApp did take it: a resend under a new id would reach the recipient twice
    assert [m["text"] for m in world.net.messages("79001234567")] == ["slow", "too slow"]


def test_a_link_that_closes_with_a_send_unanswered_fails_it_as_unconfirmed(world):
    conn, events = world.linked()
    world.net.fault("acme", "slow", seconds=30)
    waiting = conn.send(JID, Text("in flight"))
    deadline = time.monotonic() + 5
    while not world.net.messages("79001234567") and time.monotonic() < deadline:
        time.sleep(0.01)                                            # WhatsApp has it, the answer is pending
    world.net.fault("acme", "drop")
    failed = error_of(waiting)
    assert failed.unconfirmed and not failed.retryable


def test_a_send_that_never_reached_a_dropped_link_is_retryable_not_unconfirmed(world):
    conn, events = world.linked()
    world.net.fault("acme", "drop")
    next_event(events, Disconnected)
    failed = error_of(conn.send(JID, Text("too late")))
    assert failed.retryable and not failed.unconfirmed                  # nothing left: the outbox retries it
    assert world.net.messages("79001234567") == []


# ---- identity ------------------------------------------------------------------------------------

def test_no_lid_found_is_not_on_whatsapp_and_not_retryable(world):
    conn, events = world.linked()
    world.net.fault("acme", "no-lid", phone="+7 900 123-45-67")
    failed = error_of(conn.send(JID, Text("anyone?")))
    assert not failed.retryable and not failed.unconfirmed
    assert "not on WhatsApp" in str(failed) and "no LID found" in str(failed)
    assert failed.code == SendError.NOT_ON_WHATSAPP
    assert world.net.messages("79001234567") == []
    world.net.fault("acme", "no-lid", seconds=0, phone="79001234567")
    assert conn.send(JID, Text("now")).result(timeout=5)


def test_a_lid_sender_gets_its_phone_from_the_lid_store(world):
    conn, events = world.linked()
    world.net.deliver_inbound("acme", "79005550000", "hi from a LID", as_lid=True)
    message = next_event(events, IncomingMessage)
    assert message.chat.endswith("@lid") and not message.chat.startswith("79005550000")
    assert message.phone == "79005550000"
    assert world.net.phone_for_lid(message.chat) == "79005550000"


def test_receipts_follow_an_ack_to_a_linked_recipient(world):
    a, events_a = world.linked("a", "79990000001")
    b, events_b = world.linked("b", "79990000002")
    message_id = a.send("79990000002@s.whatsapp.net", Text("hi b")).result(timeout=5)
    assert next_event(events_b, IncomingMessage).id == message_id
    receipt = next_event(events_a, Receipt)
    assert receipt.message_ids == (message_id,)
    # the server names the recipient's LID chat; the client maps it back to the phone
    assert receipt.chat == "79990000002@s.whatsapp.net"


# ---- pairing and login -----------------------------------------------------------------------------

def test_paired_but_never_connected_then_the_stored_credentials_connect(world):
    conn, events = world.open()
    next_event(events, QrCode)
    world.net.fault("acme", "pair-stall")
    world.net.scan("acme", PHONE)
    assert next_event(events, Paired).phone == PHONE
    assert no_event(events, Connected, 0.3) and conn.alive()
    assert error_of(conn.send(JID, Text("x"))).retryable
    conn.close().result(timeout=5)
    conn, events = world.open()
    assert next_event(events, Connected).phone == PHONE                # no new QR: the pairing stuck


@pytest.mark.parametrize("outcome", LOGIN_OUTCOMES)
def test_each_failed_login_outcome(world, outcome):
    conn, events = world.open()
    shown = next_event(events, QrCode)
    world.net.fault("acme", "login", outcome=outcome)
    if outcome == "scanned-without-multidevice":
        again = next_event(events, QrCode)
        assert again.code == shown.code and conn.alive()               # the same code stays valid
        assert "multi-device" in getattr(again, "hint", "multi-device")
        world.net.scan("acme", PHONE)                                   # and can still be scanned
        next_event(events, Connected)
    elif outcome in ("unexpected-state", "dropped"):
        ended = next_event(events, Disconnected)
        assert ended.retryable and ended.cause is Cause.DROPPED
        assert {"unexpected-state": "unexpected", "dropped": "lost"}[outcome] in ended.reason
    else:
        ended = next_event(events, QrExhausted)
        words = {"timeout": "QR expired", "passkey": "passkey", "error": "pairing failed"}[outcome]
        assert words in ended.reason
    if outcome != "scanned-without-multidevice":
        assert wait_dead(conn)
        with pytest.raises(LookupError):
            world.net.scan("acme", PHONE)


def wait_dead(conn, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while conn.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not conn.alive()


@pytest.mark.parametrize("code, kind", [(401, "unlinked"), (403, "locked"), (406, "banned")])
def test_logged_out_says_unlinked_locked_or_banned(world, code, kind):
    conn, events = world.linked()
    world.net.fault("acme", "logout", code=code)
    ended = next_event(events, LoggedOut)
    assert (ended.code, ended.kind) == (code, kind)
    with pytest.raises(InvalidInput):
        world.net.fault("acme", "logout", code=500)


def test_logout_tells_whatsapp_only_over_a_live_link(world):
    conn, events = world.linked()
    world.net.fault("acme", "interrupt", seconds=30)
    next_event(events, Interrupted)
    result = conn.logout().result(timeout=5)
    assert not result.told_whatsapp and "not told" in result.reason
    assert conn.alive() and world.net.connections()["accounts"][PHONE]["devices"] == 1   # still listed
    conn.close().result(timeout=5)
    conn, events = world.open()
    next_event(events, Connected)
    assert conn.logout().result(timeout=5).told_whatsapp
    assert wait_dead(conn) and PHONE not in world.net.connections()["accounts"]


@pytest.mark.parametrize("code, cause", [(405, Cause.CLIENT_OUTDATED), (418, Cause.REJECTED)])
def test_reject_is_a_connect_failure_with_its_code(world, code, cause):
    conn, events = world.linked()
    world.net.fault("acme", "reject", seconds=30, code=code)
    failed = next_event(events, ConnectFailure)
    assert (failed.code, failed.cause, failed.retryable) == (code, cause, False)
    conn, events = world.open()
    assert next_event(events, ConnectFailure).code == code              # and on every connect meanwhile
    world.net.fault("acme", "reject", seconds=0, code=code)
    conn, events = world.open()
    next_event(events, Connected)
    with pytest.raises(InvalidInput):
        world.net.fault("acme", "reject", code=200)
