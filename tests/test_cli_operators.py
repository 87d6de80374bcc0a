"""The CLI for an operator: it finds the local server and its key by itself (from any
directory, through the wrapper scripts/install-cli writes), `logs` reads for a person and
follows across rotation, and a restart shows the restore's progress."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from switchboard.supervision.events import Event, SupervisorLog
from switchboard.supervision.logview import follow, format_record, read_all
from tests.support.http import COMMAND, REPO, Http, Served, clean_env, wait_until


def test_client_commands_find_the_server_and_key_from_the_data_directory(tmp_path):
    served = Served(tmp_path / "data", "--transport", "simulated")
    try:
        info = json.loads((served.data_dir / "server.json").read_text())
        assert info["url"] == served.url and oct((served.data_dir / "server.json").stat().st_mode & 0o777) == "0o600"
        # no --url, no key flag, no port: only the data directory, from another working directory
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = clean_env(WHATSAPP_SESSION_PATH=str(served.data_dir))
        run = lambda *a: subprocess.run([*COMMAND, *a], cwd=elsewhere, env=env, capture_output=True, text=True,
                                        timeout=30)
        created = run("sessions", "create", "962302")
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["status"] == "qr"
        listed = run("sessions")
        assert listed.returncode == 0 and "962302" in listed.stdout and "qr" in listed.stdout
        # the wrapper on the PATH: the same, from anywhere
        bin_dir = tmp_path / "bin"
        subprocess.run([str(REPO / "scripts" / "install-cli"), str(bin_dir)], check=True, capture_output=True,
                       timeout=30)
        wrapped = subprocess.run(["switchboard", "sessions", "show", "962302"], cwd=elsewhere, capture_output=True,
                                 text=True, timeout=30,
                                 env={**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
        assert wrapped.returncode == 0, wrapped.stderr
        assert json.loads(wrapped.stdout)["companyId"] == "962302"
    finally:
        served.stop()
    assert not (served.data_dir / "server.json").exists()          # removed when the server stops
    gone = subprocess.run([*COMMAND, "sessions", "--data-dir", str(served.data_dir)], env=clean_env(PORT="9"),
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "cannot reach" in gone.stderr and "Traceback" not in gone.stderr


def test_logs_read_for_a_person_plain_when_piped(tmp_path):
    served = Served(tmp_path / "data", "--transport", "simulated")
    try:
        Http(served.url, (served.data_dir / "admin.key").read_text().strip()).post(
            "/api/whatsapp/sessions", {"companyId": "962302"})
        assert wait_until(lambda: "-> qr" in served.cli("logs", "--company", "962302").stdout, 10)
        out = served.cli("logs", "--company", "962302").stdout
    finally:
        served.stop()
    line = next(x for x in out.splitlines() if "-> qr" in x)
    assert line.split()[1][:2].isdigit() and "962302" in line and " state " in line and "starting -> qr" in line
    assert "\033[" not in out and "{" not in out                  # no colour and no JSON when piped


def test_format_record_colours_only_when_asked():
    record = {"ts": "2026-11-22T00:51:48.123Z", "companyId": "962302", "event": "state", "state": "failed",
              "previous": "reconnecting", "error": "connect failure: forbidden"}
    plain = format_record(record)
    assert plain == "2026-11-22 00:51:48.123  962302           state       reconnecting -> failed  " \
                    "error: connect failure: forbidden"
    coloured = format_record(record, colour=True)
    assert "\033[31m" in coloured and "reconnecting -> failed" in coloured


def _event(n: int) -> Event:
    return Event(n, time.time(), "962302", "state", {"state": "connected", "previous": "starting", "n": n})


def test_logs_follow_across_a_rotation_loses_and_repeats_nothing(tmp_path):
    path = tmp_path / "supervisor.log"
    log = SupervisorLog(path, max_bytes=6000)        # 100 records: 2-3 rotations, within the 3 backups
    stop = threading.Event()
    seen: list[int] = []
    got = threading.Condition()

    def tail():
        for record in follow(path, stop=stop, poll=0.02, from_start=True, backlog=1000):
            with got:
                seen.append(record["n"])
                got.notify_all()
    reader = threading.Thread(target=tail, daemon=True)
    reader.start()
    try:
        log.append(_event(0))                       # once the reader has shown it, it is following
        with got:
            assert got.wait_for(lambda: seen == [0], timeout=10)
        seen.clear()
        for n in range(1, 101):                     # ~150 bytes each: several rotations
            log.append(_event(n))
        with got:
            assert got.wait_for(lambda: len(seen) >= 100, timeout=10), seen[-5:]
    finally:
        stop.set()
        reader.join(5)
        log.close()
    assert seen == list(range(1, 101))
    assert path.with_name("supervisor.log.1").exists()               # it did rotate
    assert path.with_name("supervisor.log.4").exists() is False      # and keeps 3 backups
    assert [r["n"] for r in read_all(path)] == list(range(101 - len(read_all(path)), 101))


def test_logs_follow_command_across_rotation(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    log = SupervisorLog(data / "supervisor.log", max_bytes=4000)
    log.append(_event(-1))
    log.append(_event(0))                           # the last record before: shown by --limit 1
    follower = subprocess.Popen([*COMMAND, "logs", "-f", "--json", "--limit", "1", "--data-dir", str(data)],
                                env=clean_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert json.loads(follower.stdout.readline())["n"] == 0
        for n in range(1, 41):
            log.append(_event(n))
        numbers = [json.loads(follower.stdout.readline())["n"] for _ in range(40)]
        assert numbers == list(range(1, 41))
        assert (data / "supervisor.log.1").exists()
    finally:
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0
        log.close()


def test_a_restart_shows_the_restores_progress(tmp_path):
    first = Served(tmp_path / "data", "--transport", "simulated")
    try:
        http = Http(first.url, (first.data_dir / "admin.key").read_text().strip())
        for company in ("a1", "a2", "a3"):
            http.post("/api/whatsapp/sessions", {"companyId": company})
        http.post("/api/simulator/companies/a1/scan", {"phone": "79990001111"})
        assert wait_until(lambda: http.get("/api/whatsapp/sessions/a1/status")[2].get("connected"), 10)
    finally:
        first.stop()
    second = Served(tmp_path / "data", "--transport", "simulated")
    try:
        assert wait_until(lambda: "(done)" in second.stderr_path.read_text(), 20), second.stderr_path.read_text()
        lines = [x for x in second.stderr_path.read_text().splitlines() if "restoring" in x]
        assert lines[-1].startswith("switchboard: restoring 3 session(s): ")
        assert "failed" in lines[-1] and "waiting for QR" in lines[-1] and "connected" in lines[-1]
        logged = [r for r in read_all(second.data_dir / "supervisor.log") if r.get("action") == "restore_done"]
        assert logged and logged[-1]["restored"] == 3 and logged[-1]["pending"] == 0
    finally:
        second.stop()


def test_logs_are_coloured_on_a_terminal_and_plain_with_no_color(tmp_path):
    import pty
    data = tmp_path / "data"
    data.mkdir()
    log = SupervisorLog(data / "supervisor.log")
    log.append(Event(1, time.time(), "962302", "state", {"state": "failed", "previous": "starting",
                                                         "error": "connect failure: forbidden"}))
    log.close()

    def under_a_terminal(**env: str) -> str:
        leader, follower = pty.openpty()
        proc = subprocess.Popen([*COMMAND, "logs", "--data-dir", str(data)], stdout=follower, stderr=follower,
                                env=clean_env(TERM="xterm", **env))
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:            # the terminal closed: the command ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert proc.wait(30) == 0
        return b"".join(chunks).decode()
    coloured = under_a_terminal()
    assert "\033[31m" in coloured and "starting -> failed" in coloured
    plain = under_a_terminal(NO_COLOR="1")
    assert "\033[" not in plain and "starting -> failed" in plain and "error: connect failure: forbidden" in plain
