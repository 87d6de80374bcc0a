"""The replaced system's own commands and snippets, run against `switchboard serve`.

The curl commands of its migration report and the axios snippets of its architecture
document (/work/shared/seeds/) run as written, changed only in the host (a free port)
and one added header: the API key. They must get the shapes they expect: the list's
`count`/`sessions`/`metrics`, `qrCode` on create, the old error texts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest

from tests.support.http import Http, Served, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_MODULES = os.path.join(REPO, ".venv", "node", "node_modules")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("old") / "data", "--transport", "simulated")
    try:
        yield server
    finally:
        server.stop()


def _key(served) -> str:
    return (served.data_dir / "admin.key").read_text().strip()


def _curl(*args: str) -> dict:
    out = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (scripts/setup test installs it)")
def test_the_migration_reports_curl_commands(served):
    """Its 'Commands Reference', each with `-H "X-Api-Key: $KEY"` added and the host changed."""
    key = ["-H", f"X-Api-Key: {_key(served)}"]
    base = served.url
    init = _curl("-X", "POST", f"{base}/api/whatsapp/sessions/962302/initialize", *key)
    assert init["success"] is True and init["qrCode"].startswith("data:image/png;base64,")
    status = _curl(f"{base}/api/whatsapp/sessions/962302/status", *key)
    assert status["success"] is True and status["companyId"] == "962302" and status["status"] == "qr"
    # a send before the phone is linked: the old "Authentication required" with the QR to scan
    refused = _curl("-X", "POST", f"{base}/api/whatsapp/sessions/962302/send", *key,
                    "-H", "Content-Type: application/json", "-d", '{"phone":"79001234567","message":"Test message"}')
    assert refused["success"] is False and refused["error"] == "Authentication required"
    assert refused["qrCode"].startswith("data:image/png;base64,")
    # the same through the old webhook endpoint, which names the company in the body
    refused = _curl("-X", "POST", f"{base}/webhook/whatsapp/baileys/send", *key, "-H", "Content-Type: application/json",
                    "-d", '{"companyId":"962302","phone":"79001234567","message":"Test message"}')
    assert refused["error"] == "Authentication required" and refused["qrCode"].startswith("data:image/png")
    Http(base, _key(served)).post("/api/simulator/companies/962302/scan", {"phone": "79936363848"})
    assert wait_until(lambda: _curl(f"{base}/api/whatsapp/sessions/962302/status", *key)["connected"], 10)
    sent = _curl("-X", "POST", f"{base}/api/whatsapp/sessions/962302/send", *key,
                 "-H", "Content-Type: application/json", "-d", '{"phone":"79001234567","message":"Test message"}')
    assert sent["success"] is True and sent["messageId"]
    reconnect = _curl("-X", "POST", f"{base}/api/whatsapp/sessions/962302/reconnect", *key)
    assert reconnect["success"] is True
    # the migration report's "Connection Test" shape
    assert wait_until(lambda: _curl(f"{base}/api/whatsapp/sessions/962302/status", *key)["connected"], 10)
    connection = _curl(f"{base}/api/whatsapp/sessions/962302/status", *key)
    assert connection["health"] == {"healthy": True, "phoneNumber": "79936363848@s.whatsapp.net"}
    metrics = _curl(f"{base}/api/whatsapp/metrics", *key)
    assert metrics["success"] is True and metrics["messagesSent"] >= 1 and metrics["activeConnections"] >= 0
    # the diagnostic endpoint of the old webhook module, and the old "not found" text
    health = _curl(f"{base}/webhook/whatsapp/baileys/health/962302", *key)
    assert health["success"] is True and health["companyId"] == "962302" and "recommendations" in health
    assert isinstance(health["provider"], dict) and isinstance(health["history"], list)
    missing = _curl(f"{base}/api/whatsapp/sessions/nobody/status", *key)
    assert missing == {"success": False, "error": "Session not found for company nobody"}
    assert _curl(f"{base}/health")["success"] is True             # no key needed, as before


SNIPPETS = textwrap.dedent("""
    // The architecture document's snippets, verbatim but for the host (BASE) and the key
    // header, added once as an axios default: the one thing an old client must add.
    const axios = require('axios');
    axios.defaults.headers.common['X-Api-Key'] = process.env.SWITCHBOARD_KEY;
    const BASE = process.env.BASE;
    const seen = [];
    const log = console.log, err = console.error;
    console.log = (...a) => { seen.push(['log', ...a]); };
    console.error = (...a) => { seen.push(['error', ...a]); };

    async function createWhatsAppSession(companyId) {
      try {
        const response = await axios.post(`${BASE}/api/whatsapp/sessions`, {
          companyId: companyId
        });

        if (response.data.qrCode) {
          console.log('Scan this QR code:', response.data.qrCode);
        } else {
          console.log('Session created:', response.data);
        }
      } catch (error) {
        console.error('Failed to create session:', error.response.data);
      }
    }

    async function sendWhatsAppMessage(companyId, phoneNumber, message) {
      try {
        const response = await axios.post(
          `${BASE}/api/whatsapp/sessions/${companyId}/messages`,
          {
            to: phoneNumber,
            message: message
          }
        );

        console.log('Message sent:', response.data);
      } catch (error) {
        console.error('Failed to send message:', error.response.data);
      }
    }

    async function monitorSessions() {
      try {
        const response = await axios.get(`${BASE}/api/whatsapp/sessions`);

        response.data.sessions.forEach(session => {
          console.log(`Company ${session.companyId}: ${session.status}`);
          if (session.lastError) {
            console.log(`  Last error: ${session.lastError}`);
          }
        });
        // what the old dashboards read
        console.log('metrics', response.data.count, response.data.metrics.totalSessions,
                    response.data.metrics.activeConnections, response.data.metrics.messagesSent,
                    response.data.metrics.messagesReceived);
      } catch (error) {
        console.error('Failed to get sessions:', error);
      }
    }

    (async () => {
      await createWhatsAppSession('js-company');
      await sendWhatsAppMessage('js-company', '79001234567', 'Hello from WhatsApp Business!');
      await sendWhatsAppMessage('no-such-company', '79001234567', 'Hello');
      await monitorSessions();
      log(JSON.stringify(seen));
    })();
""")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (scripts/setup test installs it)")
def test_the_architecture_documents_axios_snippets(served, tmp_path):
    if not os.path.isdir(os.path.join(NODE_MODULES, "axios")):
        pytest.skip("axios is not installed in .venv/node (scripts/setup test installs it with npm)")
    script = tmp_path / "snippets.js"
    script.write_text(SNIPPETS)
    result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "NODE_PATH": NODE_MODULES, "BASE": served.url,
                                 "SWITCHBOARD_KEY": _key(served)})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # createWhatsAppSession finds qrCode and takes the "scan" branch
    assert seen[0][:2] == ["log", "Scan this QR code:"] and seen[0][2].startswith("data:image/png;base64,")
    # a send before linking: the old shape, with the QR code to scan
    assert seen[1][:2] == ["error", "Failed to send message:"]
    assert seen[1][2]["error"] == "Authentication required" and seen[1][2]["qrCode"].startswith("data:image/png")
    assert seen[2] == ["error", "Failed to send message:",
                       {"success": False, "error": "Session not found for company no-such-company"}]
    company_lines = [s[1] for s in seen[3:] if s[0] == "log" and s[1].startswith("Company ")]
    assert "Company js-company: qr" in company_lines
    metrics = next(s for s in seen if s[:2] == ["log", "metrics"])
    count, total, active, sent, received = metrics[2:]
    assert count == total >= 1 and active >= 0 and sent >= 0 and received >= 0


def test_totals_never_go_down_when_a_session_is_deleted(served):
    http = Http(served.url, _key(served))
    http.post("/api/whatsapp/sessions", {"companyId": "totals"})
    http.post("/api/simulator/companies/totals/scan", {"phone": "79990007777"})
    assert wait_until(lambda: http.get("/api/whatsapp/sessions/totals/status")[2].get("connected"), 10)
    assert http.post("/api/whatsapp/sessions/totals/messages", {"to": "79001234567", "message": "one"})[0] == 200
    http.post("/api/simulator/inbound", {"companyId": "totals", "from": "79001234567", "text": "hi"})
    assert wait_until(lambda: http.get("/api/whatsapp/sessions")[2]["metrics"]["messagesReceived"] >= 1, 10)
    before = http.get("/api/whatsapp/sessions")[2]["metrics"]
    assert http.delete("/api/whatsapp/sessions/totals")[0] == 200
    after = http.get("/api/whatsapp/sessions")[2]["metrics"]
    assert after["messagesSent"] >= before["messagesSent"] >= 1
    assert after["messagesReceived"] >= before["messagesReceived"] >= 1
    assert after["totalSessions"] == before["totalSessions"] - 1
    assert http.get("/api/whatsapp/metrics")[2]["messagesSent"] >= before["messagesSent"]


def test_the_old_qr_page_path_is_a_page_for_a_person(served):
    http = Http(served.url, _key(served))
    status, _, created = http.post("/api/whatsapp/sessions", {"companyId": "qrpage"})
    token = created["pageUrl"].split("token=", 1)[1]
    status, headers, page = http.get(f"/baileys-qr-web.html?companyId=qrpage&token={token}", key=False)
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"<svg" in page
    status, headers, page = http.get("/baileys-qr-web.html?companyId=qrpage", key=False)
    assert status == 401 and headers["Content-Type"].startswith("text/html") and b"success" not in page
