"""Routing, auth, validation and error shapes of the HTTP API, through WebTest (no sockets)."""
from __future__ import annotations

import json
import os
import re
import stat

import pytest
import webtest

from switchboard.actors.ratelimit import RateLimit
from switchboard.http.app import routes
from switchboard.http.auth import ApiKeys
from switchboard.http.metrics import Counters
from switchboard.http.openapi import build_spec
from switchboard.supervision.events import Event
from switchboard.supervision.health import recommendations

from tests.support.http import ADMIN_KEY, build_app, running_board, wait_until

pytestmark = pytest.mark.timeout(60)
ADMIN = {"X-Api-Key": ADMIN_KEY}


@pytest.fixture
def board(tmp_path):
    with running_board(tmp_path / "data") as board:
        yield board


@pytest.fixture
def app(board, tmp_path):
    app = build_app(board, tmp_path / "data")
    yield app
    app.switchboard.close()


@pytest.fixture
def web(app):
    return webtest.TestApp(app)


def is_html_error(res, status):
    """The QR page's errors: a page for a person, never JSON."""
    assert res.status_int == status, res.text
    assert res.content_type == "text/html", res.content_type
    assert "<!doctype html>" in res.text and '"success"' not in res.text
    return res.text


def is_json_error(res, status):
    assert res.status_int == status, res.text
    assert res.content_type == "application/json", res.content_type
    assert res.json["success"] is False
    assert isinstance(res.json["error"], str) and res.json["error"]
    assert "Traceback" not in res.text and "<html" not in res.text.lower()
    return res.json


def create(web, company_id="962302"):
    return web.post_json("/api/whatsapp/sessions", {"companyId": company_id}, headers=ADMIN)


def link(web, board, company_id="962302", phone="79990001122"):
    create(web, company_id)
    web.post_json(f"/api/simulator/companies/{company_id}/scan", {"phone": phone}, headers=ADMIN)
    assert wait_until(lambda: web.get(f"/api/whatsapp/sessions/{company_id}/status",
                                      headers=ADMIN).json["status"] == "connected")


def tenant_key(web, company_id):
    return web.post_json("/api/keys", {"companyId": company_id, "name": "t"}, headers=ADMIN).json["key"]


# ---- health, auth -------------------------------------------------------------------------

def test_health_needs_no_key(web):
    res = web.get("/health")
    assert res.json["success"] is True and res.json["status"] == "ok"


@pytest.mark.parametrize("path", ["/api/whatsapp/sessions", "/api/whatsapp/metrics", "/metrics", "/openapi.json",
                                  "/api/supervisor/log", "/api/keys", "/api/whatsapp/sessions/x/status",
                                  "/api/simulator/connections"])
def test_every_other_endpoint_needs_a_key(web, path):
    body = is_json_error(web.get(path, expect_errors=True), 401)
    assert "API key" in body["error"]
    assert web.get(path, expect_errors=True).headers["WWW-Authenticate"] == "Bearer"
    is_json_error(web.get(path, headers={"X-Api-Key": "wrong-key-wrong-key"}, expect_errors=True), 401)
    is_json_error(web.get(path, headers={"Authorization": "Bearer wrong-key-wrong"}, expect_errors=True), 401)


def test_admin_key_as_header_or_bearer(web):
    assert web.get("/api/whatsapp/sessions", headers=ADMIN).json["success"] is True
    assert web.get("/api/whatsapp/sessions", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json["total"] == 0
    is_json_error(web.get("/api/whatsapp/sessions", headers={"Authorization": f"Basic {ADMIN_KEY}"},
                          expect_errors=True), 401)


def test_tenant_keys_see_only_their_company(web, board):
    link(web, board, "alpha", "79990000001")
    link(web, board, "beta", "79990000002")
    key = {"X-Api-Key": tenant_key(web, "alpha")}
    assert web.get("/api/whatsapp/sessions/alpha/status", headers=key).json["status"] == "connected"
    assert [s["companyId"] for s in web.get("/api/whatsapp/sessions", headers=key).json["sessions"]] == ["alpha"]
    # another company's session: 404, exactly as if it did not exist; nothing leaks
    for method, path in [("GET", "/api/whatsapp/sessions/beta/status"), ("GET", "/api/whatsapp/sessions/beta"),
                         ("GET", "/api/whatsapp/sessions/beta/qr"), ("GET", "/api/whatsapp/sessions/beta/health"),
                         ("POST", "/api/whatsapp/sessions/beta/stop"), ("POST", "/api/whatsapp/sessions/beta/logout"),
                         ("DELETE", "/api/whatsapp/sessions/beta"), ("GET", "/api/whatsapp/sessions/beta/events"),
                         ("POST", "/api/whatsapp/sessions/beta/initialize")]:
        res = web.request(path, method=method, headers=key, expect_errors=True)
        body = is_json_error(res, 404)
        assert "79990000002" not in res.text and body["error"] == "Session not found for company beta"
    # the QR page speaks to a person: the same 404, as an HTML page that leaks nothing
    res = web.get("/qr/beta", headers=key, expect_errors=True)
    assert res.status_int == 404 and res.content_type == "text/html" and "79990000002" not in res.text
    is_json_error(web.post_json("/api/whatsapp/sessions/beta/send", {"phone": "79001234567", "message": "x"},
                                headers=key, expect_errors=True), 404)
    is_json_error(web.post_json("/webhook/whatsapp/baileys/send",
                                {"companyId": "beta", "phone": "79001234567", "message": "x"},
                                headers=key, expect_errors=True), 404)
    is_json_error(web.post_json("/api/whatsapp/sessions", {"companyId": "beta"}, headers=key,
                                expect_errors=True), 403)
    is_json_error(web.get("/api/supervisor/log?company=beta", headers=key, expect_errors=True), 404)
    records = web.get("/api/supervisor/log", headers=key).json["records"]
    assert records and {r["companyId"] for r in records} == {"alpha"}
    # admin-only endpoints
    for path in ["/api/keys", "/metrics", "/api/whatsapp/metrics", "/api/simulator/connections"]:
        is_json_error(web.get(path, headers=key, expect_errors=True), 403)
    is_json_error(web.post_json("/api/simulator/companies/alpha/faults", {"fault": "drop"}, headers=key,
                                expect_errors=True), 403)
    # the tenant's own company works end to end
    sent = web.post_json("/api/whatsapp/sessions/alpha/send", {"phone": "79001234567", "message": "hi"},
                         headers=key)
    assert sent.json["status"] == "sent"
    assert web.get("/api/whatsapp/sessions/beta/status", headers=ADMIN).json["messagesSent"] == 0


def test_tenant_keys_are_stored_hashed_and_revocable(web, tmp_path):
    created = web.post_json("/api/keys", {"companyId": "alpha"}, headers=ADMIN)
    assert created.status_int == 201
    key, key_id = created.json["key"], created.json["id"]
    path = tmp_path / "data" / "api-keys.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    stored = path.read_text()
    assert key not in stored and key.split("_", 2)[2] not in stored
    listed = web.get("/api/keys", headers=ADMIN).json["keys"]
    assert listed == [{"id": key_id, "companyId": "alpha", "name": None, "createdAt": created.json["createdAt"]}]
    # survives a restart (the digests are reloaded)
    reloaded = ApiKeys(path, ADMIN_KEY)
    assert reloaded.authenticate(key).company_id == "alpha"
    assert reloaded.authenticate(key + "x") is None
    assert web.get("/api/whatsapp/sessions", headers={"X-Api-Key": key}).json["success"]
    assert web.delete(f"/api/keys/{key_id}", headers=ADMIN).json["revoked"] is True
    is_json_error(web.get("/api/whatsapp/sessions", headers={"X-Api-Key": key}, expect_errors=True), 401)
    is_json_error(web.delete(f"/api/keys/{key_id}", headers=ADMIN, expect_errors=True), 404)
    is_json_error(web.delete("/api/keys/not-a-key-id", headers=ADMIN, expect_errors=True), 404)
    is_json_error(web.post_json("/api/keys", {"companyId": "bad id"}, headers=ADMIN, expect_errors=True), 400)


# ---- validation: 400 and nothing created -------------------------------------------------

BAD_IDS = ["", "a" * 51, "bad id", "bad.id", "../etc", "ä", "a/b", None, 42, ["x"]]


@pytest.mark.parametrize("company_id", BAD_IDS)
def test_invalid_company_id_in_body_creates_nothing(web, board, tmp_path, company_id):
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    body = is_json_error(web.post_json("/api/whatsapp/sessions", {"companyId": company_id}, headers=ADMIN,
                                       expect_errors=True), 400)
    assert "companyId" in body["error"]
    assert board.company_ids() == []
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before


@pytest.mark.parametrize("company_id", ["bad%20id", "bad.id", "a" * 51, "%C3%A4", "x%00y", "x%3Cb%3E"])
@pytest.mark.parametrize("suffix", ["/initialize", "/status", "/start", ""])
def test_invalid_company_id_in_path_creates_nothing(web, board, tmp_path, company_id, suffix):
    before = sorted(p.name for p in (tmp_path / "data").iterdir())
    method = "POST" if suffix in ("/initialize", "/start") else "GET"
    is_json_error(web.request(f"/api/whatsapp/sessions/{company_id}{suffix}", method=method, headers=ADMIN,
                              expect_errors=True), 400)
    assert board.company_ids() == []
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == before


@pytest.mark.parametrize("body, message", [
    ({"phone": "12345", "message": "hi"}, "invalid phone number"),
    ({"phone": "7900123456789012", "message": "hi"}, "invalid phone number"),
    ({"phone": "abc", "message": "hi"}, "invalid phone number"),
    ({"phone": "٧٩٠٠١٢٣٤٥٦٧", "message": "hi"}, "invalid phone number"),
    ({"phone": "²²²²²²²²", "message": "hi"}, "invalid phone number"),
    ({"phone": "٧٩٠٠١٢٣٤٥٦٧@s.whatsapp.net", "message": "hi"}, "not a user JID"),
    ({"phone": "123@g.us", "message": "hi"}, "not a user JID"),
    ({"phone": "", "message": "hi"}, "phone number is required"),
    ({"message": "hi"}, "'phone' is required"),
    ({"phone": 79001234567, "message": "hi"}, "'phone' must be a string"),
    ({"phone": "79001234567"}, "'message' is required"),
    ({"phone": "79001234567", "message": "   "}, "must not be empty"),
    ({"phone": "79001234567", "message": ["x"]}, "'message' must be a string"),
    ({"phone": "79001234567", "message": "x" * 65537}, "longer than 65536"),
    ({"phone": "79001234567", "message": "\ud800"}, "not valid Unicode"),       # a lone surrogate
])
def test_send_validation(web, board, body, message):
    link(web, board)
    res = web.post_json("/api/whatsapp/sessions/962302/send", body, headers=ADMIN, expect_errors=True)
    assert message in is_json_error(res, 400)["error"]
    status = web.get("/api/whatsapp/sessions/962302/status", headers=ADMIN).json
    assert status["messagesSent"] == 0 and status["queued"] == 0


def test_phone_formats_are_accepted(web, board):
    link(web, board)
    for phone in ["+7 (900) 123-45-67", "79001234567@s.whatsapp.net", "7900-123-4567"]:
        res = web.post_json("/api/whatsapp/sessions/962302/messages", {"to": phone, "message": "hi"}, headers=ADMIN)
        assert res.json["to"] == "79001234567"
    assert len(board.network.messages("79001234567")) == 3


def test_body_errors(web, board):
    create(web)
    url = "/api/whatsapp/sessions/962302/send"
    res = web.post(url, "phone=1&message=2", headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"},
                   expect_errors=True)
    assert "application/json" in is_json_error(res, 415)["error"]
    is_json_error(web.post(url, "hello", headers={**ADMIN, "Content-Type": "text/plain"}, expect_errors=True), 415)
    is_json_error(web.post(url, "", headers={**ADMIN, "Content-Type": "application/json"}, expect_errors=True), 400)
    assert "invalid JSON" in is_json_error(web.post(url, "{nope", headers={**ADMIN, "Content-Type": "application/json"},
                                                    expect_errors=True), 400)["error"]
    assert "JSON object" in is_json_error(web.post(url, "[1, 2]", headers={**ADMIN, "Content-Type": "application/json"},
                                                   expect_errors=True), 400)["error"]
    big = json.dumps({"phone": "79001234567", "message": "x" * 600_000})
    is_json_error(web.post(url, big, headers={**ADMIN, "Content-Type": "application/json"}, expect_errors=True), 413)
    # a body on a body-less command must be JSON too
    is_json_error(web.post("/api/whatsapp/sessions/962302/stop", "x", headers={**ADMIN, "Content-Type": "text/plain"},
                           expect_errors=True), 415)
    assert web.post("/api/whatsapp/sessions/962302/stop", headers=ADMIN).json["status"] == "stopped"


@pytest.mark.parametrize("path", ["/api/whatsapp/sessions/962302/qr.png?scale=%B2", "/api/supervisor/log?limit=%B2"])
def test_numbers_in_the_query_take_ascii_digits_only(web, board, path):
    create(web)
    res = web.get(path, headers=ADMIN, expect_errors=True)        # '\u00b2' passes str.isdigit(), not int()
    assert "must be a whole number" in is_json_error(res, 400)["error"]


def test_unknown_route_and_wrong_method_are_json(web):
    body = is_json_error(web.get("/nope", headers=ADMIN, expect_errors=True), 404)
    assert "/nope" in body["error"]
    is_json_error(web.get("/nope", expect_errors=True), 404)
    res = web.put("/api/whatsapp/sessions", headers=ADMIN, expect_errors=True)
    is_json_error(res, 405)
    assert "GET" in res.headers["Allow"] and "POST" in res.headers["Allow"]
    is_json_error(web.delete("/health", expect_errors=True), 405)
    is_json_error(web.get("/api/whatsapp/sessions/962302/send", headers=ADMIN, expect_errors=True), 405)


def test_unexpected_exception_is_a_json_500_without_traceback(web, board, monkeypatch):
    def broken():
        raise RuntimeError("secret internal detail")
    monkeypatch.setattr(board, "statuses", broken)
    res = web.get("/api/whatsapp/sessions", headers=ADMIN, expect_errors=True)
    assert is_json_error(res, 500)["error"] == "internal server error"
    assert "secret internal detail" not in res.text


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("GET", "/status"), ("GET", "/health"), ("GET", "/qr"),
                                            ("GET", "/qr.png"), ("GET", "/qr.svg"), ("POST", "/start"),
                                            ("POST", "/stop"), ("POST", "/reconnect"), ("POST", "/logout"),
                                            ("DELETE", ""), ("GET", "/events")])
def test_unknown_session_is_404(web, board, method, suffix):
    is_json_error(web.request(f"/api/whatsapp/sessions/nobody{suffix}", method=method, headers=ADMIN,
                              expect_errors=True), 404)
    assert board.company_ids() == []


@pytest.mark.parametrize("events", ["nope", "message,nope", ",", "STATE"])
def test_event_streams_take_known_event_kinds_only(web, board, events):
    create(web)
    for path in ("/api/whatsapp/events", "/api/whatsapp/sessions/962302/events"):
        body = is_json_error(web.get(f"{path}?events={events}", headers=ADMIN, expect_errors=True), 400)
        assert "'events' must be a comma-separated list of event kinds" in body["error"]
        assert "message.sent" in body["error"]          # it names the kinds there are


# ---- sessions ---------------------------------------------------------------------------------

def test_create_returns_status_and_qr(web, board):
    res = create(web)
    assert res.status_int == 201
    body = res.json
    assert body["success"] is True and body["created"] is True
    assert body["companyId"] == "962302" and body["status"] == "qr" and body["qrAvailable"] is True
    assert body["qr"].startswith("https://wa.me/settings/linked_devices#") and body["qrDataUrl"].startswith("data:image/png;base64,")
    assert body["pageUrl"].startswith("/qr/962302?token=")
    again = create(web)
    assert again.status_int == 200 and again.json["created"] is False and again.json["qr"] == body["qr"]


def test_initialize_creates_starts_and_returns_the_qr(web, board):
    body = web.post("/api/whatsapp/sessions/962302/initialize", headers=ADMIN).json
    assert body["status"] == "qr" and body["qr"].startswith("https://wa.me/settings/linked_devices#")
    board.network.scan("962302", "79990001122")
    assert wait_until(lambda: web.get("/api/whatsapp/sessions/962302/status", headers=ADMIN).json["connected"])
    body = web.post_json("/api/whatsapp/sessions/962302/initialize", {}, headers=ADMIN).json
    assert body["status"] == "connected" and body["qr"] is None and body["phoneNumber"] == "+79990001122"


def test_lifecycle_commands(web, board):
    link(web, board)
    base = "/api/whatsapp/sessions/962302"
    show = web.get(base, headers=ADMIN).json
    assert show["status"] == "connected" and show["transport"] == "simulated" and show["connectionAlive"] is True
    assert web.post(f"{base}/stop", headers=ADMIN).json["status"] == "stopped"
    assert web.post(f"{base}/start", headers=ADMIN).json["status"] in ("starting", "connected")
    assert wait_until(lambda: web.get(f"{base}/status", headers=ADMIN).json["connected"])
    assert web.post(f"{base}/reconnect", headers=ADMIN).json["status"] in ("starting", "connected")
    assert wait_until(lambda: web.get(f"{base}/status", headers=ADMIN).json["connected"])
    out = web.post(f"{base}/logout", headers=ADMIN).json
    assert out["status"] == "logged_out" and out["connected"] is False
    listed = web.get("/api/whatsapp/sessions", headers=ADMIN).json
    assert listed["total"] == 1 and listed["sessions"][0]["status"] == "logged_out"
    removed = web.delete(base, headers=ADMIN).json
    assert removed == {"success": True, "companyId": "962302", "removed": True, "loggedOut": True}
    assert board.company_ids() == []
    is_json_error(web.get(f"{base}/status", headers=ADMIN, expect_errors=True), 404)


def test_send_variants_and_idempotency(web, board):
    link(web, board)
    base = "/api/whatsapp/sessions/962302"
    a = web.post_json(f"{base}/messages", {"to": "79001234567", "message": "one"}, headers=ADMIN)
    assert a.status_int == 200 and a.json["status"] == "sent" and a.json["messageId"]
    b = web.post_json(f"{base}/send", {"phone": "79001234567", "message": "two"}, headers=ADMIN)
    c = web.post_json("/webhook/whatsapp/baileys/send", {"companyId": "962302", "phone": "79001234567",
                                                         "message": "three"}, headers=ADMIN)
    assert b.json["messageId"] and c.json["messageId"] and c.json["companyId"] == "962302"
    keyed = {**ADMIN, "Idempotency-Key": "order-17"}
    first = web.post_json(f"{base}/send", {"phone": "79001234567", "message": "four"}, headers=keyed).json
    again = web.post_json(f"{base}/send", {"phone": "79001234567", "message": "four"}, headers=keyed).json
    assert first["messageId"] == again["messageId"] and first["id"] == again["id"]
    assert [m["text"] for m in board.network.messages("79001234567")] == ["one", "two", "three", "four"]
    is_json_error(web.post_json(f"{base}/send", {"phone": "79001234567", "message": "x"},
                                headers={**ADMIN, "Idempotency-Key": "k" * 201}, expect_errors=True), 400)


def test_reused_idempotency_key_for_another_message_is_refused(web, board):
    link(web, board)
    headers = {**ADMIN, "Idempotency-Key": "k1"}
    first = web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "hi"},
                          headers=headers)
    assert first.json["messageId"]
    res = web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234568", "message": "other"},
                        headers=headers, expect_errors=True)
    assert "different message" in is_json_error(res, 400)["error"]
    again = web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "hi"},
                          headers=headers)
    assert again.json["messageId"] == first.json["messageId"]


def test_send_while_reconnecting_is_queued_then_delivered(web, board):
    link(web, board)
    board.network.fault("962302", "refuse", 3)          # refused for 3 s: every retry in it fails
    assert wait_until(lambda: board.statuses()[0]["status"] in ("reconnecting", "starting"))
    res = web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "later"},
                        headers=ADMIN)
    assert res.status_int == 202
    assert res.json["queued"] is True and res.json["messageId"] is None and res.json["status"] == "queued"
    assert wait_until(lambda: board.statuses()[0]["status"] == "connected", timeout=10)
    assert wait_until(lambda: [m["text"] for m in board.network.messages("79001234567")] == ["later"])


def test_send_to_a_stopped_session_is_refused_with_a_reason(web, board):
    link(web, board)
    web.post("/api/whatsapp/sessions/962302/stop", headers=ADMIN)
    res = web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "x"},
                        headers=ADMIN, expect_errors=True)
    body = is_json_error(res, 409)
    assert body["status"] == "stopped" and "start it first" in body["error"]


def test_rate_limited_send_is_429_with_retry_after(tmp_path):
    with running_board(tmp_path / "data", rate_limit=RateLimit(max_messages=2, window=60,
                                                               per_recipient_max=10)) as board:
        app = build_app(board, tmp_path / "data")
        try:
            web = webtest.TestApp(app)
            link(web, board)
            for _ in range(2):
                web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "x"},
                              headers=ADMIN)
            res = web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "x"},
                                headers=ADMIN, expect_errors=True)
            body = is_json_error(res, 429)
            assert 0 < body["retryAfter"] <= 60_000 and body["scope"] == "company"
            assert 1 <= int(res.headers["Retry-After"]) <= 60
            assert abs(int(res.headers["Retry-After"]) - body["retryAfter"] / 1000) <= 1
            assert web.get("/api/whatsapp/metrics", headers=ADMIN).json["rateLimited"] == 1
            assert 'switchboard_rate_limited_total{scope="company"} 1.0' in web.get("/metrics", headers=ADMIN).text
        finally:
            app.switchboard.close()


# ---- QR, pairing --------------------------------------------------------------------------------

def test_qr_formats_and_page(web, board):
    create(web)
    base = "/api/whatsapp/sessions/962302"
    qr = web.get(f"{base}/qr", headers=ADMIN).json
    assert qr["qr"].startswith("https://wa.me/settings/linked_devices#") and qr["qrDataUrl"].startswith("data:image/png;base64,")
    png = web.get(f"{base}/qr.png", headers=ADMIN)
    assert png.content_type == "image/png" and png.body[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(web.get(f"{base}/qr.png?scale=2", headers=ADMIN).body) < len(png.body)
    svg = web.get(f"{base}/qr.svg", headers=ADMIN)
    assert svg.content_type == "image/svg+xml" and b"<svg" in svg.body
    is_json_error(web.get(f"{base}/qr.png?scale=99", headers=ADMIN, expect_errors=True), 400)
    is_json_error(web.get(f"{base}/qr.png?scale=x", headers=ADMIN, expect_errors=True), 400)
    # the page: with an API key, or with the signed token of pageUrl, never without
    page = web.get("/qr/962302", headers=ADMIN)
    assert page.content_type == "text/html" and "<svg" in page.text and 'http-equiv="refresh"' in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert web.get(qr["pageUrl"]).status_int == 200
    is_html_error(web.get("/qr/962302", expect_errors=True), 401)
    token = qr["pageUrl"].split("token=")[1]
    is_html_error(web.get(f"/qr/962302?token={token[:-2]}xx", expect_errors=True), 401)
    create(web, "other")
    is_html_error(web.get(f"/qr/other?token={token}", expect_errors=True), 401)   # bound to its company
    # linked: no QR any more
    board.network.scan("962302", "79990001122")
    assert wait_until(lambda: web.get(f"{base}/status", headers=ADMIN).json["connected"])
    body = is_json_error(web.get(f"{base}/qr", headers=ADMIN, expect_errors=True), 409)
    assert body["status"] == "connected" and "already linked" in body["error"]
    is_json_error(web.get(f"{base}/qr.png", headers=ADMIN, expect_errors=True), 409)
    done = web.get(qr["pageUrl"]).text
    assert "+79990001122" in done and 'http-equiv="refresh"' not in done and 'data-done="1"' in done


def test_a_page_token_with_non_ascii_digits_is_refused_not_500(web, board):
    create(web)
    res = web.get("/qr/962302?token=%B2.abc", expect_errors=True)     # the token is checked before any key
    is_html_error(res, 401)


def test_pairing_code(web, board):
    create(web)
    res = web.post_json("/api/whatsapp/sessions/962302/pairing-code", {"phone": "+7 999 000-11-22"}, headers=ADMIN)
    assert re.fullmatch(r"[1-9A-HJ-NP-TV-Z]{4}-[1-9A-HJ-NP-TV-Z]{4}", res.json["code"]) and res.json["phone"] == "79990001122"
    is_json_error(web.post_json("/api/whatsapp/sessions/962302/pairing-code", {"phone": "12"}, headers=ADMIN,
                                expect_errors=True), 400)
    web.post("/api/whatsapp/sessions/962302/stop", headers=ADMIN)
    body = is_json_error(web.post_json("/api/whatsapp/sessions/962302/pairing-code", {"phone": "79990001122"},
                                       headers=ADMIN, expect_errors=True), 409)
    assert body["status"] == "stopped"


# ---- health, metrics, log, documents -----------------------------------------------------------

def test_session_health_recommendations(web, board):
    create(web)
    health = web.get("/api/whatsapp/sessions/962302/health", headers=ADMIN).json
    assert health["healthy"] is False and "QR scan" in health["recommendations"][0]
    board.network.scan("962302", "79990001122")
    assert wait_until(lambda: web.get("/api/whatsapp/sessions/962302/health", headers=ADMIN).json["healthy"])
    board.network.fault("962302", "replace")
    assert wait_until(lambda: board.statuses()[0]["status"] == "conflict")
    health = web.get("/api/whatsapp/sessions/962302/health", headers=ADMIN).json
    assert health["healthy"] is False and "another client" in health["recommendations"][0]


@pytest.mark.parametrize("diagnostics, expected", [
    ({"status": "connected", "connectionAlive": False}, "Stale session"),
    ({"status": "stopped", "lastError": "QR expired"}, "Needs a new QR"),
    ({"status": "logged_out"}, "scan a new QR"),
    ({"status": "conflict"}, "another client"),
    ({"status": "banned", "nextRetryAt": "2030-01-01T00:00:00Z"}, "until 2030-01-01T00:00:00Z"),
    ({"status": "failed", "lastError": "client outdated"}, "client outdated"),
    ({"status": "reconnecting", "reconnectAttempts": 4, "reconnectsByReason": {"dropped": 4}}, "Too many reconnects"),
    ({"status": "reconnecting", "queued": 3}, "3 message(s) wait"),
])
def test_recommendations_in_plain_language(diagnostics, expected):
    healthy, advice = recommendations(diagnostics)
    assert not healthy
    assert any(expected in line for line in advice), advice


def test_metrics_json_and_prometheus(web, board):
    link(web, board)
    create(web, "waiting")
    web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "x"}, headers=ADMIN)
    board.network.deliver_inbound("962302", "79001234567", "hello")
    assert wait_until(lambda: web.get("/api/whatsapp/metrics", headers=ADMIN).json["messagesReceived"] == 1)
    m = web.get("/api/whatsapp/metrics", headers=ADMIN).json
    assert m["success"] is True and m["totalSessions"] == 2 and m["activeConnections"] == 1
    assert m["messagesSent"] == 1 and m["sessionsByState"]["qr"] == 1 and m["queuedMessages"] == 0
    board.network.fault("962302", "drop")
    assert wait_until(lambda: 'switchboard_reconnects_total{reason="dropped"} 1.0'
                      in web.get("/metrics", headers=ADMIN).text)
    text = web.get("/metrics", headers=ADMIN).text
    assert web.get("/metrics", headers=ADMIN).content_type == "text/plain"
    for line in ['switchboard_sessions{state="qr"} 1.0', "switchboard_messages_sent_total 1.0",
                 "switchboard_messages_received_total 1.0", "switchboard_messages_queued 0.0",
                 'switchboard_rate_limited_total{scope="recipient"} 0.0']:
        assert line in text, text


def test_reconnects_are_counted_by_the_cause_the_state_event_carries():
    counters = Counters()
    for data in ({"state": "reconnecting", "cause": "dropped"}, {"state": "reconnecting", "cause": "dropped"},
                 {"state": "reconnecting", "cause": "unreachable"}, {"state": "reconnecting"},
                 {"state": "connected"}):
        counters.on_event(Event(seq=1, ts=0.0, company_id="962302", kind="state", data=data))
    counters.on_event(Event(seq=2, ts=0.0, company_id="962302", kind="message.sent", data={}))
    counts = counters.snapshot()
    assert counts["reconnects"] == {"dropped": 2, "unreachable": 1, "other": 1}
    assert counts["sent"] == 1


def test_supervisor_log(web, board):
    link(web, board, "alpha", "79990000001")
    create(web, "beta")
    board.bus.flush()
    records = web.get("/api/supervisor/log", headers=ADMIN).json["records"]
    assert {"alpha", "beta"} <= {r["companyId"] for r in records}
    alpha = web.get("/api/supervisor/log?company=alpha", headers=ADMIN).json["records"]
    assert alpha and all(r["companyId"] == "alpha" for r in alpha)
    assert any(r["event"] == "state" and r.get("state") == "connected" for r in alpha)
    assert len(web.get("/api/supervisor/log?limit=2", headers=ADMIN).json["records"]) == 2
    assert web.get("/api/supervisor/log?since=1h", headers=ADMIN).json["count"] == len(records)
    assert web.get("/api/supervisor/log?since=2999-01-01T00:00:00Z", headers=ADMIN).json["records"] == []
    is_json_error(web.get("/api/supervisor/log?since=yesterday", headers=ADMIN, expect_errors=True), 400)
    is_json_error(web.get("/api/supervisor/log?limit=0", headers=ADMIN, expect_errors=True), 400)
    is_json_error(web.get("/api/supervisor/log?company=bad.id", headers=ADMIN, expect_errors=True), 400)


def _routes(app):
    return {(r.method, re.sub(r"<([^>:]+)(:[^>]*)?>", r"{\1}", r.rule)) for r in app.routes}


def _documented(spec):
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item
            if method in ("get", "post", "put", "delete", "patch")}


@pytest.mark.parametrize("simulator", [True, False])
def test_openapi_matches_the_routes_in_both_directions(board, tmp_path, simulator):
    app = build_app(board, tmp_path / "data", simulator=simulator)
    try:
        spec = json.loads(webtest.TestApp(app).get("/openapi.json", headers=ADMIN).body)
        assert spec["openapi"].startswith("3.")
        routes, documented = _routes(app), _documented(spec)
        assert routes - documented == set(), "routes missing from the OpenAPI document"
        assert documented - routes == set(), "documented operations that are not routed"
        assert any(p.startswith("/api/simulator") for _, p in routes) is simulator
        for path, item in spec["paths"].items():
            names = re.findall(r"{([^}]+)}", path)
            assert [p["name"] for p in item.get("parameters", [])] == names
    finally:
        app.switchboard.close()


def test_openapi_document_is_self_consistent():
    spec = build_spec(routes(simulator=True))
    text = json.dumps(spec)
    for ref in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert ref in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert any(code.startswith("2") for code in op["responses"]), (method, path)
            if op.get("security") != []:
                assert "401" in op["responses"], (method, path)


# ---- simulator control API ----------------------------------------------------------------

def test_simulator_api(web, board):
    body = is_json_error(web.post_json("/api/simulator/companies/962302/scan", {"phone": "79990001122"},
                                       headers=ADMIN, expect_errors=True), 404)
    assert "not showing a QR code" in body["error"]
    link(web, board)
    assert web.get("/api/simulator/connections", headers=ADMIN).json["companies"]["962302"]["live"] == 1
    web.post_json("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "hi"}, headers=ADMIN)
    got = web.get("/api/simulator/phones/+79001234567/messages", headers=ADMIN).json
    assert got["total"] == 1 and got["messages"][0]["text"] == "hi" and got["messages"][0]["from"] == "79990001122"
    inbound = web.post_json("/api/simulator/inbound", {"companyId": "962302", "from": "79001234567", "text": "yo",
                                                       "id": "M1"}, headers=ADMIN).json
    assert inbound["id"] == "M1"
    web.post_json("/api/simulator/inbound", {"companyId": "962302", "from": "79001234567", "text": "yo", "id": "M1"},
                  headers=ADMIN)
    assert wait_until(lambda: board.statuses()[0]["messagesReceived"] == 1)   # de-duplicated by id
    is_json_error(web.post_json("/api/simulator/companies/962302/faults", {"fault": "melt"}, headers=ADMIN,
                                expect_errors=True), 400)
    is_json_error(web.post_json("/api/simulator/companies/962302/faults", {"fault": "ban", "seconds": -1},
                                headers=ADMIN, expect_errors=True), 400)
    is_json_error(web.post_json("/api/simulator/inbound", {"companyId": "962302", "from": "1", "text": "x"},
                                headers=ADMIN, expect_errors=True), 400)
    is_json_error(web.post_json("/api/simulator/inbound", {"companyId": "nobody", "from": "79001234567",
                                                           "text": "x"}, headers=ADMIN, expect_errors=True), 404)
    is_json_error(web.get("/api/simulator/phones/12/messages", headers=ADMIN, expect_errors=True), 400)
    fault = web.post_json("/api/simulator/companies/962302/faults", {"fault": "drop"}, headers=ADMIN).json
    assert fault["fault"] == "drop"
    assert wait_until(lambda: any(e.kind == "state" and e.data["state"] == "reconnecting"
                                  for e in board.bus.recent(0)))


def test_simulator_api_is_absent_unless_simulated(board, tmp_path):
    app = build_app(board, tmp_path / "data", simulator=False)
    try:
        web = webtest.TestApp(app)
        is_json_error(web.get("/api/simulator/connections", headers=ADMIN, expect_errors=True), 404)
    finally:
        app.switchboard.close()


def test_a_crashed_actor_is_waited_for_or_answered_503_never_500(web, board):
    from switchboard.actors.messages import InjectedCrash

    link(web, board)
    for _ in range(3):
        board.directory.refs["962302"].tell(InjectedCrash())
        res = web.get("/api/whatsapp/sessions/962302/status", headers=ADMIN, expect_errors=True)
        if res.status_int == 503:
            body = is_json_error(res, 503)
            assert body["status"] == "restarting" and res.headers["Retry-After"]
        else:
            assert res.status_int == 200 and res.json["companyId"] == "962302"
        assert wait_until(lambda: web.get("/api/whatsapp/sessions/962302/status", headers=ADMIN,
                                          expect_errors=True).status_int == 200, timeout=10)


def test_pairing_through_the_simulator(web, board):
    create(web)
    code = web.post_json("/api/whatsapp/sessions/962302/pairing-code", {"phone": "79990001122"}, headers=ADMIN)
    assert code.json["code"]
    # the phone enters the code: a scan without a phone number links the number the code was for
    linked = web.post("/api/simulator/companies/962302/scan", headers=ADMIN).json
    assert linked["phone"] == "79990001122"
    assert wait_until(lambda: web.get("/api/whatsapp/sessions/962302/status", headers=ADMIN).json["phoneNumber"]
                      == "+79990001122")
    create(web, "other")
    body = is_json_error(web.post("/api/simulator/companies/other/scan", headers=ADMIN, expect_errors=True), 400)
    assert "phone is required" in body["error"]


def test_deeply_nested_json_is_a_400(web, board):
    create(web)
    body = "[" * 100_000 + "]" * 100_000
    res = web.post("/api/whatsapp/sessions/962302/send", body, headers={**ADMIN, "Content-Type": "application/json"},
                   expect_errors=True)
    assert "invalid JSON" in is_json_error(res, 400)["error"]


def test_a_typo_in_the_logout_flag_changes_nothing(web, board):
    link(web, board)
    body = is_json_error(web.delete("/api/whatsapp/sessions/962302?logout=flase", headers=ADMIN,
                                    expect_errors=True), 400)
    assert "logout" in body["error"]
    assert web.get("/api/whatsapp/sessions/962302/status", headers=ADMIN).json["status"] == "connected"
    assert web.delete("/api/whatsapp/sessions/962302?logout=false", headers=ADMIN).json["loggedOut"] is False
