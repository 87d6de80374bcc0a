"""SessionActor and supervisor over real neonize child processes, offline.

Every child dials through a proxy on 127.0.0.1 (refusing or holding), so nothing leaves
the machine. After each test no child process remains and neonize was never imported
into the gateway process.
"""
from __future__ import annotations

import os
import signal
import sys

import pytest

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.transports.neonize import NeonizeTransport
from switchboard.actors.context import SessionSettings
from switchboard.actors.messages import InjectedCrash
from switchboard.supervision import Switchboard

from .support.neonize import (NETWORK_FAILURE_WORDS, hold_proxy, refused_proxy_url,  # noqa: F401
                              session_children, wait_until)

pytestmark = pytest.mark.timeout(90)

SETTINGS = SessionSettings(backoff=BackoffPolicy(base=0.3, factor=2, cap=1.0, jitter=0.2, max_attempts=20),
                           health_interval=0.5)


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_until(lambda: not session_children(), 10), f"session processes left: {session_children()}"
    assert not any(m == "neonize" or m.startswith("neonize.") for m in sys.modules)


@pytest.fixture
def make_board(board_factory):
    def make(proxy: str) -> Switchboard:
        return board_factory(transport_override=NeonizeTransport(proxy=proxy, stop_grace=1.0), settings=SETTINGS)
    return make


def test_offline_connect_failure_becomes_reconnecting_with_the_network_error(make_board):
    board = make_board(refused_proxy_url())
    session = board.session("acme")
    assert session.start().get(timeout=5)["status"] == "starting"     # answers at once
    status = session.wait_for("reconnecting", timeout=30)
    assert any(word in status["lastError"] for word in NETWORK_FAILURE_WORDS), status["lastError"]
    assert status["nextRetryAt"] is not None
    # it keeps retrying in new children, with growing delays
    session.wait_for("starting", timeout=10)
    again = session.wait_for("reconnecting", timeout=30)
    assert again["reconnectAttempts"] >= 2
    store = board.data_dir / "acme" / "whatsapp.sqlite3"
    assert store.exists() and store.stat().st_mode & 0o777 == 0o600
    assert (board.data_dir / "acme").stat().st_mode & 0o777 == 0o700
    session.stop().get(timeout=10)


def test_killed_child_is_replaced_with_backoff(make_board, hold_proxy):
    board = make_board(hold_proxy.url)
    session = board.session("acme")
    session.start().get(timeout=5)
    hold_proxy.wait_clients(1)
    children = session_children()
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    status = session.wait_for("reconnecting", timeout=20)
    assert "SIGKILL" in status["lastError"] or "-9" in status["lastError"], status["lastError"]
    hold_proxy.wait_clients(2)                                 # a new child dials again
    assert wait_until(lambda: session_children() and session_children()[0] != children[0], 10)
    assert len(session_children()) == 1


def test_supervisor_restart_ends_the_crashed_actors_child(make_board, hold_proxy):
    board = make_board(hold_proxy.url)
    session = board.session("acme")
    session.start().get(timeout=5)
    hold_proxy.wait_clients(1)
    first = session_children()
    board.directory.refs["acme"].tell(InjectedCrash("bug"))
    hold_proxy.wait_clients(2)                                 # the restarted actor connects again
    assert wait_until(lambda: len(session_children()) == 1 and session_children() != first, 10)


def test_stop_and_remove_leave_no_process(make_board, hold_proxy):
    board = make_board(hold_proxy.url)
    for company in ("a1", "a2", "a3"):
        board.session(company).start().get(timeout=5)
    hold_proxy.wait_clients(3)
    assert len(session_children()) == 3
    board.session("a1").stop().get(timeout=10)
    assert wait_until(lambda: len(session_children()) == 2, 10)
    assert board.remove("a2") is True
    assert not (board.data_dir / "a2").exists()
    assert wait_until(lambda: len(session_children()) == 1, 10)
    board.stop()
    assert wait_until(lambda: not session_children(), 10)
