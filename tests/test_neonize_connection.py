"""The real neonize child process against a temp store, all offline.

Every connection goes through a proxy on 127.0.0.1 (refusing or holding), so no test
ever reaches the internet, whatever the machine's network. After each test no session
process may remain and the test process must not have imported neonize.
"""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from switchboard.actors.connection import (Cause, Connected, Disconnected, IncomingMessage, Receipt,
                                           SendError)
from switchboard.actors.payload import Text
from switchboard.actors.transports.neonize import DB_FILES, DB_NAME, NeonizeConnection, NeonizeTransport

from .support.neonize import (NETWORK_FAILURE_WORDS, HeldSpawn, Recorder, child_started,  # noqa: F401
                              hold_proxy, process_gone, refused_proxy_url, session_children,
                              wait_until)

pytestmark = pytest.mark.timeout(60)

# ------------------------------------------------------------------ fixtures

@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_until(lambda: not session_children(), 10), f"session processes left: {session_children()}"
    assert "neonize" not in sys.modules and not any(m.startswith("neonize.") for m in sys.modules)


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
        conn.close().result(timeout=10)
        assert conn.pid is None or process_gone(conn.pid)


def _stubborn_child(cfg: dict, conn) -> None:
    """Stand-in for the neonize child that ignores "stop", SIGTERM and every command."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send({"type": "connecting", "pid": os.getpid(), "uuid": "stubborn"})
    while True:
        time.sleep(1)


def _chatty_closer(cfg: dict, conn) -> None:
    """Stand-in child that, asked to stop, still passes on what "WhatsApp" had delivered
    (a message, a receipt) and a lifecycle event, then exits."""
    conn.send({"type": "connecting", "pid": os.getpid(), "uuid": "chatty"})
    while True:
        _req_id, op, _args = conn.recv()
        if op == "stop":
            time.sleep(0.3)                    # the parent's close() has long returned
            conn.send({"type": "message", "id": "3EB0LATE", "chat": "15550001111@s.whatsapp.net",
                       "phone": "15550001111", "text": "acked before the stop", "kind": "text",
                       "timestamp": 1_700_000_000.0})
            conn.send({"type": "disconnected"})
            conn.send({"type": "receipt", "ids": ["3EB0MINE"], "chat": "15550001111@s.whatsapp.net",
                       "kind": "read", "timestamp": 1_700_000_001.0})
            os._exit(0)


def _obedient_child(cfg: dict, conn) -> None:
    """Stand-in child that says it is up, then exits when asked to stop."""
    conn.send({"type": "connecting", "pid": os.getpid(), "uuid": "obedient"})
    while conn.recv()[1] != "stop":
        pass
    os._exit(0)


def _coded_replier(cfg: dict, conn) -> None:
    """Stand-in child that fails every send with the error code named by its text
    ("ok" succeeds), after checking that the payload arrived as its record."""
    conn.send({"type": "connecting", "pid": os.getpid(), "uuid": "replier"})
    while True:
        req_id, op, args = conn.recv()
        if op == "stop":
            os._exit(0)
        text = args["payload"]["text"]
        assert args["payload"] == {"type": "text", "text": text}
        if text == "ok":
            conn.send({"type": "reply", "req_id": req_id, "ok": True, "result": {"message_id": "3EB0OK"}})
        else:
            reply = {"type": "reply", "req_id": req_id, "ok": False, "error": f"failed as {text}"}
            if text != "no-code":
                reply["code"] = text
            conn.send(reply)


# ------------------------------------------------------------------ tests

def test_offline_connect_fails_fast_with_the_network_error(opened):
    conn, rec = opened(refused_proxy_url())
    event = rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=30)
    assert event.retryable and event.cause is Cause.UNREACHABLE
    assert any(word in event.reason for word in NETWORK_FAILURE_WORDS), event.reason
    assert wait_until(lambda: process_gone(conn.pid), 10)       # the child exits by itself
    conn.gone().result(timeout=10)
    conn.close().result(timeout=1)                               # already gone: done at once
    assert rec.events == [event]                                 # one Disconnected, then nothing
    assert conn.exitcode == 4 and not conn.alive()


def test_close_while_the_dial_hangs_is_bounded(opened, hold_proxy):
    conn, rec = opened(hold_proxy.url, stop_grace=2.0)
    hold_proxy.wait_clients(1)
    assert hold_proxy.first_bytes[0].startswith(b"CONNECT web.whatsapp.com:443")
    assert conn.alive()
    started = time.monotonic()
    closing = conn.close()
    assert not conn.alive()
    closing.result(timeout=2.0 + 4.0 + 1.0)
    assert time.monotonic() - started < 2.0 + 4.0
    assert process_gone(conn.pid) and not conn.alive()
    assert conn.close() is closing                               # idempotent: the same future
    assert rec.events == []


def test_close_returns_at_once_and_escalates_to_kill_for_a_child_that_ignores_stop(opened):
    conn, rec = opened(None, child_target=_stubborn_child, stop_grace=1.0)
    assert wait_until(lambda: child_started(conn), 10)
    time.sleep(0.5)                                               # let it ignore SIGTERM
    started = time.monotonic()
    closing = conn.close()
    assert time.monotonic() - started < 0.5
    assert not closing.done() and not process_gone(conn.pid)      # still being ended
    closing.result(timeout=10)
    assert 1.0 <= time.monotonic() - started < 1.0 + 4.0
    assert process_gone(conn.pid) and conn.exitcode == -signal.SIGKILL
    assert rec.events == []


def test_killed_child_gives_exactly_one_disconnected(opened, hold_proxy):
    conn, rec = opened(hold_proxy.url)
    hold_proxy.wait_clients(1)
    os.kill(conn.pid, signal.SIGKILL)
    event = rec.wait_for(lambda e: isinstance(e, Disconnected))
    assert event.cause is Cause.PROCESS_EXITED and event.retryable and "exited with code -9" in event.reason
    assert not conn.alive()
    conn.gone().result(timeout=5)
    conn.close().result(timeout=1)
    assert rec.events == [event]


def test_commands_fail_quickly_when_not_connected(opened, hold_proxy):
    conn, _ = opened(hold_proxy.url)
    hold_proxy.wait_clients(1)
    started = time.monotonic()
    futures = [conn.send("15550001111@s.whatsapp.net", Text("hi")), conn.pair_phone("+1 555 000 1111")]
    for fut in futures:
        exc = fut.exception(timeout=2)
        assert isinstance(exc, SendError) and exc.retryable, exc
    assert not conn.logout().result(timeout=2).told_whatsapp      # offline: WhatsApp not told
    assert time.monotonic() - started < 1.0
    conn.close()
    exc = conn.send("15550001111@s.whatsapp.net", Text("hi")).exception(timeout=1)
    assert isinstance(exc, SendError) and exc.retryable


def test_unanswered_command_times_out_and_close_fails_the_rest(opened):
    conn, rec = opened(None, child_target=_stubborn_child, command_timeout=0.5, stop_grace=0.5)
    assert wait_until(lambda: child_started(conn), 10)
    conn._on_child_event({"type": "connected", "phone": "15550009999"})   # pretend WhatsApp said so
    assert rec.events == [Connected("15550009999")]
    started = time.monotonic()
    exc = conn.send("15550001111@s.whatsapp.net", Text("hi")).exception(timeout=5)
    assert isinstance(exc, SendError) and exc.retryable and "no reply" in str(exc)    # never started
    assert 0.4 <= time.monotonic() - started < 2.0
    pending = conn.send("15550001111@s.whatsapp.net", Text("again"))
    conn.close()              # fails it once the child is gone: not STARTED, so retryable
    exc = pending.exception(timeout=0.5 + 4.0 + 2.0)
    assert isinstance(exc, SendError) and exc.retryable


def test_connect_deadline_kills_a_hung_child(opened, hold_proxy):
    conn, rec = opened(hold_proxy.url, connect_deadline=2.0)
    event = rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=20)
    assert event.cause is Cause.TIMED_OUT and event.retryable and "deadline" in event.reason
    assert wait_until(lambda: process_gone(conn.pid), 6)
    time.sleep(0.3)
    assert rec.events == [event]


def test_store_permissions(opened, tmp_path):
    company_dir = tmp_path / "data" / "perm"
    conn, rec = opened(refused_proxy_url(), company="perm", company_dir=company_dir)
    rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=30)
    conn.close().result(timeout=10)
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
    conn.close().result(timeout=10)
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
        for _ in range(2000):                  # open() only queues the start
            if conn.pid is not None:
                break
            time.sleep(0.01)
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
    package = "switchboard.actors.transports.neonize"
    modules = ", ".join([package] + [f"{package}.{name}" for name in ("child", "child_commands", "mapping")])
    code = (f"import sys, {modules}; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'neonize'], 'neonize imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unusable_company_dir_is_a_retryable_disconnect(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    rec = Recorder()
    conn = NeonizeConnection("acme", blocker / "acme", rec)
    conn.open()                                   # no exception: it is reported as an event
    assert len(rec.events) == 1 and isinstance(rec.events[0], Disconnected)
    assert rec.events[0].cause is Cause.OPEN_FAILED and rec.events[0].retryable
    assert "could not start session process" in rec.events[0].reason
    assert conn.pid is None and not conn.alive()
    assert conn.close().done()


def test_traffic_received_while_closing_is_delivered_and_nothing_after(opened):
    conn, rec = opened(None, child_target=_chatty_closer, stop_grace=3.0)
    assert wait_until(lambda: child_started(conn), 10)
    closing = conn.close()
    closing.result(timeout=10)
    assert rec.events == [
        IncomingMessage(id="3EB0LATE", chat="15550001111@s.whatsapp.net", phone="15550001111",
                        text="acked before the stop", timestamp=1_700_000_000.0),
        Receipt(message_ids=("3EB0MINE",), chat="15550001111@s.whatsapp.net", kind="read",
                timestamp=1_700_000_001.0),
    ]                                                              # the Disconnected is not
    assert conn.exitcode == 0


def test_failed_replies_carry_codes_that_decide_retryable(opened):
    conn, rec = opened(None, child_target=_coded_replier)
    assert wait_until(lambda: child_started(conn), 10)
    conn._on_child_event({"type": "connected", "phone": "15550009999"})   # pretend WhatsApp said so
    assert conn.send("15550001111@s.whatsapp.net", Text("ok")).result(timeout=5) == "3EB0OK"
    expected = {"not_connected": True, "timeout": True, "rejected": False, "internal": False,
                "no-code": False}
    for code, retryable in expected.items():
        exc = conn.send("15550001111@s.whatsapp.net", Text(code)).exception(timeout=5)
        assert isinstance(exc, SendError) and exc.retryable is retryable, (code, exc)
        assert f"failed as {code}" in str(exc)


def test_close_before_open_is_done_at_once(tmp_path):
    rec = Recorder()
    conn = NeonizeConnection("acme", tmp_path / "acme", rec)
    closing = conn.close()
    assert closing.done() and conn.close() is closing and conn.gone() is closing
    conn.open()                                                    # a closed connection never spawns
    assert conn.pid is None and rec.events == []


def test_one_proxy_check_accepts_the_four_schemes_whatsmeow_dials():
    from switchboard.actors.transports.proxy import validate_proxy

    for url in ("http://127.0.0.1:8080", "https://proxy.example:443", "socks5://u:p@127.0.0.1:1080",
                "socks5h://127.0.0.1:1080"):
        assert validate_proxy(url) == url
    assert validate_proxy(None) is None and validate_proxy("") is None
    for bad in ("ftp://127.0.0.1:21", "127.0.0.1:8080", "socks4://127.0.0.1:1080", "http://host:notaport"):
        with pytest.raises(ValueError):
            validate_proxy(bad)


def test_a_stalled_qr_phase_is_reported_once_as_qr_exhausted(tmp_path, monkeypatch):
    from switchboard.actors.connection import QrCode, QrExhausted
    from switchboard.actors.transports.neonize import translate, watchdogs

    monkeypatch.setattr(translate, "FIRST_QR_TTL", 0.1)
    monkeypatch.setattr(watchdogs, "QR_STALL_SLACK", 0.1)
    rec = Recorder()
    conn = NeonizeConnection("acme", tmp_path / "acme", rec)        # never opened: no child
    conn._on_child_event({"type": "qr", "code": "2@one"})
    rec.wait_for(lambda e: isinstance(e, QrExhausted), timeout=5)
    conn._on_child_event({"type": "qr", "code": "2@late"})           # over: nothing more
    assert rec.events == [QrCode("2@one", 0.1), QrExhausted()]
    assert conn.close().done()


def test_open_returns_at_once_while_the_spawner_is_busy(opened):
    held = HeldSpawn(_obedient_child)
    try:
        began = time.monotonic()
        first, first_rec = opened(None, company="held", child_target=held)
        assert time.monotonic() - began < 0.2
        assert held.entered.wait(10)                  # the spawner thread is stuck in its start
        others = []
        for i in range(3):                            # each queues behind it, none waits
            began = time.monotonic()
            others.append(opened(refused_proxy_url(), company=f"c{i}"))
            assert time.monotonic() - began < 0.2
        pending = [first] + [conn for conn, _ in others]
        assert all(conn.pid is None and conn.alive() for conn in pending)    # queued, not failed
    finally:
        held.release()
    for conn, rec in others:                          # each still gets its first event
        event = rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=30)
        assert event.cause is Cause.UNREACHABLE and rec.events == [event]
    assert wait_until(lambda: child_started(first), 10)
    first.close().result(timeout=10)
    assert not psutil.pid_exists(first.pid) and first_rec.events == []


def test_close_while_the_spawn_is_pending_leaves_no_process(tmp_path):
    held = HeldSpawn(_obedient_child)
    starting_rec, queued_rec = Recorder(), Recorder()
    starting = NeonizeConnection("held", tmp_path / "held", starting_rec, child_target=held)
    queued = NeonizeConnection("queued", tmp_path / "queued", queued_rec, child_target=_obedient_child)
    try:
        starting.open()
        assert held.entered.wait(10)                  # its start is under way on the spawner
        queued.open()                                 # this one waits in the queue
        began = time.monotonic()
        closing_starting, closing_queued = starting.close(), queued.close()
        assert time.monotonic() - began < 0.2
        assert closing_queued.done() and queued.pid is None    # cancelled: never started
        assert not closing_starting.done() and not starting.alive()
    finally:
        held.release()
    closing_starting.result(timeout=10)               # started after all, then ended
    assert starting.pid is not None and not psutil.pid_exists(starting.pid)
    assert session_children() == []
    assert starting_rec.events == [] and queued_rec.events == []
    assert starting.close() is closing_starting
