"""Every entry point under malformed input, revocation, greedy tenants and slow clients.

* waitress's own errors (before the app runs) are JSON like the app's;
* any header value of any length or alphabet (keys, cookies, CSRF tokens, event ids,
  idempotency keys) answers a clear 4xx, never a 500;
* a revoked key loses access at once: its requests, its dashboard cookie, its open streams;
* the dashboard cookie is HttpOnly/SameSite=Strict, and state changes with it need the CSRF token;
* no tenant or client address takes more than its share of request threads or streams;
* half-open and slow clients do not make the gateway unreachable, and idle ones are dropped.
"""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request

import pytest
import webtest
from hypothesis import HealthCheck, given, settings, strategies as st

from switchboard.http.limits import Shares, TooMany
from switchboard.http.server import GracefulServer
from tests.support.http import (ADMIN_KEY, BlockingTransport, Http, build_app, connect_session, running_board,
                                wait_until)


@contextlib.contextmanager
def served(app, **adjustments):
    server = GracefulServer(app, host="127.0.0.1", port=0, threads=4, drain_timeout=5, **adjustments).start_in_thread()
    try:
        yield server
    finally:
        server.shutdown(wait=True)
        app.switchboard.close()


def raw(server, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def json_of(answer: bytes) -> tuple[int, dict, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_waitress_own_errors_are_json(tmp_path):
    with running_board(tmp_path / "data") as board, served(build_app(board, tmp_path / "data")) as server:
        cases = {
            "header block over the limit": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
            "path over the limit": b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "negative Content-Length": b"POST /api/whatsapp/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            "Content-Length not a number": b"POST /api/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
            "a header line without a colon": b"GET /health HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n",
            "body over waitress's limit": (b"POST /api/whatsapp/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                           b"application/json\r\nContent-Length: 5000000\r\n\r\n"),
            "bad chunked encoding": (b"POST /api/keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"zz\r\n"),
        }
        for name, request in cases.items():
            status, headers, body = json_of(raw(server, request))
            assert 400 <= status < 500, name
            assert headers["content-type"] == "application/json", name
            assert body["success"] is False and body["error"], name
        # the gateway still answers normally
        assert Http(server.url).get("/health")[0] == 200


HEADERS = st.sampled_from(["HTTP_X_API_KEY", "HTTP_AUTHORIZATION", "HTTP_COOKIE", "HTTP_X_CSRF_TOKEN",
                           "HTTP_LAST_EVENT_ID", "HTTP_IDEMPOTENCY_KEY", "CONTENT_TYPE"])
# WSGI header values are latin-1 strings: any byte, any length
VALUES = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=3000) | \
    st.sampled_from(["", "Bearer ", "bearer x", "sb_session=", "sb_session=sbs1.admin.9999999999.x.y",
                     "sb_session=" + "a" * 5000, "sbk_", "sbk__", "sbk_zz_", "\x00", "Bearer \udcff".encode(
                         "utf-8", "surrogateescape").decode("latin-1")])
PATHS = st.sampled_from(["/api/whatsapp/sessions", "/api/whatsapp/sessions/962302/status", "/api/dashboard/session",
                         "/api/dashboard/activity", "/qr/962302", "/baileys-qr-web.html?companyId=962302",
                         "/webhook/whatsapp/baileys/health/962302", "/api/keys"])


def test_any_header_value_answers_4xx_or_success_never_500(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        web = webtest.TestApp(app)
        web.post_json("/api/whatsapp/sessions", {"companyId": "962302"}, headers={"X-Api-Key": ADMIN_KEY})

        @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(path=PATHS, method=st.sampled_from(["GET", "POST", "DELETE"]),
               headers=st.dictionaries(HEADERS, VALUES, max_size=4))
        def check(path, method, headers):
            res = web.request(path, method=method, environ=dict(headers), expect_errors=True)
            assert res.status_int < 500, (path, method, headers, res.text[:300])
            if res.status_int >= 400:
                assert res.content_type in ("application/json", "text/html"), res.content_type
        try:
            check()
        finally:
            app.switchboard.close()


def test_a_revoked_key_loses_its_open_stream_its_cookie_and_its_requests_at_once(tmp_path):
    with running_board(tmp_path / "data") as board, served(build_app(board, tmp_path / "data",
                                                                     sse_heartbeat=30)) as server:
        admin = Http(server.url)
        admin.post("/api/whatsapp/sessions", {"companyId": "962302"})
        status, _, created = admin.post("/api/keys", {"companyId": "962302"})
        tenant_key, key_id = created["key"], created["id"]
        # a dashboard cookie for the tenant key
        status, headers, who = Http(server.url, None).post("/api/dashboard/session", {"key": tenant_key}, key=False)
        assert status == 200 and who["companyId"] == "962302"
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert Http(server.url, None).get("/api/whatsapp/sessions/962302/status", key=False,
                                          headers={"Cookie": cookie})[0] == 200
        # an open stream with the key: the heartbeat is 30 s, so only the revocation can end it soon
        request = urllib.request.Request(server.url + "/api/whatsapp/sessions/962302/events",
                                         headers={"X-Api-Key": tenant_key})
        stream = urllib.request.urlopen(request, timeout=20)
        assert stream.readline().startswith(b"retry:")
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
        reader.start()
        assert wait_until(lambda: server.state.streams.count == 1)
        started = time.monotonic()
        assert admin.delete(f"/api/keys/{key_id}")[0] == 200
        reader.join(10)
        assert not reader.is_alive() and time.monotonic() - started < 5        # ended, not at the next ping
        assert b"event: close\n" in lines and any(b"API key revoked" in line for line in lines)
        assert wait_until(lambda: server.state.streams.count == 0)
        stream.close()
        assert Http(server.url, tenant_key).get("/api/whatsapp/sessions/962302/status")[0] == 401
        assert Http(server.url, None).get("/api/whatsapp/sessions/962302/status", key=False,
                                          headers={"Cookie": cookie})[0] == 401


def test_the_dashboard_cookie_is_httponly_strict_and_needs_the_csrf_token_to_change_anything(tmp_path):
    with running_board(tmp_path / "data") as board, served(build_app(board, tmp_path / "data")) as server:
        anon = Http(server.url, None)
        assert anon.post("/api/dashboard/session", {"key": "wrong-key-wrong-key"}, key=False)[0] == 401
        status, headers, who = anon.post("/api/dashboard/session", {"key": ADMIN_KEY}, key=False)
        assert status == 200 and who["admin"] is True and who["csrfToken"]
        set_cookie = headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "samesite=strict" in set_cookie.lower() and "Path=/" in set_cookie
        assert ADMIN_KEY not in set_cookie
        cookie = {"Cookie": set_cookie.split(";", 1)[0]}
        status, _, body = anon.post("/api/whatsapp/sessions", {"companyId": "962302"}, key=False, headers=cookie)
        assert status == 403 and "CSRF" in body["error"] and not board.exists("962302")     # nothing changed
        status, _, body = anon.post("/api/whatsapp/sessions", {"companyId": "962302"}, key=False,
                                    headers={**cookie, "X-CSRF-Token": "forged"})
        assert status == 403 and not board.exists("962302")
        status, _, body = anon.post("/api/whatsapp/sessions", {"companyId": "962302"}, key=False,
                                    headers={**cookie, "X-CSRF-Token": who["csrfToken"]})
        assert status == 201
        # reads need no token (EventSource cannot send one); the cookie survives a restart's secret
        assert anon.get("/api/dashboard/session", key=False, headers=cookie)[2]["csrfToken"] == who["csrfToken"]
        # a tampered cookie is no cookie
        bad = {"Cookie": cookie["Cookie"][:-3] + "xyz"}
        assert anon.get("/api/whatsapp/sessions", key=False, headers=bad)[0] == 401


def test_failed_sign_ins_are_limited_per_address(tmp_path):
    with running_board(tmp_path / "data") as board, served(build_app(board, tmp_path / "data")) as server:
        anon = Http(server.url, None)
        codes = [anon.post("/api/dashboard/session", {"key": f"guess-{n:020d}"}, key=False)[0] for n in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        status, headers, body = anon.post("/api/dashboard/session", {"key": ADMIN_KEY}, key=False)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and body["retryAfter"] > 0


def test_shares_cap_requests_per_key_and_per_address_but_not_the_admin():
    shares = Shares(per_key=2, per_address=2, streams_per_address=1)
    from switchboard.http.auth import ADMIN, Principal
    a, b = Principal(False, "a", "ka"), Principal(False, "b", "kb")
    with contextlib.ExitStack() as held:
        held.enter_context(shares.request(a, "10.0.0.1"))
        held.enter_context(shares.request(a, "10.0.0.2"))
        with pytest.raises(TooMany, match="API key"):
            held.enter_context(shares.request(a, "10.0.0.3"))
        held.enter_context(shares.request(b, "10.0.0.1"))
        with pytest.raises(TooMany, match="address"):
            held.enter_context(shares.request(None, "10.0.0.1"))
        for _ in range(10):
            held.enter_context(shares.request(ADMIN, "10.0.0.1"))
    with shares.request(a, "10.0.0.1"), shares.request(a, "10.0.0.1"):     # released: free again
        pass


def test_a_tenant_holding_its_share_gets_429_while_others_are_served(tmp_path):
    transport = BlockingTransport(stuck={"stuck"})
    with running_board(tmp_path / "data", transport=transport, ask_timeout=2.0) as board, \
            served(build_app(board, tmp_path / "data", max_requests_per_key=1)) as server, \
            contextlib.ExitStack() as cleanup:
        cleanup.callback(transport.release.set)
        admin = Http(server.url)
        connect_session(admin, "other")
        admin.post("/api/whatsapp/sessions", {"companyId": "stuck"})     # its actor hangs in connect()
        assert transport.entered.wait(10)
        greedy = Http(server.url, admin.post("/api/keys", {"companyId": "stuck"})[2]["key"])
        polite = Http(server.url, admin.post("/api/keys", {"companyId": "other"})[2]["key"])
        slow = threading.Thread(target=lambda: greedy.get("/api/whatsapp/sessions/stuck", timeout=20), daemon=True)
        slow.start()                                            # waits for the stuck actor (ask timeout)
        cleanup.callback(slow.join, 20)
        assert wait_until(lambda: server.state.shares._keys.get(greedy_id(server)) == 1, 5)
        status, headers, body = greedy.get("/api/whatsapp/sessions/stuck/status")
        assert status == 429 and body["scope"] == "client" and "Retry-After" in headers
        assert polite.get("/api/whatsapp/sessions/other/status")[0] == 200
        assert admin.get("/api/whatsapp/metrics")[0] == 200


def greedy_id(server) -> str:
    return next(k["id"] for k in server.state.keys.list() if k["companyId"] == "stuck")


def test_streams_are_capped_per_client_address_for_tenants(tmp_path):
    with running_board(tmp_path / "data") as board, served(build_app(board, tmp_path / "data",
                                                                     max_streams_per_address=1)) as server:
        admin = Http(server.url)
        admin.post("/api/whatsapp/sessions", {"companyId": "a"})
        admin.post("/api/whatsapp/sessions", {"companyId": "b"})
        key_a = admin.post("/api/keys", {"companyId": "a"})[2]["key"]
        key_b = admin.post("/api/keys", {"companyId": "b"})[2]["key"]
        first = urllib.request.urlopen(urllib.request.Request(server.url + "/api/whatsapp/events",
                                                              headers={"X-Api-Key": key_a}), timeout=10)
        try:
            assert first.readline().startswith(b"retry:")
            status, _, body = Http(server.url, key_b).get("/api/whatsapp/events")
            assert status == 429 and "stream" in body["error"]            # same address, another tenant
            admin_stream = urllib.request.urlopen(urllib.request.Request(
                server.url + "/api/whatsapp/events", headers={"X-Api-Key": ADMIN_KEY}), timeout=10)
            assert admin_stream.readline().startswith(b"retry:")          # the admin is never locked out
            admin_stream.close()
        finally:
            first.close()
        assert wait_until(lambda: server.state.shares._streams.get("127.0.0.1", 0) == 0, 10)


def test_half_open_and_slow_clients_neither_block_others_nor_stay_forever(tmp_path):
    with running_board(tmp_path / "data") as board, \
            served(build_app(board, tmp_path / "data"), channel_timeout=2, cleanup_interval=1) as server:
        idle = []
        for n in range(60):                      # more than the 4 request threads, many times over
            s = socket.create_connection((server.host, server.port), timeout=10)
            if n % 2:
                s.sendall(b"POST /api/whatsapp/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            else:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")            # headers never end
            idle.append(s)
        try:
            started = time.monotonic()
            assert Http(server.url).get("/health", timeout=5)[0] == 200
            assert time.monotonic() - started < 2
            # the idle ones are closed by the server after channel_timeout (waitress checks every ~1 s)
            for s in idle[:4]:
                s.settimeout(15)
                assert s.recv(65536) == b""
        finally:
            for s in idle:
                s.close()


def test_one_address_cannot_take_every_connection(tmp_path):
    with running_board(tmp_path / "data") as board, \
            served(build_app(board, tmp_path / "data"), connections_per_address=5) as server:
        held = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(5)]
        try:
            assert wait_until(lambda: sum(1 for c in server.server._map.values() if hasattr(c, "requests")) == 5)
            status, headers, body = json_of(raw(server, b""))      # refused at once, before any request
            assert status == 503 and body["success"] is False and "connections" in body["error"]
        finally:
            for s in held:
                s.close()
        assert wait_until(lambda: Http(server.url).get("/health")[0] == 200)


@pytest.mark.parametrize("simulator", [True, False])
def test_the_openapi_document_is_valid_in_every_mode(tmp_path, simulator):
    from openapi_spec_validator import validate
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data", simulator=simulator)
        try:
            spec = json.loads(app.switchboard.spec_bytes)
            validate(spec)
            assert any(p.startswith("/api/simulator") for p in spec["paths"]) is simulator
            assert "/" in spec["paths"] and "/api/dashboard/session" in spec["paths"]
        finally:
            app.switchboard.close()
