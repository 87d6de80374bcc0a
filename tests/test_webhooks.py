"""The webhook sink against a real local HTTP receiver."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from switchboard.actors.backoff import BackoffPolicy
from switchboard.supervision.events import Event
from switchboard.supervision.sinks.webhook import WebhookConfig, WebhookSink, sign

from .support.sessions import StateWaiter, link

FAST_RETRY = BackoffPolicy(base=0.02, factor=2, cap=0.1, jitter=0, max_attempts=4)


class Receiver:
    """A local webhook endpoint; `answers` is the status code of each next request."""

    def __init__(self, answers=()):
        self.requests: list[tuple[dict, bytes]] = []
        self.answers = list(answers)
        self.got = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answers.pop(0) if receiver.answers else 200
                with receiver.got:
                    receiver.requests.append((dict(self.headers), body))
                    receiver.got.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, count, timeout=5):
        with self.got:
            assert self.got.wait_for(lambda: len(self.requests) >= count, timeout), self.requests
        return self.requests

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def message_event(seq=1, message_id="3EB0AA"):
    return Event(seq, 1_700_000_000.0, "acme", "message", {"id": message_id, "phone": "79001234567", "text": "hi"})


def test_signed_delivery(receiver, tmp_path):
    sink = WebhookSink(WebhookConfig(receiver.url, secret="s3cret", retry=FAST_RETRY), tmp_path)
    sink(message_event())
    headers, body = receiver.wait(1)[0]
    assert headers["X-Switchboard-Signature"] == sign("s3cret", headers["X-Switchboard-Timestamp"], body)
    assert headers["X-Switchboard-Event-Id"] == "acme:message:3EB0AA"
    payload = json.loads(body)
    assert payload["event"] == "message" and payload["data"]["text"] == "hi" and payload["companyId"] == "acme"
    sink.close()


def test_retries_server_errors_with_the_same_event_id(tmp_path):
    receiver = Receiver(answers=[500, 503])
    sink = WebhookSink(WebhookConfig(receiver.url, retry=FAST_RETRY), tmp_path)
    sink(message_event())
    requests = receiver.wait(3)
    assert {h["X-Switchboard-Event-Id"] for h, _ in requests} == {"acme:message:3EB0AA"}
    sink.close()
    receiver.close()
    assert sink.delivered == 1 and sink.pending() == 0


def test_final_4xx_goes_to_the_dead_letter_file(tmp_path):
    receiver = Receiver(answers=[400])
    sink = WebhookSink(WebhookConfig(receiver.url, retry=FAST_RETRY), tmp_path)
    sink(message_event())
    receiver.wait(1)
    sink.close()
    receiver.close()
    dead = [json.loads(line) for line in (tmp_path / "webhooks-dead.jsonl").read_text().splitlines()]
    assert dead[0]["error"] == "HTTP 400" and dead[0]["attempts"] == 1


def test_undelivered_webhooks_survive_a_restart(tmp_path):
    down = WebhookConfig("http://127.0.0.1:9/unreachable", retry=BackoffPolicy(base=60, max_attempts=3))
    sink = WebhookSink(down, tmp_path)
    sink(message_event(message_id="3EB0KEEP"))
    sink.close()
    receiver = Receiver()
    sink = WebhookSink(WebhookConfig(receiver.url, retry=FAST_RETRY), tmp_path)
    headers, _ = receiver.wait(1)[0]
    assert headers["X-Switchboard-Event-Id"] == "acme:message:3EB0KEEP"
    sink.close()
    receiver.close()


def test_same_message_is_posted_once(receiver, tmp_path):
    sink = WebhookSink(WebhookConfig(receiver.url, retry=FAST_RETRY), tmp_path)
    sink(message_event(1))
    sink(message_event(2))             # the same WhatsApp message again
    sink(message_event(3, "3EB0BB"))
    receiver.wait(2)
    sink.close()
    assert [h["X-Switchboard-Event-Id"] for h, _ in receiver.requests] == ["acme:message:3EB0AA",
                                                                           "acme:message:3EB0BB"]


def test_board_posts_incoming_messages(board_factory, network, receiver):
    board = board_factory(network, sinks=[WebhookSink.factory(WebhookConfig(receiver.url, secret="k",
                                                                            kinds=("message",), retry=FAST_RETRY))])
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    network.deliver_inbound("acme", "79001234567", "to the webhook")
    headers, body = receiver.wait(1)[0]
    assert json.loads(body)["data"]["text"] == "to the webhook"
    waiter.close()


def test_bad_url_is_rejected():
    with pytest.raises(ValueError):
        WebhookConfig("ftp://example")
