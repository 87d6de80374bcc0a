"""A send whose outcome is unknown is never reported as safe to resend (issue 8).

whatsmeow waits up to 75 s for WhatsApp's answer and neonize cannot pin a message id, so a
send that may have left must come back `unconfirmed`, and only one that provably did not
(never handed to Go, refused before the request) `retryable`. These run stand-in children
over the real pipe and Link (no neonize), and the child's own stop sequence in-process
with a stand-in client.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from switchboard.actors.connection import Connected, IncomingMessage, PairingCode, SendError
from switchboard.actors.payload import Text
from switchboard.actors.transports.neonize import NeonizeConnection, NeonizeTransport, child, wire
from switchboard.actors.transports.neonize.connection import SEND_TIMEOUT
from switchboard.actors.transports.neonize.child_commands import GO_REQUEST_TIMEOUT

from .support.neonize import Recorder, child_started, process_gone, session_children, wait_until

pytestmark = pytest.mark.timeout(60)
TO = "15550001111@s.whatsapp.net"


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_until(lambda: not session_children(), 10), f"session processes left: {session_children()}"


@pytest.fixture
def opened(tmp_path):
    made: list[NeonizeConnection] = []

    def make(target, **kw):
        rec = Recorder()
        conn = NeonizeConnection("acme", tmp_path / "acme", rec, child_target=target, **kw)
        conn.open()
        made.append(conn)
        assert wait_until(lambda: child_started(conn), 10)
        conn._on_child_event({"type": "connected", "phone": "15550009999"})   # pretend WhatsApp said so
        return conn, rec

    yield make
    for conn in made:
        conn.close().result(timeout=10)
        assert conn.pid is None or process_gone(conn.pid)


# ------------------------------------------------------------------ stand-in children

def _hello(conn, name: str) -> None:
    conn.send({"type": "connecting", "pid": os.getpid(), "uuid": name})


def _starts_and_hangs(cfg: dict, conn) -> None:
    """Takes every send into "Go" (STARTED) and never hears back from WhatsApp."""
    _hello(conn, "hangs")
    while True:
        req_id, op, _args = conn.recv()
        if op == "stop":
            os._exit(0)
        conn.send({"type": "started", "req_id": req_id})


def _starts_late_and_hangs(cfg: dict, conn) -> None:
    """Like _starts_and_hangs, but each send first waits its turn for 0.5 s."""
    _hello(conn, "late")
    while True:
        req_id, op, _args = conn.recv()
        if op == "stop":
            os._exit(0)
        time.sleep(0.5)
        conn.send({"type": "started", "req_id": req_id})


def _dies_mid_send(cfg: dict, conn) -> None:
    """Hands the send to "Go", then the process dies (a Go panic, an OOM kill)."""
    _hello(conn, "dies")
    req_id, _op, _args = conn.recv()
    conn.send({"type": "started", "req_id": req_id})
    time.sleep(0.2)
    os._exit(2)


def _dies_before_starting(cfg: dict, conn) -> None:
    _hello(conn, "dies-early")
    conn.recv()
    os._exit(2)


def _finishes_during_stop(cfg: dict, conn) -> None:
    """The send is in Go when the stop comes; WhatsApp's answer arrives during the drain."""
    _hello(conn, "finishes")
    started = None
    while True:
        req_id, op, _args = conn.recv()
        if op == "stop":
            time.sleep(0.3)
            conn.send({"type": "reply", "req_id": started, "ok": True, "result": {"message_id": "3EB0DONE"}})
            os._exit(0)
        started = req_id
        conn.send({"type": "started", "req_id": req_id})


def _answers_by_code(cfg: dict, conn) -> None:
    """Starts each send and fails it with the wire code named by its text."""
    _hello(conn, "codes")
    while True:
        req_id, op, args = conn.recv()
        if op == "stop":
            os._exit(0)
        conn.send({"type": "started", "req_id": req_id})
        if op == "pair_phone":
            conn.send({"type": "reply", "req_id": req_id, "ok": True, "result": {"code": "ABCD1234"}})
            continue
        text = args["payload"]["text"]
        conn.send({"type": "reply", "req_id": req_id, "ok": False, "code": text, "error": f"Go said {text}"})


# ------------------------------------------------------------------ tests

def test_the_send_deadline_is_longer_than_whatsmeows_own():
    assert SEND_TIMEOUT > GO_REQUEST_TIMEOUT == 75.0
    assert NeonizeTransport().send_timeout == SEND_TIMEOUT


def test_a_started_send_with_no_answer_is_unconfirmed_not_retryable(opened):
    conn, _ = opened(_starts_and_hangs, send_timeout=0.5)
    began = time.monotonic()
    exc = conn.send(TO, Text("slow")).exception(timeout=5)
    assert isinstance(exc, SendError) and exc.unconfirmed and not exc.retryable, exc
    assert "may have been delivered" in str(exc)
    assert 0.4 <= time.monotonic() - began < 10.0


def test_the_run_deadline_starts_when_the_send_starts(opened):
    """A send that waited its turn is not cut short: the clock for WhatsApp's answer
    starts at STARTED, not at the request."""
    conn, _ = opened(_starts_late_and_hangs, command_timeout=20.0, send_timeout=1.0)
    began = time.monotonic()
    exc = conn.send(TO, Text("slow")).exception(timeout=10)
    assert exc.unconfirmed and time.monotonic() - began >= 1.45      # 0.5 s queued + 1.0 s in Go


def test_a_send_in_go_when_the_child_dies_is_unconfirmed(opened):
    conn, _ = opened(_dies_mid_send)
    exc = conn.send(TO, Text("lost?")).exception(timeout=10)
    assert isinstance(exc, SendError) and exc.unconfirmed and not exc.retryable, exc
    assert "may have reached WhatsApp" in str(exc)


def test_a_send_that_never_started_stays_retryable_when_the_child_dies(opened):
    conn, _ = opened(_dies_before_starting)
    exc = conn.send(TO, Text("safe")).exception(timeout=10)
    assert isinstance(exc, SendError) and exc.retryable and not exc.unconfirmed, exc


def test_close_lets_a_started_send_finish_instead_of_calling_it_retryable(opened):
    conn, _ = opened(_finishes_during_stop, stop_grace=3.0)
    fut = conn.send(TO, Text("in flight"))
    assert wait_until(lambda: conn._link._pending and next(iter(conn._link._pending.values())).started, 5)
    conn.close()
    assert fut.result(timeout=10) == "3EB0DONE"


def test_reply_codes_become_the_three_outcomes(opened):
    conn, _ = opened(_answers_by_code)
    unconfirmed = conn.send(TO, Text(wire.UNCONFIRMED)).exception(timeout=5)
    assert unconfirmed.unconfirmed and not unconfirmed.retryable
    missing = conn.send(TO, Text(wire.NOT_ON_WHATSAPP)).exception(timeout=5)
    assert not missing.retryable and not missing.unconfirmed
    assert missing.code == SendError.NOT_ON_WHATSAPP and str(missing).startswith("number not on WhatsApp")
    before = conn.send(TO, Text(wire.NOT_CONNECTED)).exception(timeout=5)
    assert before.retryable and before.code == wire.NOT_CONNECTED
    refused = conn.send(TO, Text(wire.REJECTED)).exception(timeout=5)
    assert not refused.retryable and not refused.unconfirmed


def test_a_pairing_code_comes_with_the_time_left_of_the_qr_window(tmp_path, monkeypatch):
    now = [1000.0]
    rec = Recorder()
    conn = NeonizeConnection("acme", tmp_path / "acme", rec, child_target=_answers_by_code)
    conn._translator.clock = lambda: now[0]
    conn.open()
    try:
        assert wait_until(lambda: child_started(conn), 10)
        conn._on_child_event({"type": "qr", "code": "https://wa.me/settings/linked_devices#ref1"})
        now[0] += 150.0                                  # asked late: 10 s of the 160 s window left
        code = conn.pair_phone("15550001111").result(timeout=5)
        assert isinstance(code, PairingCode) and code == "ABCD1234"
        assert code.expires_in == pytest.approx(10.0)
    finally:
        conn.close().result(timeout=10)


# ------------------------------------------------------------------ the child's stop drains

class _Pipe:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.lock = threading.Lock()

    def send(self, msg: dict) -> None:
        with self.lock:
            self.sent.append(msg)


class _StreamingClient:
    """Stands in for neonize: Disconnect() stops the socket, but three messages whatsmeow
    had already queued (and acked) still come through the event loop afterwards; Stop()
    ends the loop and drops whatever is left, as neonize's Stop does."""

    def __init__(self, session: child._Session) -> None:
        self.session = session
        self.log: list[str] = []
        self.stopped = threading.Event()
        self._loop: threading.Thread | None = None

    def disconnect(self) -> None:
        self.log.append("disconnect")

        def deliver() -> None:
            for n in range(3):
                time.sleep(0.1)
                if self.stopped.is_set():
                    return                              # Stop() dropped the queue
                self.session.on_event(self, {"type": "message", "id": f"3EB0Q{n}"})

        self._loop = threading.Thread(target=deliver, daemon=True)
        self._loop.start()

    def stop(self) -> None:
        self.log.append("stop")
        self.stopped.set()


class _Exited(BaseException):
    pass


def test_stopping_forwards_what_neonize_had_queued_before_it_stops(monkeypatch):
    monkeypatch.setattr(child, "map_event", lambda ev, _lookup: ev)     # the events are dicts here
    monkeypatch.setattr(child, "DRAIN_QUIET", 1.0)                      # generous on a busy machine
    monkeypatch.setattr(child.os, "_exit", lambda code: (_ for _ in ()).throw(_Exited(code)))
    session = child._Session(_Pipe())
    session.client = client = _StreamingClient(session)
    session.ready.set()
    session.on_event(client, {"type": "connected"})                     # the event loop runs
    with pytest.raises(_Exited):
        session.stop(grace=6.0)
    ids = [m["id"] for m in session.conn.sent if m["type"] == "message"]
    assert ids == ["3EB0Q0", "3EB0Q1", "3EB0Q2"]
    assert client.log == ["disconnect", "stop"]
    session._pool.shutdown(wait=False)


def test_stopping_in_the_qr_phase_does_not_wait_for_a_drain(monkeypatch):
    monkeypatch.setattr(child.os, "_exit", lambda code: (_ for _ in ()).throw(_Exited(code)))
    session = child._Session(_Pipe())
    session.client = client = _StreamingClient(session)
    session.ready.set()                                                 # a QR is shown, no events yet
    began = time.monotonic()
    with pytest.raises(_Exited):
        session.stop(grace=3.0)
    assert client.log == ["stop"] and time.monotonic() - began < 1.0
    session._pool.shutdown(wait=False)


def test_traffic_after_a_final_event_is_still_delivered(tmp_path):
    rec = Recorder()
    conn = NeonizeConnection("acme", tmp_path / "acme", rec)            # never opened: no child
    for msg in ({"type": "connected"}, {"type": "logged_out", "status": 401},
                {"type": "message", "id": "3EB0AFTER", "chat": TO, "phone": "15550001111", "text": "late",
                 "kind": "text", "timestamp": 1.0}, {"type": "connected"}):
        conn._on_child_event(msg)
    assert rec.events[0] == Connected("") and isinstance(rec.events[-1], IncomingMessage)
    assert len(rec.events) == 3                                         # no Connected after the end
    conn.close()


def test_this_process_never_imported_neonize():
    import sys
    assert not [m for m in sys.modules if m == "neonize" or m.startswith("neonize.")]
    assert Path(child.__file__).name == "child.py"
