"""The session actor against real WhatsApp's behaviour (issue 8, the actor's side): a
slow send never goes out twice, an outage never strands a company, a link the transport
heals by itself is waited for, nothing a closing connection still receives is lost, and
pairing cannot hang. Each test here failed on the code before these changes."""
from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest
import webtest

from switchboard.actors.connection import Cause, ConnectFailure, LoggedOut, Paired, QrCode, SendError
from switchboard.actors.errors import SessionUnavailable
from switchboard.actors.phone import InvalidInput, normalize_phone

from .support.http import ADMIN_KEY, build_app, running_board, wait_until
from .support.sessions import (FAST_SETTINGS, HealingTransport, HoldingTransport, ScriptedTransport,
                               SlowClosingTransport, StateWaiter, assert_stays, link, make_network)

ADMIN = {"X-API-Key": ADMIN_KEY}
RECIPIENT = "79001234567"


def events_of(board, kind, company_id="acme"):
    seen, changed = [], threading.Condition()

    def on(event):
        with changed:
            seen.append(event.data)
            changed.notify_all()
    board.on_event(on, kinds=(kind,), company_id=company_id)

    def wait(count=1, timeout=5.0):
        with changed:
            assert changed.wait_for(lambda: len(seen) >= count, timeout), f"{kind}: {seen}"
        return seen
    return wait


# ---- 1. a slow send never goes out twice ------------------------------------------------------

def test_a_send_with_no_answer_in_time_is_unconfirmed_not_resent(board_factory, tmp_path):
    settings = dataclasses.replace(FAST_SETTINGS, send_timeout=0.3, health_interval=0.05)
    board = board_factory(make_network(), settings=settings, data_dir=tmp_path / "d")
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    unconfirmed, sent = events_of(board, "message.unconfirmed"), events_of(board, "message.sent")
    board.network.fault("acme", "latency", seconds=1.5)         # the answer comes after send_timeout
    receipt = board.session("acme").send(RECIPIENT, "once").get(timeout=5)
    (event,) = unconfirmed()
    assert event["id"] == receipt.id and "may have been delivered" in event["error"]
    with pytest.raises(SendError) as answer:
        receipt.delivered.result(timeout=1)
    assert answer.value.unconfirmed and not answer.value.retryable
    status = waiter.status("acme")
    assert status["unconfirmed"] == 1 and status["lastUnconfirmed"] == [receipt.id] and status["queued"] == 0
    (late,) = sent(timeout=5)                                  # WhatsApp took it after all
    assert late["id"] == receipt.id and late["late"] is True
    assert [m["text"] for m in board.network.messages(RECIPIENT)] == ["once"]     # once, never twice
    waiter.close()


def test_only_retryable_send_errors_are_retried(holding):
    board, waiter, transport = holding
    link(board, waiter, "acme")
    transport.hold["unconfirmed"] = True
    receipt = board.session("acme").send(RECIPIENT, "maybe").get(timeout=5)
    with pytest.raises(SendError) as answer:
        receipt.delivered.result(timeout=5)
    assert answer.value.unconfirmed and "link lost mid-request" in str(answer.value)
    transport.hold["unconfirmed"] = False
    waiter.until("acme", lambda s: s["unconfirmed"] == 1 and s["queued"] == 0)
    # the next send goes out; the unconfirmed one never does
    board.session("acme").send(RECIPIENT, "next").get(timeout=5).delivered.result(timeout=5)
    assert [m["text"] for m in board.network.messages(RECIPIENT)] == ["next"]


def test_an_unconfirmed_send_stays_unconfirmed_after_a_restart(tmp_path):
    """The gateway ends while WhatsApp has not answered (a kill, a frozen link): the next
    start must not hand it over again. It is reported instead."""
    network = make_network()
    transport = HoldingTransport(network)
    transport.pins_message_ids = False       # as neonize: a repeat would be a new message
    transport.hold.update(sends=True, keep_on_close=True)
    board = _board(tmp_path, transport)
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    receipt = board.session("acme").send(RECIPIENT, "in flight", idempotency_key="k-1").get(timeout=5)
    waiter.close()
    board.stop()
    # the same data, a transport that answers at once
    answering = HoldingTransport(network)
    answering.pins_message_ids = False
    board = _board(tmp_path, answering)
    waiter = StateWaiter(board)
    status = waiter.state("acme", "connected")
    board.bus.flush()
    log = [json.loads(line) for line in (tmp_path / "data" / "supervisor.log").read_text().splitlines()]
    (event,) = [r for r in log if r["event"] == "message.unconfirmed"]       # published at start
    assert event["id"] == receipt.id and "gateway stopped" in event["error"]
    assert status["unconfirmed"] == 1 and status["lastUnconfirmed"] == [receipt.id] and status["queued"] == 0
    # the same key answers the same unknown outcome, and still sends nothing
    again = board.session("acme").send(RECIPIENT, "in flight", idempotency_key="k-1").get(timeout=5)
    assert again.id == receipt.id and not again.queued
    with pytest.raises(SendError) as answer:
        again.delivered.result(timeout=1)
    assert answer.value.unconfirmed
    # a person who knows it did not arrive sends it again on purpose: a new key
    board.session("acme").send(RECIPIENT, "in flight", idempotency_key="k-2").get(timeout=5).delivered.result(5)
    assert [m["text"] for m in network.messages(RECIPIENT)] == ["in flight"]
    waiter.close()
    board.stop()
    network.close()


def test_a_send_cut_off_by_a_restart_goes_out_once_where_the_transport_pins_its_id(tmp_path):
    """The simulated WhatsApp sends under the outbox's own message id: the next start hands
    the entry over again, and the recipient gets it once even if the first try arrived."""
    network = make_network()
    transport = HoldingTransport(network)
    assert transport.pins_message_ids
    transport.hold.update(sends=True, keep_on_close=True)
    board = _board(tmp_path, transport)
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    board.session("acme").send(RECIPIENT, "in flight", idempotency_key="k-1").get(timeout=5)
    waiter.close()
    board.stop()
    board = _board(tmp_path, HoldingTransport(network))
    waiter = StateWaiter(board)
    waiter.state("acme", "connected")
    assert wait_until(lambda: [m["text"] for m in network.messages(RECIPIENT)] == ["in flight"], timeout=10)
    assert waiter.state("acme", "connected")["unconfirmed"] == 0
    waiter.close()
    board.stop()
    network.close()


def test_a_waiting_http_caller_is_told_the_outcome_is_unknown(tmp_path):
    transport = HoldingTransport(make_network())
    with running_board(tmp_path / "data", transport=transport) as board:
        app = build_app(board, tmp_path / "data")
        web = webtest.TestApp(app)
        web.post_json("/api/whatsapp/sessions", {"companyId": "962302"}, headers=ADMIN)
        transport.network.scan("962302", "79990001122")
        waiter = StateWaiter(board)
        waiter.state("962302", "connected")
        transport.hold["unconfirmed"] = True
        headers = {**ADMIN, "Idempotency-Key": "order-1"}
        res = web.post_json("/api/whatsapp/sessions/962302/messages", {"to": RECIPIENT, "message": "hi"},
                            headers=headers)
        assert res.status_int == 202
        assert res.json["status"] == "unconfirmed" and res.json["messageId"] is None
        assert "outcome is unknown" in res.json["error"]
        transport.hold["unconfirmed"] = False
        again = web.post_json("/api/whatsapp/sessions/962302/messages", {"to": RECIPIENT, "message": "hi"},
                              headers=headers)
        assert again.status_int == 202 and again.json["status"] == "unconfirmed" and again.json["id"] == res.json["id"]
        assert transport.network.messages(RECIPIENT) == []
        status = web.get("/api/whatsapp/sessions/962302/status", headers=ADMIN).json
        assert status["unconfirmed"] == 1 and status["lastUnconfirmed"] == [res.json["id"]]
        waiter.close()
        app.switchboard.close()


def test_the_default_send_timeout_outlasts_whatsmeows_own():
    from switchboard.actors.context import SessionSettings
    assert SessionSettings().send_timeout > 75


# ---- 2. an outage never strands a company ----------------------------------------------------

def test_a_failed_session_comes_back_after_a_gateway_restart(tmp_path):
    """`failed` (a cause an operator must fix, e.g. an upgrade) no longer sets the desired
    state to stopped: the restarted gateway tries again."""
    transport = ScriptedTransport([ConnectFailure("client outdated (405)", Cause.CLIENT_OUTDATED)])
    board = _board(tmp_path, transport)
    waiter = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    assert waiter.state("acme", "failed")["lastError"] == "client outdated (405)"
    waiter.close()
    board.stop()
    transport = ScriptedTransport([QrCode("2@fixed", 60)])
    board = _board(tmp_path, transport)
    waiter = StateWaiter(board)
    waiter.state("acme", "qr")
    assert transport.opened == 1
    waiter.close()
    board.stop()


# ---- 3. a link the transport heals by itself ----------------------------------------------------

def test_an_interrupted_link_is_kept_and_resumes_without_a_new_connection(board_factory, tmp_path):
    transport = HealingTransport(make_network())
    settings = dataclasses.replace(FAST_SETTINGS, reconnect_grace=30.0)
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport, settings=settings)
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    transport.interrupt()
    status = waiter.state("acme", "reconnecting")
    assert status["interrupted"] is True and status["reconnectAttempts"] == 0 and status["nextRetryAt"] is None
    assert "waiting up to 30 s" in status["lastError"]
    receipt = board.session("acme").send(RECIPIENT, "while interrupted").get(timeout=5)
    assert receipt.queued and transport.network.messages(RECIPIENT) == []      # sending paused
    transport.heal()
    assert receipt.delivered.result(timeout=5)
    status = waiter.state("acme", "connected")
    assert status["reconnectAttempts"] == 0 and status["interrupted"] is False
    assert len(transport.connections) == 1 and transport.network.max_seen("acme") == 1
    waiter.close()


def test_an_interruption_past_its_grace_reconnects_with_backoff(board_factory, tmp_path):
    transport = HealingTransport(make_network())
    settings = dataclasses.replace(FAST_SETTINGS, reconnect_grace=0.2)
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport, settings=settings)
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    transport.interrupt()
    waiter.until("acme", lambda s: s["status"] == "reconnecting" and s["reconnectAttempts"] == 1)
    status = waiter.state("acme", "connected")
    assert len(transport.connections) == 2 and not transport.connections[0].alive()
    assert transport.network.max_seen("acme") == 1            # never two of our links
    assert status["interrupted"] is False
    waiter.close()


def test_a_keepalive_black_hole_waits_longer_so_whatsmeows_backstop_acts_first(board_factory, tmp_path):
    transport = HealingTransport(make_network())
    settings = dataclasses.replace(FAST_SETTINGS, reconnect_grace=0.05, keepalive_grace=30.0)
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport, settings=settings)
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    transport.interrupt(Cause.KEEPALIVE)
    assert "waiting up to 30 s" in waiter.state("acme", "reconnecting")["lastError"]
    assert_stays(waiter, "acme", "reconnecting", 0.4)        # well past reconnect_grace
    transport.heal()
    waiter.state("acme", "connected")
    assert len(transport.connections) == 1
    waiter.close()


# ---- 4. nothing a closing connection still receives is lost ------------------------------------

@pytest.mark.parametrize("how", ["delete", "shutdown"])
def test_inbound_from_a_closing_link_reaches_subscribers_after_the_actor_stopped(board_factory, tmp_path, how):
    transport = SlowClosingTransport(make_network())
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport)
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    received, got = [], threading.Event()
    board.on_message(lambda m: (received.append(m.text), got.set()))
    stopping = threading.Thread(target=board.remove if how == "delete" else board.stop,
                                kwargs={"company_id": "acme", "logout": False} if how == "delete" else {})
    stopping.start()
    assert transport.close_called.wait(5)
    # the actor is stopping, its link still lives: WhatsApp hands it a message it will not resend
    transport.network.deliver_inbound("acme", "79005550000", "just in time")
    assert got.wait(5), "a message from the closing link was lost"
    assert received == ["just in time"]
    transport.finish_all()
    stopping.join(10)
    assert not stopping.is_alive()
    waiter.close()


# ---- 5. pairing ----------------------------------------------------------------------------------

def test_paired_but_never_connected_reconnects_and_the_spent_qr_is_gone(board_factory, tmp_path):
    transport = ScriptedTransport([[QrCode("2@one", 60), Paired("79990001122")], [Paired("79990001122")]])
    settings = dataclasses.replace(FAST_SETTINGS, pair_timeout=0.3)
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport, settings=settings)
    waiter = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    status = waiter.until("acme", lambda s: s["phoneNumber"] == "+79990001122")
    assert status["status"] == "starting" and status["qrAvailable"] is False
    assert board.session("acme").qr().get(timeout=5) is None
    status = waiter.state("acme", "reconnecting", timeout=5)
    assert "did not finish the login within 0.3 s" in status["lastError"]
    waiter.until("acme", lambda _s: transport.opened == 2)
    waiter.close()


def test_a_pairing_code_comes_with_its_expiry(board_factory, tmp_path):
    transport = HealingTransport(make_network())
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport,
                          settings=dataclasses.replace(FAST_SETTINGS, pair_code_window=160.0))
    waiter = StateWaiter(board)
    session = board.session("acme")
    session.start().get(timeout=5)
    waiter.state("acme", "qr")
    before = time.time()
    code = session.pair_phone("+7 999 000-11-22").get(timeout=5).result(timeout=5)
    # the simulator says how long its QR session has left (a real one: about 160 s from the first code)
    assert code.code and before < code.expires_at <= time.time() + 160 and code.as_dict()["expiresAt"]
    assert len(transport.connections) == 1                     # a young QR session: the same one
    waiter.close()


def test_a_late_pairing_code_request_opens_a_fresh_qr_session(board_factory, tmp_path):
    transport = HealingTransport(make_network())
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport,
                          settings=dataclasses.replace(FAST_SETTINGS, pair_code_fresh=0.0))
    waiter = StateWaiter(board)
    session = board.session("acme")
    session.start().get(timeout=5)
    waiter.state("acme", "qr")
    code = session.pair_phone("79990001122").get(timeout=5).result(timeout=5)
    assert code.code and len(transport.connections) == 2 and not transport.connections[0].alive()
    assert transport.network.max_seen("acme") == 1
    # the fresh session is the one the phone enters the code into
    transport.network.scan("acme")
    assert waiter.state("acme", "connected")["phoneNumber"] == "+79990001122"
    waiter.close()


@pytest.mark.parametrize("bad", ["0791234567", "+0 79 123 4567", "0079001234567", "0791234567@s.whatsapp.net"])
def test_numbers_that_are_not_international_are_refused(bad):
    with pytest.raises(InvalidInput):
        normalize_phone(bad)


def test_a_pairing_code_for_a_national_number_is_a_clear_400(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        web = webtest.TestApp(app)
        web.post_json("/api/whatsapp/sessions", {"companyId": "962302"}, headers=ADMIN)
        res = web.post_json("/api/whatsapp/sessions/962302/pairing-code", {"phone": "0791234567"},
                            headers=ADMIN, expect_errors=True)
        assert res.status_int == 400 and "international" in res.json["error"]
        app.switchboard.close()


# ---- 6. reasons ----------------------------------------------------------------------------------

@pytest.mark.parametrize("code, words", [(403, "locked"), (406, "banned"), (None, "scan a new QR code")])
def test_logged_out_reasons_are_told_apart(board_factory, tmp_path, code, words):
    transport = ScriptedTransport([LoggedOut("main_device_gone", code=code)])
    board = board_factory(data_dir=tmp_path / "d", transport_override=transport)
    waiter = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    status = waiter.state("acme", "logged_out")
    assert words in status["lastError"]
    with pytest.raises(SessionUnavailable, match=words):
        board.session("acme").send(RECIPIENT, "x").get(timeout=5)
    waiter.close()


def test_a_logout_whatsapp_was_not_told_says_so(holding):
    board, waiter, transport = holding
    link(board, waiter, "acme")
    transport.hold["logout_fails"] = True
    board.session("acme").logout().get(timeout=5)
    status = waiter.until("acme", lambda s: s["status"] == "logged_out" and "not told" in (s["lastError"] or ""))
    assert "Linked devices" in status["lastError"] and "the logout request failed" in status["lastError"]


def _board(tmp_path, transport):
    from switchboard.supervision import Switchboard
    from .support.sessions import FAST_RESTARTS
    return Switchboard(data_dir=tmp_path / "data", transport=transport, settings=FAST_SETTINGS,
                       restart_policy=FAST_RESTARTS).start()


# ---- the same gaps through the simulator's own faults ----------------------------------------

def test_simulator_slow_answer_past_whatsmeows_deadline_is_unconfirmed_and_sent_once(board_factory, tmp_path):
    network = make_network(ack_deadline=0.3)            # whatsmeow's 75 s, scaled down
    board = board_factory(network, data_dir=tmp_path / "d")
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    unconfirmed = events_of(board, "message.unconfirmed")
    network.fault("acme", "slow", seconds=1.0)
    receipt = board.session("acme").send(RECIPIENT, "slow").get(timeout=5)
    (event,) = unconfirmed()
    assert event["id"] == receipt.id
    assert waiter.until("acme", lambda s: s["unconfirmed"] == 1)["queued"] == 0
    network.fault("acme", "slow", seconds=0)
    board.session("acme").send(RECIPIENT, "after").get(timeout=5).delivered.result(timeout=5)
    assert [m["text"] for m in network.messages(RECIPIENT)] == ["slow", "after"]     # "slow" once
    waiter.close()


@pytest.mark.parametrize("fault", ["interrupt", "blackhole"])
def test_simulator_interruption_heals_on_the_same_link(board_factory, tmp_path, fault):
    network = make_network()
    board = board_factory(network, data_dir=tmp_path / "d")
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    network.fault("acme", fault, seconds=0.5)
    status = waiter.state("acme", "reconnecting")
    assert status["interrupted"] is True and status["reconnectAttempts"] == 0
    status = waiter.state("acme", "connected", timeout=5)
    assert status["reconnectAttempts"] == 0
    assert network.max_seen("acme") == 1
    waiter.close()


def test_simulator_pair_stall_is_caught_by_the_watch_and_the_stored_credentials_connect(board_factory, tmp_path):
    network = make_network()
    board = board_factory(network, data_dir=tmp_path / "d", settings=dataclasses.replace(FAST_SETTINGS,
                                                                                          pair_timeout=0.3))
    waiter = StateWaiter(board)
    board.session("acme").start().get(timeout=5)
    waiter.state("acme", "qr")
    network.fault("acme", "pair-stall", seconds=1)
    network.scan("acme", "79990001122")
    status = waiter.until("acme", lambda s: s["status"] == "reconnecting" and "did not finish" in s["lastError"])
    assert status["qrAvailable"] is False
    assert waiter.state("acme", "connected", timeout=5)["phoneNumber"] == "+79990001122"
    waiter.close()


def test_simulator_logout_as_banned_says_banned(board, waiter):
    link(board, waiter, "acme")
    board.network.fault("acme", "logout", code=406)
    error = waiter.state("acme", "logged_out")["lastError"]
    assert "banned" in error and "appeal to WhatsApp" in error      # not "scan a new QR code"
