"""Shared fixtures: a gateway on the simulated network with tiny timings, and a
throwaway redis-server. The helpers they use live in tests/support/."""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from switchboard.actors.context import SessionSettings
from switchboard.actors.transports.simulated import SimulatedNetwork
from switchboard.supervision import Switchboard
from switchboard.supervision.supervisor import RestartPolicy

from .support.sessions import FAST_BACKOFF, FAST_RESTARTS, FAST_SETTINGS, HoldingTransport, StateWaiter, make_network


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


@pytest.fixture
def holding(board_factory, tmp_path):
    transport = HoldingTransport(make_network())
    patient = dataclasses.replace(FAST_SETTINGS, backoff=dataclasses.replace(FAST_BACKOFF, max_attempts=50))
    board = board_factory(data_dir=tmp_path / "h", transport_override=transport, settings=patient)
    waiter = StateWaiter(board)
    yield board, waiter, transport
    waiter.close()


@pytest.fixture
def waiter(board):
    w = StateWaiter(board)
    yield w
    w.close()


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
