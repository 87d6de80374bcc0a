"""The dashboard in a real browser: headless Chromium (Debian's `chromium`) against
`switchboard serve --transport simulated`. Signs in with the admin key, creates a company,
sees its QR code, has the simulated phone scan it, and sees `connected` without a reload
(the event stream, authenticated by the HttpOnly cookie alone). Saves a screenshot."""
from __future__ import annotations

import pytest

from tests.support.browser import CHROMIUM, chromium, dashboard_flow
from tests.support.http import Http, Served

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup test)")]


def test_sign_in_create_scan_and_see_connected_without_a_reload(tmp_path):
    served = Served(tmp_path / "data", "--transport", "simulated")
    try:
        key = (served.data_dir / "admin.key").read_text().strip()
        http = Http(served.url, key)

        def scan():
            status, _, body = http.post("/api/simulator/companies/962302/scan", {"phone": "79686484488"})
            assert status == 200, body

        def traffic():
            for text in ("Your order shipped", "Thanks!"):
                http.post("/api/whatsapp/sessions/962302/messages", {"to": "79001234567", "message": text})
            http.post("/api/simulator/inbound", {"companyId": "962302", "from": "79001234567", "text": "Hi"})

        shot = tmp_path / "dashboard.png"
        with chromium() as browser:
            seen = dashboard_flow(browser, served.url, key, scan, screenshot=shot, traffic=traffic)
        assert seen["qrSrc"].startswith("data:image/png;base64,")
        assert seen["statusBefore"] == "qr" and len(seen["pairingCode"]) == 9
        assert seen["notReloaded"] is True
        assert seen["live"] == "live"
        assert seen["cookieVisibleToScript"] is False            # HttpOnly: no script can read the session
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        served.stop()


def test_the_qr_page_survives_a_gateway_restart_and_never_shows_json(tmp_path):
    data = tmp_path / "data"
    first = Served(data, "--transport", "simulated")
    second = None
    try:
        key = (data / "admin.key").read_text().strip()
        status, _, created = Http(first.url, key).post("/api/whatsapp/sessions", {"companyId": "962302"})
        assert status == 201
        port = first.url.rsplit(":", 1)[1]
        with chromium() as browser:
            browser.navigate(first.url + created["pageUrl"])
            browser.wait_for("document.querySelector('#content .qr svg')")
            first.stop()
            # the gateway is gone: the page stays, says so in words, and keeps trying
            browser.wait_for("document.body.classList.contains('offline')", timeout=20)
            assert browser.evaluate("!!document.querySelector('#content .qr svg')")
            second = Served(data, "--transport", "simulated", "--port", port)      # same address, same secret
            browser.wait_for("!document.body.classList.contains('offline') && "
                             "document.querySelector('#content .qr svg')", timeout=20)
            Http(second.url, key).post("/api/simulator/companies/962302/scan", {"phone": "79686484488"})
            browser.wait_for("document.body.getAttribute('data-done') === '1' && "
                             "document.getElementById('content').textContent.includes('+79686484488')", timeout=20)
            text = browser.evaluate("document.body.innerText")
            assert '"success"' not in text and "{" not in text
    finally:
        if first.proc.poll() is None:
            first.kill()
        if second is not None:
            second.stop()
