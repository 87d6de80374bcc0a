"""Regression tests for faults found in review: each one failed before its fix."""
from __future__ import annotations

import dataclasses
import fcntl
import os
import threading
from concurrent.futures import Future

import pytest

from switchboard.actors.connection import SendError, TemporaryBan
from switchboard.actors.session import InjectedCrash, SessionUnavailable
from switchboard.actors.transports.simulated import CREDENTIALS_FILE, SimulatedConnection, SimulatedTransport

from .conftest import FAST_BACKOFF, FAST_RESTARTS, FAST_SETTINGS, StateWaiter, link, make_network
from .test_session_lifecycle import ScriptedTransport, _assert_stays


class HoldingConnection(SimulatedConnection):
    """Like neonize: a send waits for the server's answer, and closing the connection
    fails what is still waiting (retryably). Logout can be held too."""

    def __init__(self, *args, hold, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold = hold
        self.waiting: list[Future] = []

    def send(self, jid, payload):
        if self.hold.get("sends"):
            future = Future()
            self.waiting.append(future)
            return future
        return super().send(jid, payload)

    def logout(self):
        return Future() if self.hold.get("logout") else super().logout()

    def close(self):
        for future in self.waiting:
            if not future.done():
                future.set_exception(SendError("connection closed", retryable=True))
        return super().close()


class HoldingTransport(SimulatedTransport):
    def __init__(self, network):
        super().__init__(network)
        self.hold: dict[str, bool] = {}

    def connect(self, company_id, company_dir, emit):
        return HoldingConnection(self.network, company_id, company_dir, emit, hold=self.hold)


@pytest.fixture
def holding(board_factory, tmp_path):
    transport = HoldingTransport(make_network())
    patient = dataclasses.replace(FAST_SETTINGS, backoff=dataclasses.replace(FAST_BACKOFF, max_attempts=50))
    board = board_factory(data_dir=tmp_path / "h", transport_override=transport, settings=patient)
    waiter = StateWaiter(board)
    yield board, waiter, transport
    waiter.close()


def test_connection_drops_do_not_use_up_a_sends_retries(holding):
    board, waiter, transport = holding
    link(board, waiter, "acme")
    transport.hold["sends"] = True
    receipt = board.session("acme").send("79001234567", "survives drops").get(timeout=5)
    for _ in range(8):                                  # more drops than SEND_RETRIES
        board.network.fault("acme", "drop")
        waiter.state("acme", "reconnecting")
        waiter.state("acme", "connected")
    transport.hold["sends"] = False
    board.network.fault("acme", "drop")
    waiter.state("acme", "reconnecting")
    assert receipt.delivered.result(timeout=5)
    assert [m["text"] for m in board.network.messages("79001234567")] == ["survives drops"]


def test_events_during_a_pending_logout_finish_the_logout(holding):
    board, waiter, transport = holding
    link(board, waiter, "acme")
    transport.hold["logout"] = True
    board.session("acme").logout().get(timeout=5)
    board.network.fault("acme", "drop")                 # the link drops before WhatsApp confirms
    _assert_stays(waiter, "acme", "logged_out", FAST_BACKOFF.worst_case_total())
    assert not (board.data_dir / "acme" / CREDENTIALS_FILE).exists()
    assert board.network.live_count("acme") == 0


def test_failed_session_stays_failed_after_an_actor_restart(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "refuse", seconds=60)
    waiter.state("acme", "failed", timeout=10)
    board.directory.refs["acme"].tell(InjectedCrash("bug"))
    board.network.fault("acme", "refuse", seconds=0)
    _assert_stays(waiter, "acme", "failed", FAST_BACKOFF.worst_case_total())


def test_held_owner_lock_is_waited_for_not_fatal(board, waiter):
    link(board, waiter, "acme")
    board.session("acme").stop().get(timeout=5)
    fd = os.open(board.data_dir / "acme" / "owner.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)                      # a crashed actor still closing, say
    try:
        board.session("acme").start().get(timeout=5)
        assert "owner.lock" in waiter.state("acme", "reconnecting")["lastError"]
    finally:
        os.close(fd)
    waiter.state("acme", "connected")
    assert board.network.max_seen("acme") == 1


def test_a_company_that_cannot_even_start_is_parked_for_good(board, waiter):
    (board.data_dir / "acme" / "outbox.jsonl").mkdir(parents=True)     # on_start fails every time
    spawned = []
    board.on_event(lambda e: spawned.append(e), kinds=("spawned",), company_id="acme")
    board.session("acme", create=False)
    board.supervisor.ensure("acme").get(timeout=5)
    gave_up = threading.Event()
    board.on_event(lambda e: "cannot run even parked" in e.data["error"] and gave_up.set(), kinds=("gave_up",))
    assert gave_up.wait(10)
    board.bus.flush()
    count = len(spawned)
    assert count == FAST_RESTARTS.max_restarts + 2         # first + restarts + the parked one
    status = next(s for s in board.statuses() if s["companyId"] == "acme")
    assert status["status"] == "failed" and "cannot run even parked" in status["lastError"]
    with pytest.raises(SessionUnavailable):
        board.session("acme", create=False).status().get(timeout=5)
    _no_more = threading.Event()
    assert not _no_more.wait(FAST_RESTARTS.sweep_interval * 3)
    board.bus.flush()
    assert len(spawned) == count


def test_ban_without_expiry_does_not_loop(board_factory, tmp_path):
    transport = ScriptedTransport([TemporaryBan(0)])
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport)
    w = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    status = w.state("acme", "banned")
    assert f"for {FAST_BACKOFF.cap:g} s" in status["lastError"]
    _assert_stays(w, "acme", "banned", FAST_BACKOFF.cap / 2)
    assert transport.opened == 1
    assert board.session("acme").start().get(timeout=5)["status"] == "banned"    # start waits for the ban
    w.close()


def test_remove_reports_the_sends_it_discards(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "refuse", seconds=60)
    waiter.state("acme", "reconnecting")
    receipt = board.session("acme").send("79001234567", "never sent").get(timeout=5)
    failed = []
    board.on_event(lambda e: failed.append(e.data), kinds=("message.failed",))
    assert board.remove("acme", logout=False)
    board.bus.flush()
    assert failed == [{"id": receipt.id, "error": "session deleted"}]
    with pytest.raises(SessionUnavailable, match="session deleted"):
        receipt.delivered.result(timeout=5)


def test_idempotency_key_reused_for_another_message_is_refused(board, waiter):
    from switchboard.actors.phone import InvalidInput
    link(board, waiter, "acme")
    session = board.session("acme")
    session.send("79001234567", "hi", "k1").get(timeout=5).delivered.result(timeout=5)
    with pytest.raises(InvalidInput, match="different message"):
        session.send("79001234568", "different", "k1").get(timeout=5)
    assert session.send("79001234567", "hi", "k1").get(timeout=5).message_id   # a true retry is fine
    assert board.network.messages("79001234568") == []


def test_lone_surrogate_is_bad_input(board, waiter):
    from switchboard.actors.phone import InvalidInput
    link(board, waiter, "acme")
    with pytest.raises(InvalidInput, match="Unicode"):
        board.session("acme").send("79001234567", "\ud800").get(timeout=5)
    assert waiter.status("acme")["queued"] == 0
