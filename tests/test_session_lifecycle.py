"""SessionActor against the simulated network: the lifecycle and the policy table."""
from __future__ import annotations

import json
import threading
import time

import pytest

from switchboard.actors.connection import Cause, ConnectFailure, Disconnected, QrCode, TemporaryBan
from switchboard.actors.phone import InvalidInput
from switchboard.actors.ratelimit import RateLimit, RateLimited
from switchboard.actors.context import SessionSettings
from switchboard.actors.errors import SessionUnavailable
from switchboard.actors.lifecycle import STATES
from switchboard.actors.transports.simulated import CREDENTIALS_FILE

from .support.sessions import (FAST_BACKOFF, ScriptedTransport, StateWaiter, assert_stays, link,
                               make_network, open_paths)


def test_qr_scan_connect_send_receive(board, waiter):
    received = []
    got_one = threading.Event()
    board.on_message(lambda m: (received.append(m), got_one.set()))
    session = board.session("962302")
    assert session.status().get(timeout=5)["status"] == "stopped"

    session.start().get(timeout=5)
    status = waiter.state("962302", "qr")
    assert status["qrAvailable"] is True
    qr = session.qr().get(timeout=5)
    assert qr["code"].startswith("https://wa.me/settings/linked_devices#") and qr["expiresAt"]

    board.network.scan("962302", "+7 968 648-44-88")
    status = waiter.state("962302", "connected")
    assert status["phoneNumber"] == "+79686484488" and status["connectedAt"] and status["qrAvailable"] is False

    receipt = session.send("+7 (900) 123-45-67", "Hello").get(timeout=5)
    assert receipt.queued is False
    message_id = receipt.delivered.result(timeout=5)
    assert [m["text"] for m in board.network.messages("79001234567")] == ["Hello"]
    assert board.network.messages("79001234567")[0]["id"] == message_id

    board.network.deliver_inbound("962302", "79001234567", "Hi back", push_name="Alice")
    assert got_one.wait(5)
    assert (received[0].phone, received[0].text, received[0].push_name) == ("79001234567", "Hi back", "Alice")
    status = waiter.until("962302", lambda s: s["messagesSent"] == 1 and s["messagesReceived"] == 1)
    assert status["queued"] == 0


def test_company_dir_and_credentials_are_private(board, waiter):
    link(board, waiter, "acme")
    company_dir = board.data_dir / "acme"
    assert company_dir.stat().st_mode & 0o777 == 0o700
    assert (company_dir / CREDENTIALS_FILE).stat().st_mode & 0o777 == 0o600
    assert (company_dir / "outbox.jsonl").exists() is False or \
        (company_dir / "outbox.jsonl").stat().st_mode & 0o777 == 0o600


def test_invalid_company_id_is_rejected_and_creates_nothing(board):
    for bad in ("", "a" * 51, "../etc", "a/b", "café", "a b"):
        with pytest.raises(InvalidInput):
            board.session(bad)
    assert sorted(p.name for p in board.data_dir.iterdir()) == ["events", "supervisor.log"]


def test_invalid_phone_is_rejected(board, waiter):
    session = board.session("acme")
    link(board, waiter, "acme")
    for bad in ("", "123", "1" * 16, "abc1234567", "7900@g.us", "+7 900 12x 45 67"):
        with pytest.raises(InvalidInput):
            session.send(bad, "hi").get(timeout=5)
    with pytest.raises(InvalidInput):
        session.send("79001234567", "   ").get(timeout=5)
    assert waiter.status("acme")["queued"] == 0


def test_jid_recipient_is_accepted(board, waiter):
    link(board, waiter, "acme")
    receipt = board.session("acme").send("79001234567@s.whatsapp.net", "jid").get(timeout=5)
    receipt.delivered.result(timeout=5)
    assert receipt.to == "79001234567"


# ---- the policy table ---------------------------------------------------------------

def test_drop_reconnects_with_backoff(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "drop")
    status = waiter.state("acme", "reconnecting")
    assert "dropped" in status["lastError"] and status["nextRetryAt"] and status["reconnectAttempts"] == 1
    status = waiter.state("acme", "connected")
    assert status["phoneNumber"] == "+79990001122"
    assert board.network.max_seen("acme") == 1


def test_logged_out_deletes_credentials_and_never_reconnects(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "logout")
    status = waiter.state("acme", "logged_out")
    assert "logged out" in status["lastError"]
    assert not (board.data_dir / "acme" / CREDENTIALS_FILE).exists()
    assert_stays(waiter, "acme", "logged_out", FAST_BACKOFF.worst_case_total())
    assert board.network.live_count("acme") == 0
    # the next start shows a new QR
    board.session("acme").start().get(timeout=5)
    waiter.state("acme", "qr")


def test_replaced_goes_to_conflict_and_does_not_fight_back(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "replace")
    status = waiter.state("acme", "conflict")
    assert "replaced" in status["lastError"]
    assert_stays(waiter, "acme", "conflict", FAST_BACKOFF.worst_case_total())
    assert board.network.connections()["accounts"]["79990001122"]["live"] == 1   # the other client keeps it
    # the operator takes it back
    board.session("acme").reconnect().get(timeout=5)
    waiter.state("acme", "connected")


def test_temporary_ban_retries_once_the_ban_ends(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "ban", seconds=0.4)
    status = waiter.state("acme", "banned")
    assert status["nextRetryAt"] and "banned" in status["lastError"]
    with pytest.raises(SessionUnavailable) as refused:
        board.session("acme").send("79001234567", "during ban").get(timeout=5)
    assert refused.value.retry_after_ms > 0
    waiter.state("acme", "connected", timeout=5)


def test_an_outage_retries_without_end_tells_operators_and_heals_by_itself(board, waiter):
    """Once, 5 refused attempts parked the session in `failed` (desired stopped) until an
    operator came: an outage of any length stranded the company."""
    link(board, waiter, "acme")
    told = []
    board.on_event(lambda e: told.append(e.data), kinds=("reconnect_failed",), company_id="acme")
    board.network.fault("acme", "refuse", seconds=60)
    waiter.until("acme", lambda s: s["reconnectAttempts"] >= 2 * FAST_BACKOFF.max_attempts + 1, timeout=15)
    board.bus.flush()
    assert [t["attempts"] for t in told[:2]] == [FAST_BACKOFF.max_attempts, 2 * FAST_BACKOFF.max_attempts]
    assert "refused" in told[0]["error"] and told[0]["cause"] == "unreachable"
    status = waiter.status("acme")
    assert status["status"] == "reconnecting" and "refused" in status["lastError"]
    assert board.network.live_count("acme") == 0
    # the outage ends: no operator needed
    board.network.fault("acme", "refuse", seconds=0)
    waiter.state("acme", "connected", timeout=5)
    records = (board.data_dir / "supervisor.log").read_text()
    assert '"event":"reconnect_failed"' in records.replace(" ", "")


def test_backoff_resets_after_a_stable_connection(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "drop")
    waiter.state("acme", "reconnecting")
    status = waiter.state("acme", "connected")
    assert status["reconnectAttempts"] == 1
    waiter.until("acme", lambda s: s["reconnectAttempts"] == 0, timeout=FAST_BACKOFF.stable_after + 2)


def test_flapping_connection_keeps_growing_backoff(board, waiter):
    """Drops faster than the stability period do not reset the attempt counter."""
    link(board, waiter, "acme")
    for expected in (1, 2, 3):
        board.network.fault("acme", "drop")
        assert waiter.state("acme", "reconnecting")["reconnectAttempts"] == expected
        waiter.state("acme", "connected")


def test_qr_exhausted_stops_with_qr_expired(board_factory):
    board = board_factory(make_network(qr_first=0.1, qr_next=0.05, qr_count=3))
    w = StateWaiter(board)
    codes = []
    board.on_event(lambda e: codes.append(e.data["code"]), kinds=("qr",))
    board.session("acme").start().get(timeout=5)
    status = w.state("acme", "stopped")
    assert status["lastError"] == "QR expired"
    board.bus.flush()
    assert len(set(codes)) == 3                      # the codes rotated before running out
    board.session("acme").start().get(timeout=5)
    w.state("acme", "qr")
    w.close()


def test_connect_failure_not_retryable_fails_with_reason(board_factory, tmp_path):
    transport = ScriptedTransport([ConnectFailure("client outdated (405)", Cause.CLIENT_OUTDATED)])
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport)
    w = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    status = w.state("acme", "failed")
    assert status["lastError"] == "client outdated (405)"
    assert transport.opened == 1
    w.close()


def test_child_process_died_is_retryable(board_factory, tmp_path):
    transport = ScriptedTransport([Disconnected("session process exited with code -9", Cause.PROCESS_EXITED),
                                   QrCode("2@x", 60)])
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport)
    w = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    w.state("acme", "qr")
    assert transport.opened == 2


def test_stale_retry_timer_is_ignored(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "refuse", seconds=60)
    waiter.state("acme", "reconnecting")
    board.session("acme").stop().get(timeout=5)
    assert_stays(waiter, "acme", "stopped", FAST_BACKOFF.cap * 2)
    assert board.network.live_count("acme") == 0


def test_start_is_idempotent(board, waiter):
    link(board, waiter, "acme")
    for _ in range(3):
        assert board.session("acme").start().get(timeout=5)["status"] == "connected"
    assert board.network.max_seen("acme") == 1


def test_stop_keeps_credentials_and_start_reconnects_without_qr(board, waiter):
    link(board, waiter, "acme")
    board.session("acme").stop().get(timeout=5)
    assert waiter.state("acme", "stopped")["lastError"] is None
    assert board.network.live_count("acme") == 0
    board.session("acme").start().get(timeout=5)
    waiter.state("acme", "connected")


def test_logout_by_request_unlinks_and_deletes_credentials(board, waiter):
    link(board, waiter, "acme")
    board.session("acme").logout().get(timeout=5)
    waiter.until("acme", lambda s: s["status"] == "logged_out" and s["phoneNumber"] is None)
    waiter.until("acme", lambda s: not (board.data_dir / "acme" / CREDENTIALS_FILE).exists())
    assert board.network.connections()["accounts"] == {}


def test_every_status_is_a_documented_state(board, waiter):
    link(board, waiter, "acme")
    assert waiter.status("acme")["status"] in STATES
    assert set(waiter.status("acme")) == {
        "companyId", "status", "connected", "phoneNumber", "connectedAt", "lastError", "reconnectAttempts",
        "nextRetryAt", "qrAvailable", "queued", "messagesSent", "messagesReceived", "unconfirmed",
        "lastUnconfirmed", "interrupted"}


# ---- sending: rate limit, outbox, idempotency ------------------------------------------

def test_rate_limit_refusal_carries_retry_after(board_factory, network):
    settings = SessionSettings(backoff=FAST_BACKOFF, rate_limit=RateLimit(3, 60.0, 2))
    board = board_factory(network, settings=settings)
    w = StateWaiter(board)
    link(board, w, "acme")
    session = board.session("acme")
    started = time.monotonic()
    session.send("79000000001", "1").get(timeout=5)
    session.send("79000000001", "2").get(timeout=5)
    with pytest.raises(RateLimited) as per_recipient:
        session.send("79000000001", "3").get(timeout=5)
    assert per_recipient.value.scope == "recipient"
    session.send("79000000002", "4").get(timeout=5)
    with pytest.raises(RateLimited) as per_company:
        session.send("79000000003", "5").get(timeout=5)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert per_company.value.scope == "company"
    assert 60_000 - elapsed_ms - 50 <= per_company.value.retry_after_ms <= 60_000
    assert w.status("acme")["queued"] == 0
    w.close()


def test_sends_while_reconnecting_are_queued_and_delivered_in_order(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "refuse", seconds=0.3)
    waiter.state("acme", "reconnecting")
    session = board.session("acme")
    receipts = [session.send("79001234567", f"m{i}").get(timeout=5) for i in range(5)]
    assert all(r.queued for r in receipts)
    assert waiter.status("acme")["queued"] == 5
    for receipt in receipts:
        receipt.delivered.result(timeout=5)
    assert [m["text"] for m in board.network.messages("79001234567")] == [f"m{i}" for i in range(5)]
    waiter.until("acme", lambda s: s["queued"] == 0 and s["messagesSent"] == 5)


def test_send_refused_when_not_linked_or_stopped(board, waiter):
    session = board.session("acme")
    with pytest.raises(SessionUnavailable, match="stopped"):
        session.send("79001234567", "x").get(timeout=5)
    session.start().get(timeout=5)
    waiter.state("acme", "qr")
    with pytest.raises(SessionUnavailable, match="scan the QR"):
        session.send("79001234567", "x").get(timeout=5)
    assert waiter.status("acme")["queued"] == 0


def test_idempotency_key_never_sends_twice(board, waiter):
    link(board, waiter, "acme")
    session = board.session("acme")
    first = session.send("79001234567", "once", "order-1").get(timeout=5)
    first.delivered.result(timeout=5)
    again = session.send("79001234567", "once", "order-1").get(timeout=5)
    assert again.id == first.id and again.message_id == first.delivered.result()
    assert len(board.network.messages("79001234567")) == 1


def test_outbox_survives_a_gateway_restart(board_factory, tmp_path):
    network = make_network()
    data = tmp_path / "data"
    board = board_factory(network, data_dir=data)
    w = StateWaiter(board)
    link(board, w, "acme")
    network.fault("acme", "refuse", seconds=0.5)
    w.state("acme", "reconnecting")
    receipt = board.session("acme").send("79001234567", "kept").get(timeout=5)
    assert receipt.queued
    w.close()
    board.stop()
    assert network.messages("79001234567") == []
    board2 = board_factory(network, data_dir=data)      # restores the running session
    w2 = StateWaiter(board2)
    w2.until("acme", lambda s: s["status"] == "connected" and s["queued"] == 0, timeout=5)
    assert [m["text"] for m in network.messages("79001234567")] == ["kept"]
    w2.close()


def test_disk_full_refuses_the_send_and_keeps_nothing(board, waiter, monkeypatch):
    from switchboard.actors import journal

    link(board, waiter, "acme")

    def full(self, record):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(journal.Journal, "append", full)
    from switchboard.actors.errors import OutboxUnavailable
    with pytest.raises(OutboxUnavailable, match="No space left"):
        board.session("acme").send("79001234567", "x").get(timeout=5)
    assert waiter.status("acme")["queued"] == 0
    assert board.network.messages("79001234567") == []




def test_inbound_duplicates_are_delivered_once(board, waiter):
    link(board, waiter, "acme")
    seen = []
    board.on_message(lambda m: seen.append(m.id))
    for _ in range(3):
        board.network.deliver_inbound("acme", "79001234567", "hi", message_id="3EB0DUP")
    board.network.deliver_inbound("acme", "79001234567", "other", message_id="3EB0OTHER")
    waiter.until("acme", lambda s: s["messagesReceived"] == 2)
    board.bus.flush()
    assert seen == ["3EB0DUP", "3EB0OTHER"]


def test_offline_inbound_is_delivered_on_reconnect(board, waiter):
    link(board, waiter, "acme")
    board.session("acme").stop().get(timeout=5)
    board.network.deliver_inbound("acme", "79001234567", "while away")
    board.session("acme").start().get(timeout=5)
    waiter.until("acme", lambda s: s["status"] == "connected" and s["messagesReceived"] == 1)


def test_ownership_lock_keeps_a_second_gateway_off_the_company(board_factory, tmp_path):
    network = make_network()
    data = tmp_path / "shared"
    first = board_factory(network, data_dir=data)
    w1 = StateWaiter(first)
    link(first, w1, "acme")
    second = board_factory(network, data_dir=data, restore=False)
    w2 = StateWaiter(second)
    second.session("acme").start().get(timeout=5)
    status = w2.until("acme", lambda s: s["status"] == "reconnecting" and s["reconnectAttempts"] >= 2)
    assert "another process holds this company" in status["lastError"]
    assert network.max_seen("acme") == 1
    assert w1.status("acme")["status"] == "connected"
    # it keeps trying (never `failed`): once the first gateway is gone, it takes the company over
    first.stop()
    w2.state("acme", "connected", timeout=5)
    assert network.max_seen("acme") == 1
    w1.close()
    w2.close()


def test_session_json_records_desired_state(board, waiter):
    link(board, waiter, "acme")
    saved = json.loads((board.data_dir / "acme" / "session.json").read_text())
    assert saved["desired"] == "running" and saved["phone"] == "79990001122"
    board.session("acme").stop().get(timeout=5)
    assert json.loads((board.data_dir / "acme" / "session.json").read_text())["desired"] == "stopped"


# ---- helpers ---------------------------------------------------------------------------


def test_events_during_a_pending_logout_finish_the_logout(holding):
    board, waiter, transport = holding
    link(board, waiter, "acme")
    transport.hold["logout"] = True
    board.session("acme").logout().get(timeout=5)
    board.network.fault("acme", "drop")                 # the link drops before WhatsApp confirms
    assert_stays(waiter, "acme", "logged_out", FAST_BACKOFF.worst_case_total())
    assert not (board.data_dir / "acme" / CREDENTIALS_FILE).exists()
    assert board.network.live_count("acme") == 0


def test_ban_without_expiry_does_not_loop(board_factory, tmp_path):
    transport = ScriptedTransport([TemporaryBan(0)])
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport)
    w = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    status = w.state("acme", "banned")
    assert f"for {FAST_BACKOFF.cap:g} s" in status["lastError"]
    assert_stays(w, "acme", "banned", FAST_BACKOFF.cap / 2)
    assert transport.opened == 1
    assert board.session("acme").start().get(timeout=5)["status"] == "banned"    # start waits for the ban
    w.close()


def test_a_failed_create_leaves_nothing_held(board, monkeypatch):
    """The disk refuses the company's files: the actor gives up without a directory, a
    descriptor or a thread left behind, and the company ends parked with the reason."""
    import errno

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    threads_before = {t.name for t in threading.enumerate()}
    monkeypatch.setattr("switchboard.actors.session.SendQueue", full_disk)
    gave_up = threading.Event()
    board.on_event(lambda e: "even parked" in e.data["error"] and gave_up.set(), kinds=("gave_up",),
                   company_id="newco")
    board.supervisor.ensure("newco").get(timeout=5)
    assert gave_up.wait(10)
    status = next(s for s in board.statuses() if s["companyId"] == "newco")
    assert status["status"] == "failed" and "No space left" in status["lastError"]
    assert not (board.data_dir / "newco").exists()
    assert not {path for path in open_paths() if "/newco" in path}
    actor_threads = [t for t in threading.enumerate()
                     if t.name not in threads_before and t.name.startswith("SessionActor")]
    for thread in actor_threads:          # the last one may still be returning from on_start
        thread.join(5)
    assert not [t.name for t in actor_threads if t.is_alive()]
