"""The real neonize child process against a temp store, all offline.

Every connection goes through a proxy on 127.0.0.1 (refusing or holding), so no test
ever reaches the internet, whatever the machine's network. After each test no session
process may remain and the test process must not have imported neonize.
"""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from switchboard.actors.connection import Connected, Disconnected, SendError
from switchboard.actors.transports.neonize import DB_FILES, DB_NAME, NeonizeConnection, NeonizeTransport

pytestmark = pytest.mark.timeout(60)

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


def session_children() -> list[int]:
    """Live child processes of this test process that are multiprocessing spawn children
    (the resource tracker, a helper multiprocessing keeps for the whole run, is excluded)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if not fields or int(fields[1]) != me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# ------------------------------------------------------------------ fixtures

@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_until(lambda: not session_children(), 10), f"session processes left: {session_children()}"
    assert "neonize" not in sys.modules and not any(m.startswith("neonize.") for m in sys.modules)


@pytest.fixture
def hold_proxy():
    proxy = HoldProxy()
    yield proxy
    proxy.close()


@pytest.fixture
def opened(tmp_path):
    """Factory: open a connection; every one is closed (and checked gone) at teardown."""
    made: list[NeonizeConnection] = []

    def make(proxy: str, *, company: str = "acme", company_dir: Path | None = None, **kw):
        rec = Recorder()
        conn = NeonizeConnection(company, company_dir or tmp_path / "data" / company, rec,
                                 proxy=proxy, **kw)
        conn.open()
        made.append(conn)
        return conn, rec

    yield make
    for conn in made:
        conn.close()
        assert conn.pid is None or process_gone(conn.pid)


def _stubborn_child(cfg: dict, conn) -> None:
    """Stand-in for the neonize child that ignores "stop", SIGTERM and every command."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send({"type": "connecting", "pid": os.getpid(), "uuid": "stubborn"})
    while True:
        time.sleep(1)


# ------------------------------------------------------------------ tests

def test_offline_connect_fails_fast_with_the_network_error(opened):
    conn, rec = opened(refused_proxy_url())
    event = rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=30)
    assert event.retryable
    assert any(word in event.reason for word in NETWORK_FAILURE_WORDS), event.reason
    assert wait_until(lambda: process_gone(conn.pid), 10)       # the child exits by itself
    time.sleep(0.5)
    conn.close()
    time.sleep(0.3)
    assert rec.events == [event]                                 # one Disconnected, then nothing
    assert conn.exitcode == 4 and not conn.alive()


def test_close_while_the_dial_hangs_is_bounded(opened, hold_proxy):
    conn, rec = opened(hold_proxy.url, stop_grace=2.0)
    hold_proxy.wait_clients(1)
    assert hold_proxy.first_bytes[0].startswith(b"CONNECT web.whatsapp.com:443")
    assert conn.alive()
    started = time.monotonic()
    conn.close()
    assert time.monotonic() - started < 2.0 + 4.0
    assert process_gone(conn.pid) and not conn.alive()
    conn.close()                                                 # idempotent
    assert rec.events == []


def test_close_escalates_to_kill_for_a_child_that_ignores_stop(opened):
    conn, rec = opened(None, child_target=_stubborn_child, stop_grace=1.0)
    assert wait_until(lambda: conn.alive(), 10)
    time.sleep(0.5)
    started = time.monotonic()
    conn.close()
    took = time.monotonic() - started
    assert 1.0 <= took < 1.0 + 4.0, took
    assert process_gone(conn.pid) and conn.exitcode == -signal.SIGKILL
    assert rec.events == []


def test_killed_child_gives_exactly_one_disconnected(opened, hold_proxy):
    conn, rec = opened(hold_proxy.url)
    hold_proxy.wait_clients(1)
    os.kill(conn.pid, signal.SIGKILL)
    event = rec.wait_for(lambda e: isinstance(e, Disconnected))
    assert event.retryable and "exited with code -9" in event.reason
    assert not conn.alive()
    time.sleep(1.0)
    conn.close()
    assert rec.events == [event]


def test_commands_fail_quickly_when_not_connected(opened, hold_proxy):
    conn, _ = opened(hold_proxy.url)
    hold_proxy.wait_clients(1)
    started = time.monotonic()
    futures = [conn.send_text("15550001111@s.whatsapp.net", "hi"), conn.pair_phone("+1 555 000 1111"),
               conn.logout()]
    for fut in futures:
        exc = fut.exception(timeout=2)
        assert isinstance(exc, SendError) and exc.retryable, exc
    assert time.monotonic() - started < 1.0
    conn.close()
    exc = conn.send_text("15550001111@s.whatsapp.net", "hi").exception(timeout=1)
    assert isinstance(exc, SendError) and exc.retryable


def test_unanswered_command_times_out_and_close_fails_the_rest(opened):
    conn, rec = opened(None, child_target=_stubborn_child, command_timeout=0.5, stop_grace=0.5)
    assert wait_until(lambda: conn.alive(), 10)
    conn._on_child_event({"type": "connected", "phone": "15550009999"})   # pretend WhatsApp said so
    assert rec.events == [Connected("15550009999")]
    started = time.monotonic()
    exc = conn.send_text("15550001111@s.whatsapp.net", "hi").exception(timeout=5)
    assert isinstance(exc, SendError) and exc.retryable and "no reply" in str(exc)
    assert 0.4 <= time.monotonic() - started < 2.0
    pending = conn.send_text("15550001111@s.whatsapp.net", "again")
    conn.close()
    exc = pending.exception(timeout=1)
    assert isinstance(exc, SendError) and exc.retryable


def test_connect_deadline_kills_a_hung_child(opened, hold_proxy):
    conn, rec = opened(hold_proxy.url, connect_deadline=2.0)
    event = rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=20)
    assert event.retryable and "deadline" in event.reason
    assert wait_until(lambda: process_gone(conn.pid), 6)
    time.sleep(0.3)
    assert rec.events == [event]


def test_store_permissions(opened, tmp_path):
    company_dir = tmp_path / "data" / "perm"
    conn, rec = opened(refused_proxy_url(), company="perm", company_dir=company_dir)
    rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=30)
    conn.close()
    assert stat.S_IMODE(company_dir.stat().st_mode) == 0o700
    db = company_dir / DB_NAME
    assert db.is_file() and db.stat().st_size > 0                  # created and migrated by whatsmeow
    for path in company_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_existing_store_is_tightened_to_0600(opened, tmp_path):
    company_dir = tmp_path / "data" / "loose"
    company_dir.mkdir(parents=True, mode=0o700)
    db = company_dir / DB_NAME
    db.touch()
    db.chmod(0o644)
    conn, rec = opened(refused_proxy_url(), company="loose", company_dir=company_dir)
    rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=30)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_forget_removes_the_credentials(opened, tmp_path):
    company_dir = tmp_path / "data" / "gone"
    conn, rec = opened(refused_proxy_url(), company="gone", company_dir=company_dir)
    rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=30)
    conn.close()
    for name in DB_FILES[1:]:
        (company_dir / name).write_bytes(b"x")
    transport = NeonizeTransport()
    transport.forget("gone", company_dir)
    assert not any((company_dir / name).exists() for name in DB_FILES)
    assert company_dir.is_dir()
    transport.forget("gone", company_dir)                          # nothing left: still fine


def test_transport_close_ends_every_child(tmp_path, hold_proxy):
    transport = NeonizeTransport(proxy=hold_proxy.url, stop_grace=1.0,
                                 proxies={"other": refused_proxy_url()})
    recs = [Recorder() for _ in range(3)]
    conns = [transport.connect(f"c{i}", tmp_path / f"c{i}", rec) for i, rec in enumerate(recs)]
    for conn in conns:
        conn.open()
    hold_proxy.wait_clients(3)
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < 1.0 + 5.0
    assert all(process_gone(c.pid) and not c.alive() for c in conns)
    assert all(rec.events == [] for rec in recs)


def test_bad_proxy_is_rejected_up_front(tmp_path):
    with pytest.raises(ValueError):
        NeonizeTransport(proxy="ftp://127.0.0.1:21")
    with pytest.raises(ValueError):
        NeonizeTransport(proxies={"acme": "127.0.0.1:8080"})


def test_child_dies_with_its_parent(tmp_path, hold_proxy):
    """PR_SET_PDEATHSIG: a SIGKILLed gateway leaves no orphaned session process."""
    code = textwrap.dedent(f"""
        import pathlib, time
        from switchboard.actors.transports.neonize import NeonizeTransport
        transport = NeonizeTransport(proxy={hold_proxy.url!r})
        conn = transport.connect("orphan", pathlib.Path({str(tmp_path / 'orphan')!r}), lambda e: None)
        conn.open()
        print(conn.pid, flush=True)
        time.sleep(60)
    """)
    gateway = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(gateway.stdout.readline())
        hold_proxy.wait_clients(1)                 # the child is up, in the dial
        assert not process_gone(child_pid)
        gateway.kill()
        gateway.wait(10)
        assert wait_until(lambda: process_gone(child_pid), 10), "child outlived its parent"
    finally:
        gateway.kill()
        gateway.wait(10)


def test_parent_never_imports_neonize():
    code = ("import sys, switchboard.actors.transports.neonize, switchboard.actors.transports.neonize.child; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'neonize'], 'neonize imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unusable_company_dir_is_a_retryable_disconnect(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    rec = Recorder()
    conn = NeonizeConnection("acme", blocker / "acme", rec)
    conn.open()                                   # no exception: it is reported as an event
    assert len(rec.events) == 1 and isinstance(rec.events[0], Disconnected)
    assert rec.events[0].retryable and "could not start session process" in rec.events[0].reason
    assert conn.pid is None and not conn.alive()
    conn.close()
