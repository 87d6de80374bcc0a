"""`switchboard simulator` as its own process, and `serve --simulator-url` linked to it over
sockets: a killed gateway really drops its links, and a restarted one reconnects with the
credentials it stored, without a new QR, while the service never sees two live links."""
from __future__ import annotations

import json
import signal
import stat
import os

import pytest

from tests.support.http import Http, wait_until
from tests.support.simulator import GATEWAY_KEY, SIMULATOR_KEY, SimulatorProcess, serve_linked
from tests.test_http_server import EventStream

pytestmark = pytest.mark.timeout(120)
PHONES = {"acme": "79990000001", "globex": "79990000002", "initech": "79990000003"}


@pytest.fixture
def simulator(tmp_path):
    sim = SimulatorProcess(tmp_path / "sim")
    yield sim
    sim.stop()


def status(http: Http, company_id: str) -> dict:
    return http.get(f"/api/whatsapp/sessions/{company_id}/status")[2]


def link_company(http: Http, simulator: SimulatorProcess, company_id: str, phone: str) -> None:
    code, _, body = http.post("/api/whatsapp/sessions", {"companyId": company_id})
    assert code in (200, 201), body
    assert wait_until(lambda: status(http, company_id)["status"] == "qr", timeout=10)
    simulator.client.scan(company_id, phone)
    assert wait_until(lambda: status(http, company_id)["status"] == "connected", timeout=10), status(http, company_id)


def test_the_service_answers_its_control_api_with_its_own_key(simulator):
    assert "admin key: from SWITCHBOARD_SIMULATOR_KEY" in simulator.banner and SIMULATOR_KEY not in simulator.banner
    http = Http(simulator.url, SIMULATOR_KEY)
    assert http.get("/health", key=False)[0] == 200
    link = http.get("/api/simulator/link", key=False)[2]
    assert link["host"] == "127.0.0.1" and link["port"] > 0
    assert http.get("/api/simulator/connections", key=False)[0] == 401
    assert http.get("/api/simulator/connections", key="wrong-key-wrong-key")[0] == 401
    assert http.get("/api/simulator/connections")[0] == 200
    assert http.post("/api/simulator/companies/nobody/faults", {"fault": "drop"})[0] == 404
    assert http.post("/api/simulator/companies/nobody/faults", {"fault": "melt"})[0] == 400
    assert http.post("/api/simulator/companies/bad%20id/scan", {"phone": "79990001122"})[0] == 400
    assert http.get("/api/simulator/phones/12/messages")[0] == 400
    assert stat.S_IMODE(os.stat(simulator.data_dir / "simulator.sqlite3").st_mode) == 0o600


def test_a_gateway_links_sends_and_receives_through_the_service(simulator, tmp_path):
    gateway = serve_linked(tmp_path / "gw", simulator)
    try:
        assert f"transport simulated at {simulator.url}" in gateway.banner
        http = Http(gateway.url, GATEWAY_KEY)
        # the gateway does not mount the control API: the service answers it
        assert http.get("/api/simulator/connections")[0] == 404
        http.post("/api/whatsapp/sessions", {"companyId": "acme"})
        assert wait_until(lambda: status(http, "acme")["status"] == "qr", timeout=10)
        qr = http.get("/api/whatsapp/sessions/acme/qr")[2]
        assert qr["qr"].startswith("https://wa.me/settings/linked_devices#2@") and len(qr["qr"].split(",")) == 5
        simulator.client.scan("acme", "79990001122")
        assert wait_until(lambda: status(http, "acme")["status"] == "connected", timeout=10)
        assert json.loads((tmp_path / "gw" / "acme" / "simulated-device.json").read_text())["phone"] == "79990001122"

        sent = http.post("/api/whatsapp/sessions/acme/send", {"phone": "79001234567", "message": "hello"})[2]
        assert sent["status"] == "sent"
        assert [m["text"] for m in simulator.client.messages("79001234567")] == ["hello"]
        assert [m["id"] for m in simulator.client.messages("79001234567")] == [sent["messageId"]]

        stream = EventStream(gateway.url, "/api/whatsapp/sessions/acme/events?events=message", key=GATEWAY_KEY)
        try:
            simulator.client.deliver_inbound("acme", "79001234567", "plain")
            simulator.client.deliver_inbound("acme", "79005550000", "from a LID", as_lid=True)
            got = stream.wait_for(lambda e: e["data"].get("text") == "from a LID", timeout=10)
            assert got is not None, stream.events
            plain = next(e for e in stream.events if e["data"].get("text") == "plain")
            assert plain["data"]["phone"] == "79001234567"
            # the LID sender's phone comes from the service's LID store, the chat stays the LID
            assert got["data"]["phone"] == "79005550000" and got["data"]["chat"].endswith("@lid")
        finally:
            stream.close()
        seen = simulator.client.connections()
        assert seen["companies"]["acme"] == {"live": 1, "maxSeen": 1, "phone": "79990001122"}
        assert seen["accounts"]["79990001122"]["maxSeen"] == 1
    finally:
        assert gateway.stop()[0] == 0
    # a gateway that stopped closed its link: the service saw it go
    assert wait_until(lambda: simulator.client.live_count("acme") == 0)


def test_sigkill_serve_then_restart_reconnects_every_company_without_a_qr(simulator, tmp_path):
    data = tmp_path / "gw"
    gateway = serve_linked(data, simulator)
    http = Http(gateway.url, GATEWAY_KEY)
    for company_id, phone in PHONES.items():
        link_company(http, simulator, company_id, phone)
    assert all(simulator.client.live_count(c) == 1 for c in PHONES)

    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(10)
    gateway.kill()
    # the kernel closed the dead gateway's sockets: the service sees every link end
    assert wait_until(lambda: all(simulator.client.live_count(c) == 0 for c in PHONES), timeout=10), \
        simulator.client.connections()
    held = simulator.client.deliver_inbound("acme", "79001234567", "while the gateway was down")

    again = serve_linked(data, simulator)
    try:
        http = Http(again.url, GATEWAY_KEY)
        for company_id in PHONES:
            assert wait_until(lambda: status(http, company_id)["status"] == "connected", timeout=15), \
                status(http, company_id)
        # without a QR: the restarted gateway's log shows no QR state for any company
        log = [json.loads(line) for line in (data / "supervisor.log").read_text().splitlines()]
        restarted = max(i for i, r in enumerate(log) if r["event"] == "gateway" and r.get("action") == "started")
        assert not [r for r in log[restarted:] if r["event"] == "state" and r.get("state") == "qr"]
        # the message that came while it was down was held and delivered on reconnect
        assert wait_until(lambda: status(http, "acme")["messagesReceived"] == 1, timeout=10), status(http, "acme")
        seen = simulator.client.connections()
        for company_id, phone in PHONES.items():
            assert seen["companies"][company_id]["maxSeen"] == 1, seen
            assert seen["companies"][company_id]["live"] == 1
            assert seen["accounts"][phone]["maxSeen"] == 1, seen
        assert held
    finally:
        assert again.stop()[0] == 0


def test_a_killed_simulator_comes_back_and_the_gateway_reconnects_without_a_qr(tmp_path):
    import socket
    with socket.socket() as probe:                 # a port for the service to have again after its restart
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim = SimulatorProcess(tmp_path / "sim", "--port", str(port))
    gateway = serve_linked(tmp_path / "gw", sim, WHATSAPP_RECONNECT_BASE_DELAY="100",
                           WHATSAPP_RECONNECT_MAX_DELAY="500", WHATSAPP_MAX_RECONNECT_ATTEMPTS="100")
    try:
        http = Http(gateway.url, GATEWAY_KEY)
        link_company(http, sim, "acme", "79990001122")
        sim.proc.send_signal(signal.SIGKILL)
        sim.stop()
        assert wait_until(lambda: status(http, "acme")["status"] == "reconnecting", timeout=10), status(http, "acme")
        sim = SimulatorProcess(tmp_path / "sim", "--port", str(port))     # its links on a new port: asked again
        assert wait_until(lambda: status(http, "acme")["status"] == "connected", timeout=20), status(http, "acme")
        assert sim.client.connections()["companies"]["acme"]["maxSeen"] == 1
    finally:
        assert gateway.stop()[0] == 0
        sim.stop()


def test_the_simulator_generates_a_private_key_and_stops_cleanly(tmp_path):
    import subprocess
    from tests.support.http import COMMAND, clean_env
    data = tmp_path / "sim"
    proc = subprocess.Popen([*COMMAND, "simulator", "--port", "0", "--data-dir", str(data)], env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        key_file = data / "admin.key"
        assert "serving http://127.0.0.1:" in banner and f"generated and stored {key_file}" in banner
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        url = banner.split("serving ", 1)[1].split(" ", 1)[0]
        assert Http(url, key_file.read_text().strip()).get("/api/simulator/connections")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopped" in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--transport", "neonize", "--simulator-url", "http://127.0.0.1:4000"], "needs --transport simulated"),
    (["--transport", "simulated", "--simulator-url", "ftp://127.0.0.1:4000"], "must be http://host:port"),
    (["--transport", "simulated", "--simulator-url", "http://127.0.0.1"], "must be http://host:port"),
    (["--transport", "simulated", "--simulator-url", "http://127.0.0.1:4000/x?y"], "must be http://host:port"),
])
def test_a_bad_simulator_url_is_refused_before_anything_starts(tmp_path, args, message):
    import subprocess
    from tests.support.http import COMMAND, clean_env
    result = subprocess.run([*COMMAND, "serve", "--port", "0", "--data-dir", str(tmp_path / "gw"), *args],
                            env=clean_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "gw" / "admin.key").exists()


def test_the_simulator_url_from_the_environment():
    from switchboard.supervision.config import Config
    config = Config.from_env({"SWITCHBOARD_TRANSPORT": "simulated", "SWITCHBOARD_SIMULATOR_URL": "http://127.0.0.1:4000",
                              "SWITCHBOARD_SIMULATOR_KEY": "k" * 20})
    assert config.transport_options() == {"simulator_url": "http://127.0.0.1:4000"}
    assert config.simulator_key == "k" * 20
    assert Config.from_env({"SWITCHBOARD_TRANSPORT": "simulated"}).transport_options() == {}
