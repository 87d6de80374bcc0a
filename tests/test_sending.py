"""The send path: retries, idempotency keys, and what counts as bad input."""
from __future__ import annotations

import pytest

from switchboard.actors.phone import InvalidInput

from .support.sessions import link


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


def test_idempotency_key_reused_for_another_message_is_refused(board, waiter):
    link(board, waiter, "acme")
    session = board.session("acme")
    session.send("79001234567", "hi", "k1").get(timeout=5).delivered.result(timeout=5)
    with pytest.raises(InvalidInput, match="different message"):
        session.send("79001234568", "different", "k1").get(timeout=5)
    assert session.send("79001234567", "hi", "k1").get(timeout=5).message_id   # a true retry is fine
    assert board.network.messages("79001234568") == []


def test_lone_surrogate_is_bad_input(board, waiter):
    link(board, waiter, "acme")
    with pytest.raises(InvalidInput, match="Unicode"):
        board.session("acme").send("79001234567", "\ud800").get(timeout=5)
    assert waiter.status("acme")["queued"] == 0
