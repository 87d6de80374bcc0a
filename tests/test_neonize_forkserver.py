"""Children forked from the warm fork server (spawner.py, preload.py), all offline.

The server imports neonize's pure-Python side once and forks every child from it; the Go
library must load only in the children, never in the server (a process that has started
Go must never fork) and never in the gateway. A child's crash touches no other child;
when the server cannot be used, children are spawned instead.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from switchboard.actors.connection import Cause, Disconnected
from switchboard.actors.transports.neonize import NeonizeConnection
from switchboard.actors.transports.neonize import spawner

from .support.neonize import (Recorder, hold_proxy, process_gone, session_children,  # noqa: F401
                              wait_until)

pytestmark = pytest.mark.timeout(60)
GO_LIBRARY = "neonize-linux"


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    assert wait_until(lambda: not session_children(), 10), f"session processes left: {session_children()}"
    assert "neonize" not in sys.modules and not any(m.startswith("neonize.") for m in sys.modules)


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _open(tmp_path: Path, company: str, proxy: str) -> tuple[NeonizeConnection, Recorder]:
    rec = Recorder()
    conn = NeonizeConnection(company, tmp_path / company, rec, proxy=proxy, stop_grace=1.0)
    conn.open()
    return conn, rec


def test_children_fork_from_a_server_that_never_loads_go(tmp_path, hold_proxy):
    conns = [_open(tmp_path, f"fork{i}", hold_proxy.url)[0] for i in range(2)]
    try:
        hold_proxy.wait_clients(2)                       # both children are up, in the dial
        assert spawner.start_method() == "forkserver"
        pids = [conn.pid for conn in conns]
        servers = {_ppid(pid) for pid in pids}
        assert len(servers) == 1 and os.getpid() not in servers    # forked by the server, not by us
        server = servers.pop()
        assert b"multiprocessing.forkserver" in Path(f"/proc/{server}/cmdline").read_bytes()
        assert GO_LIBRARY not in _maps(server)           # the server never started Go ...
        assert _threads(server) == 1                     # ... nor any thread: safe to fork
        for pid in pids:
            assert GO_LIBRARY in _maps(pid)              # each child loaded Go itself
    finally:
        for conn in conns:
            conn.close().result(timeout=10)


def test_a_killed_child_touches_no_other(tmp_path, hold_proxy):
    (victim, victim_rec), (other, other_rec) = (_open(tmp_path, name, hold_proxy.url) for name in ("victim", "other"))
    try:
        hold_proxy.wait_clients(2)
        server = _ppid(other.pid)
        os.kill(victim.pid, signal.SIGKILL)
        gone = victim_rec.wait_for(lambda e: isinstance(e, Disconnected))
        assert gone.cause == Cause.PROCESS_EXITED and "SIGKILL" in gone.reason
        assert other.alive() and not process_gone(other.pid) and not process_gone(server)
        assert not [e for e in other_rec.events if isinstance(e, Disconnected)]
    finally:
        victim.close().result(timeout=10)
        other.close().result(timeout=10)


_GATEWAY = textwrap.dedent("""
    import pathlib, sys, time
    from switchboard.actors.transports.neonize import NeonizeTransport, spawner
    how = sys.argv[3]
    if how != "spawn":
        spawner.WARM_MODULE = how
    transport = NeonizeTransport(proxy=sys.argv[1], stop_grace=1.0,
                                 start_method="spawn" if how == "spawn" else None)
    conn = transport.connect("fallback", pathlib.Path(sys.argv[2]), lambda e: None)
    conn.open()
    for _ in range(3000):                  # open() only queues the start
        if conn.pid is not None:
            break
        time.sleep(0.01)
    cmdline = pathlib.Path(f"/proc/{conn.pid}/cmdline").read_bytes()
    print(spawner.start_method(), b"spawn_main" in cmdline, flush=True)
    transport.close()
""")


@pytest.mark.parametrize("how", ["asked", "server refuses"])
def test_children_are_spawned_when_asked_or_when_the_server_is_unusable(tmp_path, hold_proxy, how):
    env = {**os.environ}
    args = [sys.executable, "-c", _GATEWAY, hold_proxy.url, str(tmp_path / "fallback")]
    if how == "asked":
        args.append("spawn")
    else:                                  # a fork server whose warm-up refuses, as preload's checks do
        (tmp_path / "refusing_warmup.py").write_text("import os\nos._exit(3)\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
        args.append("refusing_warmup")
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["spawn", "True"], (out.stdout, out.stderr)
    if how == "server refuses":
        assert "fork server unusable" in out.stderr


def test_the_warm_up_refuses_a_process_with_a_thread():
    """A fork server must be one thread: forking copies no other thread, only its locks."""
    code = textwrap.dedent("""
        import threading, time
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        from switchboard.actors.transports.neonize import preload
        preload.warm()
        print("warmed")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert out.returncode == 3 and "warmed" not in out.stdout
    assert "threads after warming" in out.stderr and "refusing to fork" in out.stderr


def _slow_starter(cfg: dict, conn) -> None:
    """A child whose start-up never ends (it keeps its started_signal) until told to go."""
    conn.recv()
    os._exit(0)


def _quick_starter(cfg: dict, conn) -> None:
    cfg.pop(spawner.STARTED_SIGNAL).close()     # start-up over at once
    conn.recv()
    os._exit(0)


def test_starts_wait_for_a_slot_until_a_start_up_is_over():
    """At most `limit` children between their fork and the end of their start-up: the
    next start waits for a slot (a restore of many companies is no herd)."""
    gate = spawner._Spawner()
    gate.limit = 1
    children = []
    try:
        first = gate.submit(_slow_starter, {}, "slow").result(timeout=30)
        children.append(first)
        second = gate.submit(_quick_starter, {}, "quick")
        assert not wait_until(second.done, 1.0)        # held: the first is still starting up
        first[1].send("go")                            # the first ends; its slot frees
        children.append(second.result(timeout=30))
        third = gate.submit(_quick_starter, {}, "quick2")
        children.append(third.result(timeout=30))      # the second said "over": no wait
    finally:
        for proc, conn in children:
            try:
                conn.send("go")
            except OSError:
                pass
            proc.join(10)
            conn.close()
