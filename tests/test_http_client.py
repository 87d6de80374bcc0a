"""switchboard.http.client.Client: retries with backoff honouring retryAfter, idempotency
keys on sends, an event stream that resumes by itself, and the typed calls against the
real gateway."""
from __future__ import annotations

import contextlib
import json
import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from switchboard.http.client import ApiError, Client, Unreachable
from tests.support.http import ADMIN_KEY, build_app, running_board, serving, wait_until


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def scripted(answers):
    """A server that answers the requests in turn from `answers` (status, headers, body);
    it records each request's method, path and headers."""
    seen = []
    lock = threading.Lock()

    def app(environ, start_response):
        with lock:
            seen.append({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                         "headers": {k[5:]: v for k, v in environ.items() if k.startswith("HTTP_")}})
            status, headers, body = answers[min(len(seen), len(answers)) - 1]
        start_response(status, list(headers.items()))
        return [body if isinstance(body, bytes) else json.dumps(body).encode()]

    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


JSON = {"Content-Type": "application/json"}


def test_503_and_429_are_retried_waiting_at_least_retry_after():
    answers = [("503 Service Unavailable", JSON, {"success": False, "error": "busy", "retryAfter": 1234}),
               ("429 Too Many Requests", {**JSON, "Retry-After": "3"}, {"success": False, "error": "Rate limit exceeded"}),
               ("200 OK", JSON, {"success": True, "status": "connected"})]
    slept = []
    with scripted(answers) as (url, seen):
        client = Client(url, "k" * 20, sleep=slept.append, backoff=0.01)
        assert client.status("962302")["status"] == "connected"
    assert len(seen) == 3
    assert slept[0] >= 1.234 and slept[1] >= 3.0          # the server's wait, never less
    assert all(r["headers"]["X_API_KEY"] == "k" * 20 for r in seen)


def test_retries_give_up_after_the_limit_and_other_errors_are_not_retried():
    busy = ("503 Service Unavailable", JSON, {"success": False, "error": "busy", "retryAfter": 10})
    with scripted([busy]) as (url, seen):
        with pytest.raises(ApiError) as raised:
            Client(url, "k" * 20, retries=2, sleep=lambda s: None).status("x")
        assert raised.value.status == 503 and len(seen) == 3
    bad = ("400 Bad Request", JSON, {"success": False, "error": "invalid company id"})
    with scripted([bad]) as (url, seen):
        with pytest.raises(ApiError) as raised:
            Client(url, "k" * 20, sleep=lambda s: None).status("x")
        assert raised.value.status == 400 and raised.value.error == "invalid company id" and len(seen) == 1


def test_a_send_carries_one_idempotency_key_across_its_retries():
    answers = [("503 Service Unavailable", JSON, {"success": False, "error": "busy", "retryAfter": 1}),
               ("200 OK", JSON, {"success": True, "messageId": "ABC", "queued": False})]
    with scripted(answers) as (url, seen):
        client = Client(url, "k" * 20, sleep=lambda s: None)
        assert client.send("962302", "79001234567", "Hello")["messageId"] == "ABC"
        keys = [r["headers"]["IDEMPOTENCY_KEY"] for r in seen]
        assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) >= 16
    with scripted([answers[1]]) as (url, seen):
        Client(url, "k" * 20).send("962302", "79001234567", "Hello", idempotency_key="order-1001")
        assert seen[0]["headers"]["IDEMPOTENCY_KEY"] == "order-1001"


def test_lost_connections_are_retried_only_when_safe():
    with socket.socket() as probe:            # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    slept = []
    with pytest.raises(Unreachable):
        Client(url, "k" * 20, retries=2, sleep=slept.append, timeout=1).status("x")
    assert len(slept) == 2                    # a read is safe to repeat
    slept.clear()
    with pytest.raises(Unreachable):
        Client(url, "k" * 20, retries=2, sleep=slept.append, timeout=1).reconnect("x")
    assert slept == []                        # a reconnect is not: the caller decides


def test_the_event_stream_resumes_with_last_event_id():
    first = ("200 OK", {"Content-Type": "text/event-stream"},
             b"retry: 10\n: stream open\n\nid: 7\nevent: state\ndata: {\"state\": \"qr\"}\n\n")
    second = ("200 OK", {"Content-Type": "text/event-stream"},
              b"retry: 10\n\nid: 8\nevent: state\ndata: {\"state\": \"connected\"}\n\n")
    with scripted([first, second]) as (url, seen):
        stop = threading.Event()
        events = []
        for event in Client(url, "k" * 20).events("962302", stop=stop):
            events.append(event)
            if len(events) == 2:
                stop.set()
        assert [(e.id, e.kind, e.data["state"]) for e in events] == [("7", "state", "qr"), ("8", "state", "connected")]
        assert "LAST_EVENT_ID" not in seen[0]["headers"] and seen[1]["headers"]["LAST_EVENT_ID"] == "7"
        assert seen[0]["path"] == "/api/whatsapp/sessions/962302/events"


def test_the_typed_calls_against_the_gateway(tmp_path):
    with running_board(tmp_path / "data") as board, serving(build_app(board, tmp_path / "data")) as server:
        client = Client(server.url, ADMIN_KEY)
        assert client.health()["status"] == "ok"
        created = client.create_session("962302")
        assert created["status"] == "qr" and created["qrCode"].startswith("data:image/png")
        assert client.qr_png("962302")[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.qr_svg("962302").lstrip().startswith(b"<?xml")
        board.network.scan("962302", "79990001122")
        assert wait_until(lambda: client.status("962302")["connected"])
        sent = client.send("962302", "79001234567", "Hello")
        assert sent["messageId"] and sent["status"] == "sent"
        listed = client.sessions()
        assert listed["count"] == 1 and listed["metrics"]["activeConnections"] == 1
        assert wait_until(lambda: client.sessions()["metrics"]["messagesSent"] == 1)
        assert client.metrics()["totalSessions"] == 1
        assert "switchboard_sessions" in client.prometheus()
        assert client.session_health("962302")["healthy"] is True
        tenant = client.create_key("962302", "crm")
        assert [k["id"] for k in client.keys()] == [tenant["id"]]
        assert Client(server.url, tenant["key"]).status("962302")["connected"] is True
        client.revoke_key(tenant["id"])
        with pytest.raises(ApiError) as raised:
            Client(server.url, tenant["key"]).status("962302")
        assert raised.value.status == 401
        assert any(r["event"] == "state" for r in client.supervisor_log(company="962302"))
        assert len(client.activity()["minutes"]) == 60
        with pytest.raises(ApiError) as raised:
            client.status("nobody")
        assert raised.value.status == 404 and raised.value.error == "Session not found for company nobody"
        assert client.delete("962302")["removed"] is True


# Every route the app mounts, and the Client method that calls it (or why none does).
CLIENT_METHODS = {
    ("GET", "/health"): "health", ("GET", "/openapi.json"): "openapi", ("GET", "/metrics"): "prometheus",
    ("GET", "/api/whatsapp/metrics"): "metrics", ("GET", "/api/whatsapp/sessions"): "sessions",
    ("POST", "/api/whatsapp/sessions"): "create_session", ("GET", "/api/whatsapp/sessions/<companyId>"): "session",
    ("GET", "/api/whatsapp/sessions/<companyId>/status"): "status",
    ("GET", "/api/whatsapp/sessions/<companyId>/health"): "session_health",
    ("POST", "/api/whatsapp/sessions/<companyId>/initialize"): "initialize",
    ("POST", "/api/whatsapp/sessions/<companyId>/start"): "start",
    ("POST", "/api/whatsapp/sessions/<companyId>/stop"): "stop",
    ("POST", "/api/whatsapp/sessions/<companyId>/reconnect"): "reconnect",
    ("POST", "/api/whatsapp/sessions/<companyId>/logout"): "logout",
    ("DELETE", "/api/whatsapp/sessions/<companyId>"): "delete",
    ("POST", "/api/whatsapp/sessions/<companyId>/messages"): "send",
    ("POST", "/api/whatsapp/sessions/<companyId>/send"): None,       # the same send as /messages, other field name
    ("POST", "/webhook/whatsapp/baileys/send"): "webhook_send",
    ("GET", "/api/whatsapp/sessions/<companyId>/qr"): "qr",
    ("GET", "/api/whatsapp/sessions/<companyId>/qr.png"): "qr_png",
    ("GET", "/api/whatsapp/sessions/<companyId>/qr.svg"): "qr_svg",
    ("POST", "/api/whatsapp/sessions/<companyId>/pairing-code"): "pairing_code",
    ("GET", "/api/whatsapp/events"): "events", ("GET", "/api/whatsapp/sessions/<companyId>/events"): "events",
    ("GET", "/api/supervisor/log"): "supervisor_log", ("POST", "/api/keys"): "create_key", ("GET", "/api/keys"): "keys",
    ("DELETE", "/api/keys/<keyId>"): "revoke_key",
    ("GET", "/webhook/whatsapp/baileys/health/<companyId>"): "old_health",
    ("GET", "/api/dashboard/activity"): "activity",
    ("GET", "/api/whatsapp/sessions/<companyId>/webhook"): "webhook",
    ("PUT", "/api/whatsapp/sessions/<companyId>/webhook"): "set_webhook",
    ("DELETE", "/api/whatsapp/sessions/<companyId>/webhook"): "delete_webhook",
    ("GET", "/api/webhooks/dead"): "dead_letters", ("POST", "/api/webhooks/dead/replay"): "replay_dead_letters",
    ("POST", "/api/simulator/companies/<companyId>/scan"): "simulate_scan",
    ("POST", "/api/simulator/companies/<companyId>/faults"): "simulate_fault",
    ("POST", "/api/simulator/inbound"): "simulate_inbound",
    ("GET", "/api/simulator/phones/<phone>/messages"): "simulated_phone_messages",
    ("GET", "/api/simulator/connections"): "simulated_connections",
}
BROWSER_ONLY = {"/", "/dashboard.css", "/dashboard.js", "/api/dashboard/session", "/qr/<companyId>",
                "/baileys-qr-web.html"}


def test_every_endpoint_has_a_client_method():
    from switchboard.http.app import routes
    missing = [(r.method, r.rule) for r in routes(True)
               if r.rule not in BROWSER_ONLY and (r.method, r.rule) not in CLIENT_METHODS]
    assert not missing, f"routes without a Client method (add one, and a line here): {missing}"
    for name in filter(None, CLIENT_METHODS.values()):
        assert callable(getattr(Client, name)), name
