"""Ownership: one live connection per company, even while an old one is still closing
or a lock is held elsewhere; and an actor never waits for a connection to close."""
from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest

from .support.sessions import SlowClosingTransport, StateWaiter, link, make_network


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


@pytest.fixture
def slow(board_factory, tmp_path):
    transport = SlowClosingTransport(make_network())
    board = board_factory(data_dir=tmp_path / "slow", transport_override=transport)
    waiter = StateWaiter(board)
    yield board, waiter, transport
    waiter.close()
    transport.finish_all()


def _lock_is_free(path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def test_stop_answers_at_once_while_the_connection_closes_and_keeps_ownership_until_it_is_gone(slow):
    board, waiter, transport = slow
    link(board, waiter, "acme")
    session = board.session("acme")
    started = time.monotonic()
    assert session.stop().get(timeout=5)["status"] == "stopped"
    assert session.status().get(timeout=5)["status"] == "stopped"
    assert time.monotonic() - started < 1.0               # nobody waited for the socket
    assert len(transport.closing) == 1 and board.network.live_count("acme") == 1
    lock = board.data_dir / "acme" / "owner.lock"
    assert not _lock_is_free(lock)                        # the old socket still lives: still ours
    assert session.diagnostics().get(timeout=5)["ownershipLockHeld"] is True
    transport.finish_all()
    deadline = time.monotonic() + 5
    while not _lock_is_free(lock):                        # released on the actor's next turn
        assert time.monotonic() < deadline, "ownership was never released"
        threading.Event().wait(0.01)
    assert board.network.live_count("acme") == 0


def test_a_new_connection_waits_for_the_old_one_to_be_gone(slow):
    board, waiter, transport = slow
    link(board, waiter, "acme")
    session = board.session("acme")
    assert session.reconnect().get(timeout=5)["status"] == "starting"
    assert transport.opened == 1                           # not a second socket yet
    waiter.until("acme", lambda s: s["status"] == "starting")
    transport.finish_all()
    waiter.state("acme", "connected")
    assert transport.opened == 2 and board.network.max_seen("acme") == 1


def test_messages_a_closing_connection_still_receives_are_delivered(slow):
    board, waiter, transport = slow
    link(board, waiter, "acme")
    got = threading.Event()
    board.on_message(lambda message: message.text == "late" and got.set())
    board.session("acme").stop().get(timeout=5)
    board.network.deliver_inbound("acme", "79001234567", "late")     # still reaches the closing socket
    assert got.wait(5)
