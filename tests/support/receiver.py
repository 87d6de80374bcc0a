"""A local webhook receiver for the delivery tests and the bench: checks every signature."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def signature_ok(secret: str, headers, body: bytes, tolerance: float = 300) -> bool:
    """What a receiver runs (the README shows the same check)."""
    timestamp = headers.get("X-Switchboard-Timestamp", "")
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= tolerance
    return fresh and hmac.compare_digest(expected, headers.get("X-Switchboard-Signature", ""))


class Receiver:
    """POSTs land in `requests` (headers, body, arrival time). `answer(path, headers, body)`
    may return (status, extra headers); `answers` is a list of statuses for the next requests."""

    def __init__(self, secret: str | None = None, answers=(), answer: Callable | None = None) -> None:
        self.secret = secret
        self.requests: list[tuple[dict, bytes, float]] = []
        self.bad_signatures = 0
        self.answers = list(answers)
        self.answer = answer
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    return          # the sender died mid-request (a killed gateway): nothing arrived
                headers = dict(self.headers)
                status, extra = 200, {}
                if receiver.secret is not None and not signature_ok(receiver.secret, headers, body):
                    status = 401
                elif receiver.answer is not None:
                    status, extra = receiver.answer(self.path, headers, body)
                elif receiver.answers:
                    status = receiver.answers.pop(0)
                with receiver.got:
                    if status == 401:
                        receiver.bad_signatures += 1
                    receiver.requests.append((headers, body, time.time(), self.path, status))
                    receiver.got.notify_all()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass            # a sender killed mid-request resets its connection: expected here
        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> list[dict]:
        """The bodies answered 2xx, in arrival order."""
        with self.got:
            return [json.loads(r[1]) for r in self.requests if 200 <= r[4] < 300]

    def wait(self, predicate: Callable[[list], bool], timeout: float = 10.0) -> list:
        with self.got:
            assert self.got.wait_for(lambda: predicate(self.requests), timeout), \
                f"receiver: {len(self.requests)} request(s) so far"
            return list(self.requests)

    def wait_count(self, count: int, timeout: float = 10.0) -> list:
        return self.wait(lambda rs: len(rs) >= count, timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
