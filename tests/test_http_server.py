"""The API served by waitress on a free port: the whole flow over real sockets, event
streams, a stuck actor, body limits, and a graceful shutdown with a request in flight."""
from __future__ import annotations

import http.client as httpclient
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from switchboard.actors.ratelimit import RateLimit

from tests.support.http import (ADMIN_KEY, BlockingTransport, Http, build_app, connect_session, running_board,
                                 serving, wait_until)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def board(tmp_path):
    with running_board(tmp_path / "data") as board:
        yield board


@pytest.fixture
def server(board, tmp_path):
    with serving(build_app(board, tmp_path / "data", sse_max_streams=2)) as server:
        yield server


@pytest.fixture
def http(server):
    return Http(server.url)


class EventStream:
    """A minimal SSE client on http.client; records every event until closed."""

    def __init__(self, url: str, path: str, key: str | None = ADMIN_KEY, headers: dict[str, str] | None = None):
        parts = urlsplit(url)
        self.conn = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.conn.connect()
        self.sock = self.conn.sock
        self.conn.request("GET", path, headers={**({"X-Api-Key": key} if key else {}), **(headers or {})})
        self.response = self.conn.getresponse()
        self.events: list[dict] = []
        self.comments: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.response.status == 200:
            self._thread.start()

    def _read(self) -> None:
        event: dict = {}
        try:
            while True:
                line = self.response.readline()
                if not line:
                    return
                line = line.decode().rstrip("\n")
                if line.startswith(":"):
                    with self._changed:
                        self.comments.append(line)
                        self._changed.notify_all()
                elif line == "":
                    if "data" in event:
                        with self._changed:
                            self.events.append(event)
                            self._changed.notify_all()
                    event = {}
                else:
                    name, _, value = line.partition(": ")
                    event[name] = json.loads(value) if name == "data" else value
        except Exception:              # the stream was closed under the reader: it ends
            return

    def wait_for(self, predicate, timeout: float = 5.0):
        with self._changed:
            self._changed.wait_for(lambda: any(predicate(e) for e in self.events), timeout)
            return next((e for e in self.events if predicate(e)), None)

    def wait_comment(self, text: str, timeout: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in c for c in self.comments), timeout)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.conn.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def test_the_whole_flow_over_http(http, board):
    assert http.get("/health", key=False)[0] == 200
    status, _, body = http.post("/api/whatsapp/sessions", {"companyId": "962302"})
    assert status == 201 and body["status"] == "qr" and body["qr"]
    status, headers, png = http.get("/api/whatsapp/sessions/962302/qr.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and png.startswith(b"\x89PNG")
    assert http.post("/api/simulator/companies/962302/scan", {"phone": "79990001122"})[0] == 200
    assert wait_until(lambda: http.get("/api/whatsapp/sessions/962302/status")[2]["connected"])
    status, _, sent = http.post("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "Hi"})
    assert status == 200 and sent["messageId"]
    _, _, received = http.get("/api/simulator/phones/79001234567/messages")
    assert [m["text"] for m in received["messages"]] == ["Hi"]
    _, _, metrics = http.get("/api/whatsapp/metrics")
    assert metrics["activeConnections"] == 1 and metrics["messagesSent"] == 1
    status, _, body = http.delete("/api/whatsapp/sessions/962302")
    assert status == 200 and body["removed"] is True


def test_rate_limit_over_http_has_retry_after(tmp_path):
    with running_board(tmp_path / "data", rate_limit=RateLimit(max_messages=5, window=60,
                                                               per_recipient_max=1)) as board:
        with serving(build_app(board, tmp_path / "data")) as server:
            http = Http(server.url)
            connect_session(http, "962302")
            assert http.post("/api/whatsapp/sessions/962302/send", {"phone": "79001234567", "message": "a"})[0] == 200
            status, headers, body = http.post("/api/whatsapp/sessions/962302/send",
                                              {"phone": "79001234567", "message": "b"})
            assert status == 429 and body["scope"] == "recipient" and body["retryAfter"] > 0
            assert int(headers["Retry-After"]) >= 1
            assert http.post("/api/whatsapp/sessions/962302/send", {"phone": "79007654321", "message": "c"})[0] == 200


def test_large_body_gets_a_json_413(http):
    http.post("/api/whatsapp/sessions", {"companyId": "962302"})
    big = json.dumps({"phone": "79001234567", "message": "x" * 700_000}).encode()
    status, headers, body = http.post("/api/whatsapp/sessions/962302/send", raw=big)
    assert status == 413 and headers["Content-Type"] == "application/json" and body["success"] is False


def test_event_stream_delivers_messages_and_state(server, http, board):
    connect_session(http, "962302")
    stream = EventStream(server.url, "/api/whatsapp/sessions/962302/events")
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        assert stream.wait_comment("stream open")
        board.network.deliver_inbound("962302", "79001234567", "hello there", message_id="IN-1")
        event = stream.wait_for(lambda e: e.get("event") == "message")
        assert event is not None, stream.events
        assert event["data"]["text"] == "hello there" and event["data"]["phone"] == "79001234567"
        assert event["data"]["companyId"] == "962302" and int(event["id"]) == event["data"]["seq"]
        http.post("/api/whatsapp/sessions/962302/stop")
        assert stream.wait_for(lambda e: e.get("event") == "state" and e["data"]["state"] == "stopped")
        assert stream.wait_comment("ping", timeout=3)                 # heartbeats (0.5 s in these tests)
    finally:
        stream.close()
    assert wait_until(lambda: server.state.streams.count == 0)      # unsubscribed on disconnect


def test_event_stream_resumes_after_last_event_id(server, http, board):
    connect_session(http, "962302")
    first = board.network.deliver_inbound("962302", "79001234567", "one")
    board.network.deliver_inbound("962302", "79001234567", "two")
    assert wait_until(lambda: len([e for e in board.bus.recent(0) if e.kind == "message"]) == 2)
    history = [e for e in board.bus.recent(0) if e.kind == "message"]
    assert [e.data["id"] for e in history][:1] == [first]
    stream = EventStream(server.url, "/api/whatsapp/sessions/962302/events?events=message",
                         headers={"Last-Event-ID": str(history[0].seq)})
    try:
        event = stream.wait_for(lambda e: e.get("event") == "message")
        assert event["data"]["text"] == "two"                           # what came after, not "one"
        board.network.deliver_inbound("962302", "79001234567", "three")
        assert stream.wait_for(lambda e: e["data"].get("text") == "three")
        assert all(e["event"] == "message" for e in stream.events)
        assert [e["data"]["text"] for e in stream.events] == ["two", "three"]
    finally:
        stream.close()


def test_global_stream_of_a_tenant_key_carries_only_its_company(server, http, board):
    connect_session(http, "alpha", "79990000001")
    connect_session(http, "beta", "79990000002")
    _, _, created = http.post("/api/keys", {"companyId": "alpha"})
    stream = EventStream(server.url, "/api/whatsapp/events?events=message", key=created["key"])
    try:
        assert stream.wait_comment("stream open")
        board.network.deliver_inbound("beta", "79001234567", "for beta")
        board.network.deliver_inbound("alpha", "79001234567", "for alpha")
        assert stream.wait_for(lambda e: e["data"].get("text") == "for alpha")
        assert [e["data"]["companyId"] for e in stream.events] == ["alpha"]
    finally:
        stream.close()


def test_event_streams_are_capped(server, http):
    http.post("/api/whatsapp/sessions", {"companyId": "962302"})
    streams = [EventStream(server.url, "/api/whatsapp/events") for _ in range(2)]
    try:
        assert all(s.response.status == 200 for s in streams)
        assert all(s.wait_comment("stream open") for s in streams)
        status, headers, body = http.get("/api/whatsapp/events")
        assert status == 503 and "too many" in body["error"] and headers["Retry-After"]
        assert http.get("/api/whatsapp/sessions/962302/status")[0] == 200    # requests are not starved
    finally:
        for s in streams:
            s.close()
    assert wait_until(lambda: server.state.streams.count == 0)
    again = EventStream(server.url, "/api/whatsapp/events")
    try:
        assert again.response.status == 200
    finally:
        again.close()


@pytest.fixture
def stuck(tmp_path):
    """A served gateway whose company "stuck" hangs in connect() until released:
    (transport, board, client)."""
    transport = BlockingTransport(stuck={"stuck"})
    with running_board(tmp_path / "data", transport=transport, ask_timeout=0.5) as board:
        try:
            with serving(build_app(board, tmp_path / "data")) as server:
                yield transport, board, Http(server.url)
        finally:
            transport.release.set()


def test_a_stuck_actor_answers_503_and_never_hangs_a_request(stuck):
    transport, _, http = stuck
    started = time.monotonic()
    status, headers, body = http.post("/api/whatsapp/sessions", {"companyId": "stuck"})
    assert transport.entered.is_set()
    assert status == 503 and body["error"] == "session actor did not answer within 0.5 s"
    assert headers["Retry-After"] == "1" and body["retryAfter"] == 1000
    assert time.monotonic() - started < 3
    for method, path in [("GET", "/api/whatsapp/sessions/stuck/status"),
                         ("GET", "/api/whatsapp/sessions/stuck"),
                         ("POST", "/api/whatsapp/sessions/stuck/stop")]:
        started = time.monotonic()
        status, _, body = http.request(method, path)
        assert status == 503 and "did not answer" in body["error"], body
        assert time.monotonic() - started < 2
    status, _, body = http.post("/api/whatsapp/sessions/stuck/send", {"phone": "79001234567", "message": "x"})
    assert status == 503
    # every other company is unaffected, and listing never asks an actor
    assert http.post("/api/whatsapp/sessions", {"companyId": "fine"})[0] == 201
    assert http.get("/api/whatsapp/sessions")[0] == 200
    transport.release.set()
    assert wait_until(lambda: http.get("/api/whatsapp/sessions/stuck/status")[0] == 200)


def test_delete_of_a_stuck_session_answers_503_at_once_and_removes_nothing(stuck, tmp_path):
    transport, board, http = stuck
    assert http.post("/api/whatsapp/sessions", {"companyId": "stuck"})[0] == 503
    started = time.monotonic()
    status, _, body = http.delete("/api/whatsapp/sessions/stuck")
    assert status == 503 and "did not answer" in body["error"], body
    assert time.monotonic() - started < 3
    assert (tmp_path / "data" / "stuck").exists() and board.exists("stuck")
    transport.release.set()
    assert wait_until(lambda: http.delete("/api/whatsapp/sessions/stuck")[0] == 200)
    assert not (tmp_path / "data" / "stuck").exists()


def test_graceful_shutdown_finishes_the_request_in_flight(board, tmp_path):
    app = build_app(board, tmp_path / "data")
    with serving(app) as server:
        http = Http(server.url)
        connect_session(http, "962302")
        board.network.fault("962302", "latency", 1.0)                 # WhatsApp takes 1 s to ack a send
        result = {}

        def slow_send():
            result["answer"] = http.post("/api/whatsapp/sessions/962302/send",
                                         {"phone": "79001234567", "message": "in flight"})
        sender = threading.Thread(target=slow_send)
        sender.start()
        assert wait_until(lambda: server.server.task_dispatcher.active_count > 0)
        started = time.monotonic()
        server.shutdown()
        assert wait_until(lambda: app.switchboard.draining.is_set())
        sender.join(10)
        status, _, body = result["answer"]
        assert status == 200 and body["messageId"], body
        server.shutdown(wait=True)
        assert time.monotonic() - started < 8
        with pytest.raises(OSError):
            socket.create_connection((server.host, server.port), timeout=1).close()


def test_shutdown_ends_open_event_streams(board, tmp_path):
    app = build_app(board, tmp_path / "data", sse_heartbeat=30)
    with serving(app) as server:
        http = Http(server.url)
        http.post("/api/whatsapp/sessions", {"companyId": "962302"})
        stream = EventStream(server.url, "/api/whatsapp/events")
        try:
            assert stream.wait_comment("stream open")
            started = time.monotonic()
            server.shutdown(wait=True)
            assert time.monotonic() - started < 4          # not the 30 s heartbeat, not the drain timeout
            assert stream.wait_for(lambda e: e.get("event") == "close")
            assert not _port_open(server)
        finally:
            stream.close()


def _port_open(server) -> bool:
    try:
        socket.create_connection((server.host, server.port), timeout=1).close()
        return True
    except OSError:
        return False
