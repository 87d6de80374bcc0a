"""Helpers for the tests that run real neonize children offline: proxies on 127.0.0.1
that refuse or hold every dial, an emit() recorder, process checks via /proc, and a
child target that holds the spawner thread mid-start."""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

NETWORK_FAILURE_WORDS = ("connection refused", "no such host", "lookup", "dial tcp", "network is unreachable")


# ------------------------------------------------------------------ helpers

class Recorder:
    """emit() target that can be waited on."""

    def __init__(self) -> None:
        self.events: list = []
        self._cv = threading.Condition()

    def __call__(self, event) -> None:
        with self._cv:
            self.events.append(event)
            self._cv.notify_all()

    def wait_for(self, predicate, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching event within {timeout}s; got {self.events}")
                self._cv.wait(left)


class HoldProxy:
    """Accepts connections and never answers: the child's dial hangs (for 60 s in Go)."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(128)
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.clients: list[socket.socket] = []
        self.first_bytes: list[bytes] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            client.settimeout(5)
            try:
                data = client.recv(200)
            except OSError:
                data = b""
            with self._cv:
                self.clients.append(client)
                self.first_bytes.append(data)
                self._cv.notify_all()

    def wait_clients(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.clients) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.clients)} of {n} children reached the proxy"
                self._cv.wait(left)

    def close(self) -> None:
        self.server.close()
        for client in self.clients:
            client.close()


def refused_proxy_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"        # nothing listens there any more


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.rsplit(")", 1)[1].split()       # [state, ppid, ...]


def process_gone(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def _live_children(parent: int) -> list[tuple[int, bytes]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if not fields or int(fields[1]) != parent or fields[0] in ("Z", "X"):
            continue
        try:
            found.append((int(entry.name), (entry / "cmdline").read_bytes()))
        except OSError:
            continue
    return found


def session_processes_of(parent: int) -> list[int]:
    """The neonize session processes of `parent`: its multiprocessing spawn children, and
    the children of its fork server (forked children are not the parent's own; the fork
    server and the resource tracker, helpers multiprocessing keeps for the whole run, are
    not session processes)."""
    found = []
    for pid, cmdline in _live_children(parent):
        if b"spawn_main" in cmdline:
            found.append(pid)
        elif b"multiprocessing.forkserver" in cmdline:
            found.extend(child for child, _ in _live_children(pid))
    return sorted(found)


def session_children() -> list[int]:
    """Live session processes of this test process (see session_processes_of)."""
    return session_processes_of(os.getpid())


def child_started(conn) -> bool:
    """The child process exists and the link is alive (open() only queues the start)."""
    return conn.pid is not None and conn.alive()


def _itself(value):
    return value


class HeldSpawn:
    """A child target that holds the spawner thread inside proc.start() until release():
    the start pickles the target there, and pickling this one waits. Meanwhile every
    other start queues behind it. In the child it is just `inner`."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.entered = threading.Event()       # the spawner thread is inside the start
        self._released = threading.Event()

    def __call__(self, cfg: dict, conn) -> None:
        self.inner(cfg, conn)

    def release(self) -> None:
        self._released.set()

    def __reduce__(self):
        self.entered.set()
        if not self._released.wait(20):        # bounded: never wedge the shared spawner
            raise RuntimeError("HeldSpawn was never released")
        return (_itself, (self.inner,))


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def hold_proxy():
    proxy = HoldProxy()
    yield proxy
    proxy.close()
