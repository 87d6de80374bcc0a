"""The neonize transport against what whatsmeow really does (issue 8), offline.

neonize's own protobuf events are built by hand and mapped in a process of their own
(tests/neonize_mapping_cases.py); the resulting dicts are fed to a NeonizeConnection. The
LID store is the real one, through neonize (tests/neonize_lid_store_case.py). This
process never imports neonize.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchboard.actors.connection import (Cause, ConnectFailure, Connected, Disconnected, IncomingMessage,
                                           Interrupted, LoggedOut, Paired, QrCode, QrExhausted, Receipt)
from switchboard.actors.transports.neonize import NeonizeConnection, translate

from .support.neonize import Recorder, child_started, process_gone, session_children, wait_until

HERE = Path(__file__).parent
pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def mapped() -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "neonize_mapping_cases.py")], capture_output=True,
                          text=True, timeout=60, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def conn(tmp_path):
    """A connection that was never opened, with a clock the test moves."""
    events: list = []
    c = NeonizeConnection("acme", tmp_path / "acme", events.append)
    c.events, c.clock = events, Clock()
    c._translator.clock = c.clock
    yield c
    c.close()


def feed(c: NeonizeConnection, *messages: dict) -> list:
    for msg in messages:
        c._on_child_event(msg)
    return c.events


def show_codes(c: NeonizeConnection, n: int) -> None:
    for i in range(n):
        feed(c, {"type": "qr", "code": f"https://wa.me/settings/linked_devices#ref{i}"})
        c.clock.now += 60.0 if i == 0 else 20.0


# ------------------------------------------------------------------ pairing and login outcomes

def test_qr_codes_running_out_is_qr_expired(conn):
    show_codes(conn, 6)
    feed(conn, {"type": "login_event", "event": "timeout"})
    assert conn.events[-1] == QrExhausted() and "expired" in conn.events[-1].reason


def test_a_socket_drop_while_the_qr_shows_is_a_retryable_drop_not_qr_expired(conn):
    show_codes(conn, 1)
    conn.clock.now -= 45.0                           # 15 s into the first code's 60 s
    feed(conn, {"type": "login_event", "event": "timeout"}, {"type": "qr", "code": "late"})
    last = conn.events[-1]
    assert isinstance(last, Disconnected) and last.cause is Cause.DROPPED and last.retryable
    assert "lost while the QR code was shown" in last.reason
    assert not conn.alive() and len(conn.events) == 2        # over: nothing after it


def test_scanned_without_multidevice_keeps_the_same_code_with_a_hint(conn):
    feed(conn, {"type": "qr", "code": "https://wa.me/settings/linked_devices#ref0"})
    conn.clock.now += 15.0
    feed(conn, {"type": "login_event", "event": "err-scanned-without-multidevice"})
    again = conn.events[-1]
    assert isinstance(again, QrCode) and again.code == "https://wa.me/settings/linked_devices#ref0"
    assert again.expires_in == pytest.approx(45.0) and "multi-device" in again.hint
    feed(conn, {"type": "login_event", "event": "success"}, {"type": "paired", "phone": "15550005555"},
         {"type": "connected", "phone": "15550005555"})
    assert conn.events[-2:] == [Paired("15550005555"), Connected("15550005555")]   # still goes on


@pytest.mark.parametrize("outcome, kind, words", [
    ("error", QrExhausted, "pairing failed"),
    ("passkey-request", QrExhausted, "passkey"),
    ("passkey-confirmation", QrExhausted, "passkey"),
    ("err-unexpected-state", Disconnected, "unexpected state"),
    ("err-client-outdated", ConnectFailure, "outdated"),
    ("something-new", QrExhausted, "something-new"),
])
def test_each_login_outcome_is_told_apart(conn, outcome, kind, words):
    show_codes(conn, 2)
    feed(conn, {"type": "login_event", "event": outcome})
    last = conn.events[-1]
    assert type(last) is kind and words in last.reason, last
    assert last != QrExhausted()                     # never the plain "QR expired"
    assert not conn.alive()


def test_the_pair_error_text_reaches_the_reason(conn):
    show_codes(conn, 1)
    feed(conn, {"type": "pair_error", "error": "invalid device signature in pair success message"},
         {"type": "login_event", "event": "error"})
    assert "invalid device signature" in conn.events[-1].reason


def test_the_qr_window_is_160_seconds_from_the_first_code(conn):
    assert translate.QR_WINDOW == 160.0
    feed(conn, {"type": "qr", "code": "a"})
    conn.clock.now += 100.0
    feed(conn, {"type": "qr", "code": "b"})
    assert conn._translator.qr_window_left() == pytest.approx(60.0)
    conn.clock.now += 100.0
    assert conn._translator.qr_window_left() == 0.0


# ------------------------------------------------------------------ drops and keep-alive

def _reconnects_inside(cfg: dict, conn) -> None:
    """Stand-in child: up, dropped, reconnected by itself; then waits for stop."""
    conn.send({"type": "connecting", "pid": os.getpid(), "uuid": "reconnects"})
    conn.send({"type": "connected", "phone": "15550009999"})
    conn.send({"type": "disconnected"})
    time.sleep(0.3)
    conn.send({"type": "connected", "phone": "15550009999"})
    while conn.recv()[1] != "stop":
        pass
    os._exit(0)


def test_a_drop_keeps_the_child_and_its_own_reconnect_ends_the_interruption(tmp_path):
    rec = Recorder()
    conn = NeonizeConnection("acme", tmp_path / "acme", rec, child_target=_reconnects_inside)
    conn.open()
    try:
        rec.wait_for(lambda e: isinstance(e, Connected) and len(rec.events) == 3, timeout=20)
        assert [type(e) for e in rec.events] == [Connected, Interrupted, Connected]
        assert rec.events[1].cause is Cause.DROPPED
        assert conn.alive() and not process_gone(conn.pid)        # one child, one socket, all along
        assert session_children() == [conn.pid]
    finally:
        conn.close().result(timeout=10)
    assert process_gone(conn.pid)


def test_keepalive_black_hole_then_whatsmeows_forced_reconnect(conn, mapped):
    feed(conn, mapped["connected"], {"type": "keepalive_timeout", "error_count": 1},
         {"type": "keepalive_timeout", "error_count": 2})
    assert isinstance(conn.events[-1], Interrupted) and conn.events[-1].cause is Cause.KEEPALIVE
    feed(conn, {"type": "keepalive_timeout", "error_count": 9})       # 3 minutes on: no repeat
    assert len(conn.events) == 2
    feed(conn, mapped["connected"])                  # whatsmeow's own reconnect after 3 minutes
    assert conn.events[-1] == Connected("") and conn._translator.connected


def test_keepalive_timeouts_while_not_connected_say_nothing(conn):
    feed(conn, {"type": "keepalive_timeout", "error_count": 5}, {"type": "keepalive_restored"})
    assert conn.events == []


# ------------------------------------------------------------------ identity

def test_a_lid_sender_without_its_phone_gets_it_from_the_lid_store(conn, mapped):
    m = mapped["store:lid_sender_without_alt"]
    assert m["phone"] == "15550006666" and m["chat"] == "15550006666@s.whatsapp.net"
    assert m["sender"] == "204812345678901@lid"
    assert mapped["store:group_lid_sender_without_alt"]["phone"] == "15550006666"
    assert mapped["store:group_lid_sender_without_alt"]["chat"] == "120363025246125888@g.us"
    assert mapped["store:lid_sender_with_alt"]["phone"] == "15550002222"      # the alt still wins
    assert mapped["store:conversation"] == mapped["conversation"]             # phone JIDs untouched
    feed(conn, m)
    assert conn.events == [IncomingMessage(id="3EB0C0FFEE", chat="15550006666@s.whatsapp.net",
                                           phone="15550006666", text="who am i",
                                           timestamp=pytest.approx(1_700_000_000.123), push_name="Alice")]


def test_receipts_on_a_lid_chat_map_back_to_the_phone(conn, mapped):
    assert mapped["store:receipt_lid_chat"]["chat"] == "15550006666@s.whatsapp.net"
    assert mapped["receipt_lid_chat_with_alt"]["chat"] == "15550007777@s.whatsapp.net"
    assert mapped["receipt_lid_chat"]["chat"] == "204812345678901@lid"        # unknown: left as is
    assert mapped["store:receipt_read"]["chat"] == "15550001111@s.whatsapp.net"
    feed(conn, mapped["store:receipt_lid_chat"])
    assert conn.events == [Receipt(message_ids=("3EB0EE",), chat="15550006666@s.whatsapp.net",
                                   kind="delivered", timestamp=1_700_000_004.0)]


def test_the_lid_store_answers_through_real_neonize(tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "neonize_lid_store_case.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {"before_device_event": "", "known": "15550006666", "unknown": ""}


# ------------------------------------------------------------------ reasons

@pytest.mark.parametrize("case, code, kind, words", [
    ("logged_out_401", 401, "unlinked", "unlinked from the phone"),
    ("logged_out_no_reason", 401, "unlinked", "unlinked from the phone"),
    ("logged_out", 403, "locked", "locked"),
    ("logged_out_406", 406, "banned", "banned"),
])
def test_logged_out_tells_locked_and_banned_from_an_unlink(conn, mapped, case, code, kind, words):
    feed(conn, mapped["connected"], mapped[case])
    last = conn.events[-1]
    assert isinstance(last, LoggedOut) and last.code == code and last.kind == kind
    assert words in last.reason


@pytest.mark.parametrize("case, code, name", [
    ("connect_failure_raw_415", 415, "NOT_FOUND"),
    ("connect_failure_raw_418_int", 418, "CLIENT_UNKNOWN"),
])
def test_connect_failure_codes_missing_from_neonizes_enum_come_from_the_raw_node(conn, mapped, case, code,
                                                                                  name):
    assert mapped[case]["status"] == code and mapped[case]["reason"] == name
    feed(conn, mapped[case])
    last = conn.events[-1]
    assert isinstance(last, ConnectFailure) and last.code == code and f"({code})" in last.reason
    assert last.cause is Cause.REJECTED
    assert mapped["connect_failure_raw_none"]["status"] == 0
