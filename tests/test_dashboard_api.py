"""What the dashboard reads, through its cookie: a tenant sees only its own company (the
list, the figures, the chart, the stream, the log); the files are served with a strict
Content-Security-Policy and need nothing from another origin."""
from __future__ import annotations

import re

import webtest

from tests.support.http import ADMIN_KEY, build_app, running_board, wait_until


def _signed_in(web, key):
    res = web.post_json("/api/dashboard/session", {"key": key})
    return {"X-CSRF-Token": res.json["csrfToken"]}


def test_a_tenant_cookie_sees_only_its_company(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        try:
            admin = webtest.TestApp(app)
            admin_key = {"X-Api-Key": ADMIN_KEY}
            for company in ("alpha", "beta"):
                admin.post_json("/api/whatsapp/sessions", {"companyId": company}, headers=admin_key)
            board.network.scan("beta", "79990000002")
            assert wait_until(lambda: admin.get("/api/whatsapp/sessions/beta/status",
                                                headers=admin_key).json["connected"])
            admin.post_json("/api/whatsapp/sessions/beta/messages", {"to": "79001234567", "message": "x"},
                            headers=admin_key)
            tenant_key = admin.post_json("/api/keys", {"companyId": "alpha"}, headers=admin_key).json["key"]
            browser = webtest.TestApp(app)          # its own cookie jar
            csrf = _signed_in(browser, tenant_key)
            listed = browser.get("/api/whatsapp/sessions").json
            assert [s["companyId"] for s in listed["sessions"]] == ["alpha"] and listed["count"] == 1
            assert listed["metrics"]["messagesSent"] == 0                 # beta's send is not alpha's
            assert browser.get("/api/dashboard/activity").json["companyId"] == "alpha"
            assert browser.get("/api/dashboard/activity?company=beta", expect_errors=True).status_int == 404
            assert browser.get("/api/supervisor/log?company=beta", expect_errors=True).status_int == 404
            assert browser.get("/api/whatsapp/sessions/beta/events", expect_errors=True).status_int == 404
            assert browser.post_json("/api/whatsapp/sessions/beta/stop", {}, headers=csrf,
                                     expect_errors=True).status_int == 404
            assert browser.get("/api/whatsapp/metrics", expect_errors=True).status_int == 403
            assert browser.post_json("/api/whatsapp/sessions/alpha/stop", {}, headers=csrf).json["status"] == "stopped"
            # the admin's activity counts beta's send
            assert wait_until(lambda: admin.get("/api/dashboard/activity", headers=admin_key).json["messagesSent"] == 1)
        finally:
            app.switchboard.close()


def test_the_dashboard_files_are_self_contained(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        try:
            web = webtest.TestApp(app)
            page = web.get("/")
            csp = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert page.content_type == "text/html"
            for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
                assert web.get(asset).status_int == 200
            everything = page.text + web.get("/dashboard.js").text + web.get("/dashboard.css").text
            # nothing loaded from another origin (no CDN): no absolute src/href/url()/fetch/EventSource
            assert not re.search(r"""(src=|href=|url\(|@import|fetch\(|EventSource\()\s*["']?(https?:)?//""", everything)
            assert "innerHTML" not in web.get("/dashboard.js").text
            assert "<script>" not in page.text                                 # no inline script
        finally:
            app.switchboard.close()
