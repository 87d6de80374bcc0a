"""Shared fixtures: a gateway on the simulated network with tiny timings, and helpers
that await events instead of sleeping."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.ratelimit import RateLimit
from switchboard.actors.session import SessionSettings
from switchboard.actors.transports.simulated import SimulatedNetwork
from switchboard.supervision import Switchboard
from switchboard.supervision.supervisor import RestartPolicy

FAST_BACKOFF = BackoffPolicy(base=0.05, factor=2.0, cap=0.2, jitter=0.2, max_attempts=5, stable_after=0.3)
FAST_SETTINGS = SessionSettings(backoff=FAST_BACKOFF, rate_limit=RateLimit(1000, 60.0, 1000),
                                health_interval=0.2, connect_timeout=2.0, logout_timeout=1.0)
FAST_RESTARTS = RestartPolicy(backoff=BackoffPolicy(base=0.02, factor=2.0, cap=0.1, jitter=0.2,
                                                    stable_after=5.0),
                              max_restarts=3, period=10.0, sweep_interval=0.2)


def make_network(**overrides) -> SimulatedNetwork:
    options = {"qr_first": 5.0, "qr_next": 2.0, "qr_count": 3, **overrides}
    return SimulatedNetwork(**options)


@pytest.fixture
def network():
    net = make_network()
    yield net
    net.close()


@pytest.fixture
def board_factory(tmp_path):
    boards: list[Switchboard] = []

    def make(network: SimulatedNetwork | None = None, settings: SessionSettings = FAST_SETTINGS,
             data_dir: Path | None = None, restart_policy: RestartPolicy = FAST_RESTARTS,
             transport_override=None, **kw) -> Switchboard:
        board = Switchboard(data_dir=data_dir or tmp_path / "data", transport=transport_override or "simulated",
                            network=None if transport_override else network or make_network(), settings=settings,
                            restart_policy=restart_policy, **kw)
        boards.append(board.start())
        return board

    yield make
    for board in boards:
        board.stop()


@pytest.fixture
def board(board_factory, network):
    return board_factory(network)


class StateWaiter:
    """Waits for a session to reach a state, woken by the board's events (no polling)."""

    def __init__(self, board: Switchboard) -> None:
        self.board = board
        self._cv = threading.Condition()
        self._unsubscribe = board.on_event(self._wake)

    def _wake(self, _event) -> None:
        with self._cv:
            self._cv.notify_all()

    def status(self, company_id: str) -> dict:
        return self.board.session(company_id, create=False).status().get(timeout=5)

    def until(self, company_id: str, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                try:
                    status = self.status(company_id)
                except Exception:
                    status = {"status": "restarting"}
                if predicate(status):
                    return status
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{company_id}: condition not met within {timeout} s; last {status}")
                # Events wake us; the short cap covers a change that published no event.
                self._cv.wait(min(left, 0.05))

    def state(self, company_id: str, state: str, timeout: float = 5.0) -> dict:
        return self.until(company_id, lambda s: s["status"] == state, timeout)

    def close(self) -> None:
        self._unsubscribe()


@pytest.fixture
def waiter(board):
    w = StateWaiter(board)
    yield w
    w.close()


def link(board: Switchboard, waiter: StateWaiter, company_id: str, phone: str = "79990001122") -> dict:
    """Start a company's session, scan its QR as `phone`, and wait until connected."""
    board.session(company_id).start().get(timeout=5)
    waiter.state(company_id, "qr")
    board.network.scan(company_id, phone)
    return waiter.state(company_id, "connected")


# ---- a throwaway redis-server for the tests that need one -------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing; scripts/test installs it")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
