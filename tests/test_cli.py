"""`switchboard serve` as a real process (SIGTERM, admin key file), and the client commands."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from switchboard.supervision.config import Config, ConfigError

from tests.support.http import COMMAND, REPO, Http, Served, children_of, clean_env, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def served(tmp_path):
    server = Served(tmp_path / "data", "--transport", "simulated")
    yield server
    server.kill()


def test_serve_generates_a_private_admin_key_and_stops_cleanly_on_sigterm(served):
    key_file = served.data_dir / "admin.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(served.data_dir).st_mode) == 0o700
    key = key_file.read_text().strip()
    assert len(key) >= 32 and key not in served.banner and str(key_file) in served.banner
    http = Http(served.url, key)
    assert http.get("/health", key=False)[0] == 200
    assert http.get("/api/whatsapp/sessions", key=False)[0] == 401
    assert http.post("/api/whatsapp/sessions", {"companyId": "962302"})[0] == 201
    assert http.post("/api/simulator/companies/962302/scan", {"phone": "79990001122"})[0] == 200
    assert wait_until(lambda: http.get("/api/whatsapp/sessions/962302/status")[2]["connected"])
    pid = served.proc.pid
    code, err = served.stop(signal.SIGTERM)
    assert code == 0, err
    assert "SIGTERM" in err and "stopped" in err and "Traceback" not in err
    assert not Path(f"/proc/{pid}").exists() or served.proc.poll() is not None
    assert children_of(pid) == []
    with pytest.raises(OSError):
        socket.create_connection(tuple(served.url.split("//")[1].split(":")), timeout=1).close()
    log = (served.data_dir / "supervisor.log").read_text()
    assert '"action": "stopped"' in log
    # the next start reuses the key file and restores the session (the in-process simulated
    # WhatsApp does not survive the process, so it is not linked any more: that needs
    # `switchboard simulator`, as the design says)
    again = Served(served.data_dir, "--transport", "simulated")
    try:
        http = Http(again.url, key)
        assert "admin key: in" in again.banner
        assert [s["companyId"] for s in http.get("/api/whatsapp/sessions")[2]["sessions"]] == ["962302"]
    finally:
        assert again.stop(signal.SIGINT)[0] == 0


def test_client_commands(served):
    http = Http(served.url, (served.data_dir / "admin.key").read_text().strip())
    assert "no sessions" in served.cli("sessions").stdout
    http.post("/api/whatsapp/sessions", {"companyId": "962302"})
    listed = served.cli("sessions", "list").stdout
    assert "962302" in listed and "qr" in listed
    drawn = served.cli("qr", "962302").stdout
    assert "▄" in drawn or "█" in drawn
    assert "/qr/962302?token=" in drawn
    http.post("/api/simulator/companies/962302/scan", {"phone": "79990001122"})
    assert wait_until(lambda: http.get("/api/whatsapp/sessions/962302/status")[2]["connected"])
    shown = json.loads(served.cli("sessions", "show", "962302").stdout)
    assert shown["status"] == "connected" and shown["phoneNumber"] == "+79990001122"
    sent = json.loads(served.cli("send", "962302", "+7 900 123-45-67", "Hello from the CLI").stdout)
    assert sent["status"] == "sent" and sent["to"] == "79001234567"
    assert json.loads(served.cli("sessions", "stop", "962302").stdout)["status"] == "stopped"
    assert json.loads(served.cli("sessions", "start", "962302").stdout)["status"] in ("starting", "connected")
    assert wait_until(lambda: http.get("/api/whatsapp/sessions/962302/status")[2]["connected"])
    assert json.loads(served.cli("sessions", "logout", "962302").stdout)["status"] == "logged_out"
    failed = served.cli("send", "962302", "12", "x", check=False)
    assert failed.returncode == 1 and "HTTP 400" in failed.stderr and "invalid phone number" in failed.stderr
    wrong = served.cli("sessions", "--api-key", "not-the-key-at-all", check=False)
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr
    logs = [json.loads(line) for line in served.cli("logs", "--json", "--company", "962302").stdout.splitlines()]
    states = [r.get("state") for r in logs if r["event"] == "state"]
    assert "connected" in states and states[-1] == "logged_out"
    assert all(r["companyId"] == "962302" for r in logs)
    assert served.cli("logs", "--since", "2999-01-01T00:00:00Z").stdout == ""
    assert served.cli("logs", "--since", "soon", check=False).returncode == 1


def test_logs_follow(served):
    http = Http(served.url, (served.data_dir / "admin.key").read_text().strip())
    follower = subprocess.Popen([*COMMAND, "logs", "-f", "--json", "--company", "962302", "--data-dir", str(served.data_dir)],
                                env=clean_env(), stdout=subprocess.PIPE, text=True)
    try:
        http.post("/api/whatsapp/sessions", {"companyId": "962302"})
        line = follower.stdout.readline()
        assert json.loads(line)["companyId"] == "962302"
    finally:
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0


def test_flags_override_the_environment(tmp_path):
    env = clean_env(PORT="1", SWITCHBOARD_ADMIN_KEY="env-admin-key-0123456789", SWITCHBOARD_TRANSPORT="neonize",
                    WHATSAPP_SESSION_PATH=str(tmp_path / "elsewhere"))
    server = Served(tmp_path / "data", "--transport", "simulated", env=env)
    try:
        assert "transport simulated" in server.banner and str(tmp_path / "data") in server.banner
        assert "SWITCHBOARD_ADMIN_KEY" in server.banner and not (tmp_path / "data" / "admin.key").exists()
        assert not (tmp_path / "elsewhere").exists()
        assert Http(server.url, "env-admin-key-0123456789").get("/api/whatsapp/sessions")[0] == 200
    finally:
        assert server.stop()[0] == 0


def test_serve_defaults_to_the_neonize_transport(tmp_path):
    from switchboard.supervision.cli import build_parser
    from switchboard.supervision.config import Config

    args = build_parser().parse_args(["serve"])
    assert args.transport is None and Config.from_env({}).transport == "neonize"
    try:
        import switchboard.actors.transports.neonize  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"neonize transport not available: {exc}")
    server = Served(tmp_path / "data")
    try:
        assert "transport neonize" in server.banner
        assert "/api/simulator" not in json.dumps(Http(server.url, (tmp_path / "data" / "admin.key").read_text()
                                                       .strip()).get("/openapi.json")[2]["paths"])
    finally:
        assert server.stop()[0] == 0


def test_every_setting_is_read_from_the_environment_by_config():
    config = Config.from_env({"SWITCHBOARD_SEND_WAIT": "1.5", "SWITCHBOARD_SSE_MAX_STREAMS": "3",
                              "SWITCHBOARD_SSE_HEARTBEAT": "2", "SWITCHBOARD_DRAIN_SECONDS": "4",
                              "SWITCHBOARD_LOG_LEVEL": "debug", "SWITCHBOARD_API_KEY": "client-key"})
    assert (config.send_wait, config.sse_max_streams, config.sse_heartbeat, config.drain_seconds) == (1.5, 3, 2.0, 4.0)
    assert config.log_level == "debug" and config.api_key == "client-key"
    with pytest.raises(ConfigError, match="SWITCHBOARD_SEND_WAIT must be a number"):
        Config.from_env({"SWITCHBOARD_SEND_WAIT": "soon"})
    with pytest.raises(ConfigError, match="SWITCHBOARD_LOG_LEVEL"):
        Config.from_env({"SWITCHBOARD_LOG_LEVEL": "loud"})
    assert Config.from_env({}).transport_options() == {"device_name": "Switchboard", "go_log_level": "WARNING",
                                                       "start_method": "forkserver", "max_starting": 0}
    scale = Config.from_env({"SWITCHBOARD_NEONIZE_START": "spawn", "SWITCHBOARD_NEONIZE_MAX_STARTING": "4",
                             "SWITCHBOARD_RESTORE_STAGGER": "0.5"})
    assert (scale.transport_options()["start_method"], scale.transport_options()["max_starting"],
            scale.restore_stagger) == ("spawn", 4, 0.5)
    assert Config.from_env({}).restore_stagger is None          # the gateway's default
    with pytest.raises(ConfigError, match="SWITCHBOARD_NEONIZE_START"):
        Config.from_env({"SWITCHBOARD_NEONIZE_START": "fork"})
    assert Config.from_env({"SWITCHBOARD_TRANSPORT": "simulated"}).transport_options() == {}


def test_short_admin_keys_are_refused(tmp_path):
    result = subprocess.run([*COMMAND, "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--transport",
                             "simulated"], env=clean_env(SWITCHBOARD_ADMIN_KEY="short"), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1 and "at least 16" in result.stderr


def test_stdlib_http_is_not_shadowed_from_the_repository_root():
    result = subprocess.run([sys.executable, "-c", "import http.client, bottle, waitress; "
                             "import switchboard.http.app; print(http.client.__file__)"],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "/work/" not in result.stdout.split("http")[0] or "lib/python" in result.stdout
    assert not (REPO / "http" / "__init__.py").exists()


def test_a_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*COMMAND, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d"),
                                 "--transport", "simulated"], env=clean_env(), capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
