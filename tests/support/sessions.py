"""Helpers for tests of sessions on the simulated network: tiny timings, waiting on
events instead of sleeping, and scripted or holding transports."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future
from typing import Callable

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.connection import Cause, Connected, Interrupted, SendError
from switchboard.actors.context import SessionSettings
from switchboard.actors.ratelimit import RateLimit
from switchboard.actors.transports.simulated import SimulatedConnection, SimulatedNetwork, SimulatedTransport
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


def link(board: Switchboard, waiter: StateWaiter, company_id: str, phone: str = "79990001122") -> dict:
    """Start a company's session, scan its QR as `phone`, and wait until connected."""
    board.session(company_id).start().get(timeout=5)
    waiter.state(company_id, "qr")
    board.network.scan(company_id, phone)
    return waiter.state(company_id, "connected")


def assert_stays(waiter: StateWaiter, company_id: str, state: str, seconds: float) -> None:
    """The session is in `state` and no state event leaves it for `seconds`."""
    left = threading.Event()
    waiter.board.bus.flush()          # events from before this call are not "leaving"
    unsubscribe = waiter.board.on_event(lambda e: e.data.get("state") != state and left.set(),
                                        kinds=("state",), company_id=company_id)
    try:
        assert waiter.status(company_id)["status"] == state
        assert not left.wait(seconds), f"{company_id} left {state}"
    finally:
        unsubscribe()


class ScriptedConnection:
    def __init__(self, transport, emit):
        self.transport, self.emit, self.closed = transport, emit, False

    def open(self):
        self.transport.opened += 1
        if self.transport.script:
            step = self.transport.script.pop(0)
            for event in step if isinstance(step, (list, tuple)) else (step,):   # a list: several events
                self.emit(event)

    def close(self):
        self.closed = True
        closed = Future()
        closed.set_result(None)
        return closed

    def alive(self):
        return not self.closed

    def send(self, jid, payload):
        raise AssertionError("not used")

    pair_phone = logout = send


class ScriptedTransport:
    """Each connection emits the next scripted event (or list of events) when opened."""
    name = "scripted"

    def __init__(self, script):
        self.script, self.opened = list(script), 0

    def connect(self, company_id, company_dir, emit):
        return ScriptedConnection(self, emit)

    def forget(self, company_id, company_dir):
        pass

    def close(self):
        pass


class HoldingConnection(SimulatedConnection):
    """Like neonize: a send waits for the server's answer, and closing the connection
    fails what is still waiting (retryably). Logout can be held too."""

    def __init__(self, *args, hold, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold = hold
        self.waiting: list[Future] = []

    def send(self, jid, payload):
        if self.hold.get("unconfirmed"):          # the link died mid-request: outcome unknown
            future = Future()
            future.set_exception(SendError("link lost mid-request", retryable=False, unconfirmed=True))
            return future
        if self.hold.get("sends"):
            future = Future()
            self.waiting.append(future)
            return future
        return super().send(jid, payload)

    def logout(self):
        if self.hold.get("logout_fails"):
            future = Future()
            future.set_exception(RuntimeError("the logout request failed"))
            super().close()
            return future
        return Future() if self.hold.get("logout") else super().logout()

    def close(self):
        # keep_on_close: like a process killed mid-send, nobody ever answers the send
        if not self.hold.get("keep_on_close"):
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


class SlowClosingConnection(SimulatedConnection):
    """Like a neonize child that takes seconds to stop: close() returns at once, but the
    socket stays live (it still delivers what it receives) until the test lets it go."""

    def __init__(self, *args, transport, **kwargs):
        super().__init__(*args, **kwargs)
        self._transport = transport
        self._gone: Future | None = None

    def close(self):
        if self._gone is None:
            self._gone = Future()
            self._transport.closing.append(self)
            self._transport.close_called.set()
        return self._gone

    def finish_closing(self) -> None:
        super().close()
        self._gone.set_result(None)


class SlowClosingTransport(SimulatedTransport):
    def __init__(self, network):
        super().__init__(network)
        self.closing: list[SlowClosingConnection] = []
        self.opened = 0
        self.close_called = threading.Event()      # set once a connection started closing

    def connect(self, company_id, company_dir, emit):
        self.opened += 1
        return SlowClosingConnection(self.network, company_id, company_dir, emit, transport=self)

    def finish_all(self) -> None:
        while self.closing:
            self.closing.pop(0).finish_closing()

    def close(self):
        self.finish_all()


class HealingTransport(SimulatedTransport):
    """Like whatsmeow after a drop: the connection stays, says Interrupted, and (when the
    test heals it) says Connected again in the same connection."""

    def __init__(self, network):
        super().__init__(network)
        self.connections: list[SimulatedConnection] = []

    def connect(self, company_id, company_dir, emit):
        conn = super().connect(company_id, company_dir, emit)
        self.connections.append(conn)
        return conn

    def interrupt(self, cause: Cause = Cause.DROPPED) -> None:
        with self.network._lock:
            self.connections[-1]._emit(Interrupted("websocket closed (simulated)", cause))

    def heal(self) -> None:
        conn = self.connections[-1]
        with self.network._lock:
            conn._emit(Connected(conn._device.phone))


def open_paths() -> set[str]:
    """What this process has open, by path (fds of other threads may close meanwhile)."""
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return paths
