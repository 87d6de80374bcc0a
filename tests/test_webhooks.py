"""Webhooks read the durable event log: signed, retried, dead letters, per company, resumed after a restart."""
from __future__ import annotations

import json

import pytest

from switchboard.actors.backoff import BackoffPolicy
from switchboard.supervision.delivery import Delivery
from switchboard.supervision.sinks.webhook import WebhookConfig, WebhookSink, sign

from .support.http import ADMIN_KEY, Http, build_app, connect_session, running_board, serving, wait_until
from .support.receiver import Receiver, signature_ok
from .support.sessions import StateWaiter, link

FAST_RETRY = BackoffPolicy(base=0.02, factor=2, cap=0.1, jitter=0, max_attempts=4)


@pytest.fixture
def receiver():
    r = Receiver(secret="s3cret")
    yield r
    r.close()


def delivery_with(tmp_path, *configs, retry=FAST_RETRY):
    d = Delivery(tmp_path / "data", webhook_retry=retry)
    d.start([WebhookSink.factory(c) for c in configs])
    return d


def message(d, company="acme", message_id="3EB0AA", text="hi"):
    return d.log.append(company, "message", {"id": message_id, "phone": "79001234567", "text": text})


def test_signed_delivery_with_the_log_position_as_event_id(receiver, tmp_path):
    d = delivery_with(tmp_path, WebhookConfig(receiver.url, secret="s3cret", retry=FAST_RETRY))
    event = message(d)
    headers, body, *_ = receiver.wait_count(1)[0]
    assert signature_ok("s3cret", headers, body) and receiver.bad_signatures == 0
    assert headers["X-Switchboard-Signature"] == sign("s3cret", headers["X-Switchboard-Timestamp"], body)
    assert headers["X-Switchboard-Event-Id"] == str(event.seq) and headers["X-Switchboard-Event"] == "message"
    payload = json.loads(body)
    assert payload["id"] == str(event.seq) and payload["data"]["text"] == "hi" and payload["companyId"] == "acme"
    d.close()


def test_server_errors_and_408_425_429_are_retried_with_the_same_event_id(tmp_path):
    r = Receiver(answers=[500, 503, 408, 425, 429])
    d = delivery_with(tmp_path, WebhookConfig(r.url, retry=BackoffPolicy(base=0.01, cap=0.05, jitter=0,
                                                                             max_attempts=10)))
    event = message(d)
    requests = r.wait_count(6)
    assert {h["X-Switchboard-Event-Id"] for h, *_ in requests} == {str(event.seq)}
    assert [h["X-Switchboard-Attempt"] for h, *_ in requests] == ["1", "2", "3", "4", "5", "6"]
    assert d.dead.count() == 0
    d.close()
    r.close()


@pytest.mark.parametrize("status", [400, 401, 404, 409, 410, 422])
def test_other_4xx_are_final_and_go_to_the_dead_letters(tmp_path, status):
    r = Receiver(answers=[status])
    d = delivery_with(tmp_path, WebhookConfig(r.url, retry=FAST_RETRY))
    message(d)
    assert wait_until(lambda: d.dead.count() == 1)
    assert len(r.requests) == 1
    dead = d.dead.list()[0]
    assert dead["error"] == f"HTTP {status}" and dead["attempts"] == 1 and dead["companyId"] == "acme"
    d.close()
    r.close()


def test_a_redirect_is_a_failure_that_says_where_it_pointed_and_is_never_followed(tmp_path):
    r = Receiver(answer=lambda path, h, b: (302, {"Location": "http://elsewhere.example/hook"})
                 if path == "/hook" else (200, {}))
    d = delivery_with(tmp_path, WebhookConfig(r.url, retry=FAST_RETRY))
    message(d)
    assert wait_until(lambda: d.dead.count() == 1)
    assert [req[3] for req in r.requests] == ["/hook"]          # nothing followed it anywhere
    assert "302 redirect to http://elsewhere.example/hook" in d.dead.list()[0]["error"]
    d.close()
    r.close()


def test_what_was_not_delivered_is_sent_after_a_restart(tmp_path):
    r = Receiver(answers=[503] * 100)
    d = delivery_with(tmp_path, WebhookConfig(r.url, retry=BackoffPolicy(base=60, max_attempts=3)))
    event = message(d, message_id="3EB0KEEP")
    r.wait_count(1)
    d.close()                                 # stopped mid-backoff: the cursor stays before the event
    r.answers.clear()
    d = delivery_with(tmp_path, WebhookConfig(r.url, retry=FAST_RETRY))
    r.wait(lambda rs: any(req[4] == 200 for req in rs))
    assert r.delivered()[0]["id"] == str(event.seq)
    d.close()
    r.close()


def test_a_slow_webhook_never_holds_up_another(tmp_path):
    fast = Receiver()
    stuck = Receiver(answers=[503] * 1000)
    d = delivery_with(tmp_path, WebhookConfig(stuck.url, retry=BackoffPolicy(base=30, max_attempts=5)))
    d.set_webhook("acme", fast.url, None, None)
    for n in range(50):
        message(d, message_id=f"m{n}")
    fast.wait(lambda rs: len(rs) >= 50)
    assert len(stuck.requests) == 1
    d.close()
    fast.close()
    stuck.close()


def test_dead_letters_are_listed_and_replayed_over_http(tmp_path):
    answers = [400, 400]
    r = Receiver(answer=lambda path, h, b: (answers.pop(0) if answers else 200, {}))
    with running_board(tmp_path / "data") as board:
        board.delivery.set_webhook  # the board's delivery exists
        app = build_app(board, tmp_path / "data")
        with serving(app) as server:
            http = Http(server.url)
            connect_session(http, "962302")
            status, _, answer = http.request("PUT", "/api/whatsapp/sessions/962302/webhook",
                                             {"url": r.url, "events": ["message"]})
            assert status == 200, answer
            for n in range(2):
                http.post("/api/simulator/inbound", {"companyId": "962302", "from": "79001234567",
                                                     "text": f"dead {n}"})
            assert wait_until(lambda: board.delivery.dead.count() == 2)
            status, _, listed = http.get("/api/webhooks/dead?company=962302")
            assert status == 200 and listed["count"] == 2
            assert all(row["error"] == "HTTP 400" and row["sink"] == "webhook-962302" for row in listed["deadLetters"])
            status, _, forbidden = http.get("/api/webhooks/dead", key="not-the-admin-key")
            assert status == 401
            status, _, replayed = http.post("/api/webhooks/dead/replay", {"companyId": "962302"})
            assert status == 202 and replayed["count"] == 2
            assert wait_until(lambda: board.delivery.dead.count() == 0)
            assert sorted(p["data"]["text"] for p in r.delivered()) == ["dead 0", "dead 1"]
            status, _, bad = http.post("/api/webhooks/dead/replay", {"ids": ["../etc"]})
            assert status == 400
    r.close()


def test_company_webhook_routes_validate_and_deliver_only_that_company_in_order(tmp_path):
    mine = Receiver(secret="tenant-secret")
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        with serving(app) as server:
            http = Http(server.url)
            connect_session(http, "962302")
            connect_session(http, "other", phone="79990003344")
            hook = "/api/whatsapp/sessions/962302/webhook"
            for bad in ({"url": "ftp://x.example/"}, {"url": "http://"}, {"url": "http://a.example/" + "x" * 3000},
                        {"url": "http://a.example/ x"}, {"url": "http://u:p@a.example/"},
                        {"url": mine.url, "events": ["nope"]}, {"url": mine.url, "events": []},
                        {"url": mine.url, "secret": ""}, {"url": mine.url, "secret": 5}, {"url": 7}, {}):
                status, _, answer = http.request("PUT", hook, bad)
                assert status == 400, (bad, answer)
            assert http.get(hook)[0] == 404
            status, _, created = http.request("PUT", hook, {"url": mine.url, "secret": "tenant-secret",
                                                            "events": ["message"]})
            assert status == 200 and created["webhook"] == {"url": mine.url, "events": ["message"], "secretSet": True}
            assert http.get(hook)[2]["webhook"]["secretSet"] is True
            assert http.request("PUT", "/api/whatsapp/sessions/nobody/webhook", {"url": mine.url})[0] == 404
            # a tenant key manages its own company's webhook, and sees no other
            status, _, key = http.post("/api/keys", {"companyId": "other"})
            tenant = Http(server.url, key["key"])
            assert tenant.get(hook)[0] == 404
            assert tenant.request("PUT", "/api/whatsapp/sessions/other/webhook", {"url": mine.url})[0] == 200
            assert tenant.request("DELETE", "/api/whatsapp/sessions/other/webhook")[0] == 200
            for n in range(30):
                for company in ("962302", "other"):
                    http.post("/api/simulator/inbound", {"companyId": company, "from": "79001234567",
                                                         "text": f"{company} {n}"})
            mine.wait(lambda rs: len(rs) >= 30)
            texts = [p["data"]["text"] for p in mine.delivered()]
            assert texts == [f"962302 {n}" for n in range(30)] and mine.bad_signatures == 0
            assert http.request("DELETE", hook)[0] == 200
            assert http.request("DELETE", hook)[0] == 404
            assert not (tmp_path / "data" / "events" / "cursors" / "webhook-962302.json").exists()
    mine.close()


def test_a_redelivered_message_is_posted_once(board_factory, network, receiver):
    board = board_factory(network, sinks=[WebhookSink.factory(WebhookConfig(receiver.url, secret="s3cret",
                                                                            kinds=("message",), retry=FAST_RETRY))])
    waiter = StateWaiter(board)
    link(board, waiter, "acme")
    network.deliver_inbound("acme", "79001234567", "to the webhook", "WAID1")
    network.deliver_inbound("acme", "79001234567", "to the webhook", "WAID1")      # WhatsApp again
    network.deliver_inbound("acme", "79001234567", "next", "WAID2")
    receiver.wait_count(2)
    assert wait_until(lambda: board.delivery.log.seen("acme", "WAID2"))
    board.bus.flush()
    assert [p["data"]["id"] for p in receiver.delivered()] == ["WAID1", "WAID2"]
    waiter.close()


def test_bad_url_is_rejected():
    for url in ("ftp://example", "http://", "javascript:alert(1)", "http://a b/"):
        with pytest.raises(ValueError):
            WebhookConfig(url)


def test_the_cli_lists_and_replays_dead_letters(tmp_path):
    from .support.http import Served
    from .support.http import clean_env as env
    answers = [410]
    r = Receiver(answer=lambda path, h, b: (answers.pop(0) if answers else 200, {}))
    gateway = Served(tmp_path / "gw", "--transport", "simulated",
                     env=env(SWITCHBOARD_ADMIN_KEY=ADMIN_KEY, WEBHOOK_URL=r.url, WEBHOOK_EVENTS="message"))
    try:
        http = Http(gateway.url)
        connect_session(http, "962302")
        http.post("/api/simulator/inbound", {"companyId": "962302", "from": "79001234567", "text": "lost once"})
        assert wait_until(lambda: http.get("/api/webhooks/dead")[2]["total"] == 1)
        listed = gateway.cli("webhooks", "dead", "--company", "962302", "--api-key", ADMIN_KEY)
        assert "HTTP 410" in listed.stdout and "message" in listed.stdout
        dead_id = http.get("/api/webhooks/dead")[2]["deadLetters"][0]["id"]
        replayed = gateway.cli("webhooks", "replay", "--id", dead_id, "--api-key", ADMIN_KEY)
        assert json.loads(replayed.stdout)["count"] == 1
        assert wait_until(lambda: [p["data"]["text"] for p in r.delivered()] == ["lost once"])
        assert "no dead letters" in gateway.cli("webhooks", "dead", "--api-key", ADMIN_KEY).stdout
    finally:
        gateway.stop()
        r.close()


def test_deleting_a_session_deletes_its_webhook(tmp_path):
    r = Receiver()
    with running_board(tmp_path / "data") as board:
        with serving(build_app(board, tmp_path / "data")) as server:
            http = Http(server.url)
            connect_session(http, "962302")
            assert http.request("PUT", "/api/whatsapp/sessions/962302/webhook", {"url": r.url})[0] == 200
            assert http.delete("/api/whatsapp/sessions/962302")[0] == 200
            assert board.delivery.webhook("962302") is None and "webhook-962302" not in board.delivery.runners
            assert json.loads((tmp_path / "data" / "webhooks.json").read_text()) == {}
    r.close()


def test_a_data_directory_of_the_old_design_is_migrated(tmp_path):
    data = tmp_path / "data"
    (data / "acme").mkdir(parents=True)
    body = {"event": "message", "companyId": "acme", "id": "acme:message:OLD1", "timestamp": "t",
            "data": {"id": "OLD1", "text": "never confirmed"}}
    (data / "webhooks.jsonl").write_text(json.dumps({"op": "add", "key": "k1", "body": body}) + "\n"
                                         + json.dumps({"op": "add", "key": "k2", "body": {**body, "data": {"id": "X"}}})
                                         + "\n" + json.dumps({"op": "done", "key": "k2"}) + "\n")
    (data / "acme" / "inbound-seen.jsonl").write_text('{"id": "SEEN1"}\n')
    r = Receiver()
    d = Delivery(data)
    d.start([WebhookSink.factory(WebhookConfig(r.url, retry=FAST_RETRY))])
    r.wait(lambda rs: any(req[4] == 200 for req in rs))
    assert [p["data"]["text"] for p in r.delivered()] == ["never confirmed"]
    assert d.log.seen("acme", "SEEN1") and d.log.append("acme", "message", {"id": "SEEN1"}) is None
    assert (data / "webhooks.jsonl.migrated").exists() and not (data / "webhooks.jsonl").exists()
    d.close()
    r.close()


def test_replacing_a_webhook_again_and_again_starts_no_threads(tmp_path):
    import threading as t
    r = Receiver()
    d = delivery_with(tmp_path)
    d.set_webhook("acme", "http://127.0.0.1:9/unreachable", None, None)
    before = t.active_count()
    for n in range(50):
        d.set_webhook("acme", f"http://127.0.0.1:9/{n}", None, None)
    assert t.active_count() <= before
    d.set_webhook("acme", r.url, None, ["message"])
    message(d)
    assert wait_until(lambda: len(r.delivered()) == 1)            # the last one is the one in use
    d.delete_webhook("acme")
    assert wait_until(lambda: t.active_count() < before + 1)
    d.close()
    r.close()
