"""Issue 13, message status: queued -> sent -> delivered -> read (or failed/unconfirmed),
joined from send outcomes and receipts, kept durably per company, answered by
GET .../messages/:id and published as `message.status` events."""
from __future__ import annotations

import types

import pytest
import webtest

from switchboard.actors.connection import Receipt
from switchboard.actors.statuses import MessageStatuses

from tests.support.http import ADMIN_KEY, build_app, running_board, wait_until

pytestmark = pytest.mark.timeout(60)
ADMIN = {"X-Api-Key": ADMIN_KEY}


def _outcome(entry_id, sent=None, failed=None, unconfirmed=None):
    return types.SimpleNamespace(entry_id=entry_id, sent=sent, failed=failed, unconfirmed=unconfirmed, retry_in=None)


# ---- the store ---------------------------------------------------------------------------------

def test_status_moves_forward_only_and_each_change_is_published(tmp_path):
    published = []
    store = MessageStatuses(tmp_path / "s.jsonl", lambda kind, data: published.append((kind, data)))
    store.queued("e1", "79001234567")
    store.outcome(_outcome("e1", sent="M1"))
    store.receipt(Receipt(("M1",), "79001234567@s.whatsapp.net", "read", 1000.0))
    store.receipt(Receipt(("M1",), "79001234567@s.whatsapp.net", "delivered", 999.0))    # late: ignored
    assert [d["status"] for _k, d in published] == ["queued", "sent", "read"]
    assert {k.value for k, _d in published} == {"message.status"}
    assert published[-1][1]["previous"] == "sent"
    status = store.get("e1")
    assert status["status"] == "read" and status["messageId"] == "M1" and status["to"] == "79001234567"
    assert set(status["history"]) == {"queued", "sent", "read"}
    assert store.get("M1") == status            # by WhatsApp's id as well
    assert store.get("nope") is None


def test_a_receipt_before_the_ack_is_held_until_the_message_id_is_known(tmp_path):
    store = MessageStatuses(tmp_path / "s.jsonl", lambda kind, data: None)
    store.queued("e1", "79001234567")
    store.receipt(Receipt(("M1",), "x", "delivered", 1000.0))
    assert store.get("e1")["status"] == "queued"
    store.outcome(_outcome("e1", sent="M1"))
    assert store.get("e1")["status"] == "delivered"


def test_a_receipt_moves_an_unconfirmed_send_on_and_clears_its_error(tmp_path):
    store = MessageStatuses(tmp_path / "s.jsonl", lambda kind, data: None)
    store.queued("e1", "79001234567")
    store.outcome(_outcome("e1", unconfirmed="no answer in time"))
    assert store.get("e1")["status"] == "unconfirmed" and store.get("e1")["error"] == "no answer in time"
    store.outcome(_outcome("e1", failed="later failure"))         # same rank: stays unconfirmed
    assert store.get("e1")["status"] == "unconfirmed"
    store.outcome(_outcome("e1", sent="M1"))                      # a late ack after all
    assert store.get("e1")["status"] == "sent" and store.get("e1")["error"] is None


def test_statuses_survive_a_restart_and_stay_bounded(tmp_path):
    path = tmp_path / "s.jsonl"
    store = MessageStatuses(path, lambda kind, data: None, keep=10)
    for n in range(50):
        store.queued(f"e{n}", "79001234567")
        store.outcome(_outcome(f"e{n}", sent=f"M{n}"))
    store.close()
    again = MessageStatuses(path, lambda kind, data: None, keep=10)
    assert len(again) == 10 and again.get("e49")["status"] == "sent" and again.get("e0") is None
    assert again.get("M45")["id"] == "e45"
    assert sum(1 for _ in open(path)) <= 2 * 10 + 100 + 1      # the file is compacted, not unbounded
    again.close()


def test_a_torn_or_foreign_line_is_skipped(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "e1", "status": "sent", "to": "1", "messageId": "M1", "times": {}}\n'
                    '{"id": 5, "status": "sent"}\n{"id": "e2", "status": "bogus"}\n{"id": "e3", "sta')
    store = MessageStatuses(path, lambda kind, data: None)
    assert store.get("e1")["status"] == "sent" and store.get("e2") is None and len(store) == 1


# ---- end to end through the simulator --------------------------------------------------------------

@pytest.fixture
def web(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        events = []
        unsubscribe = board.on_event(lambda e: events.append(e), kinds=["message.status"])
        try:
            yield webtest.TestApp(app), board, events
        finally:
            unsubscribe()
            app.switchboard.close()


def _link(web, company_id, phone):
    web.post_json("/api/whatsapp/sessions", {"companyId": company_id}, headers=ADMIN)
    web.post_json(f"/api/simulator/companies/{company_id}/scan", {"phone": phone}, headers=ADMIN)
    assert wait_until(lambda: web.get(f"/api/whatsapp/sessions/{company_id}/status",
                                      headers=ADMIN).json["status"] == "connected")


def _status(web, company_id, ref, expect=200):
    return web.get(f"/api/whatsapp/sessions/{company_id}/messages/{ref}", headers=ADMIN, expect_errors=True)


def test_sent_delivered_read_through_the_simulator(web):
    app, board, events = web
    _link(app, "acme", "79990001122")
    _link(app, "beta", "79990003344")          # a linked phone: its device sends delivery receipts
    sent = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": "79990003344", "message": "hi"},
                         headers=ADMIN).json
    assert wait_until(lambda: _status(app, "acme", sent["id"]).json["status"] == "delivered")
    board.network.read("79990003344", sent["messageId"])
    assert wait_until(lambda: _status(app, "acme", sent["id"]).json["status"] == "read")
    answer = _status(app, "acme", sent["id"]).json
    assert answer["messageId"] == sent["messageId"] and answer["companyId"] == "acme"
    assert list(answer["history"]) == ["queued", "sent", "delivered", "read"]
    assert wait_until(lambda: [e.data["status"] for e in events if e.data.get("id") == sent["id"]]
                      == ["queued", "sent", "delivered", "read"])
    # The message id WhatsApp gave answers too; another company does not see it.
    assert _status(app, "acme", sent["messageId"]).json["id"] == sent["id"]
    assert _status(app, "beta", sent["id"]).status_int == 404


def test_queued_while_disconnected_then_sent_once_connected(web):
    app, board, _events = web
    _link(app, "acme", "79990001122")
    board.network.fault("acme", "refuse", 0.5)       # the link drops; connects refused for 0.5 s
    assert wait_until(lambda: app.get("/api/whatsapp/sessions/acme/status", headers=ADMIN).json["status"]
                      != "connected")
    queued = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": "79001234567", "message": "later"},
                           headers=ADMIN).json
    assert queued["status"] == "queued"
    assert _status(app, "acme", queued["id"]).json["status"] in ("queued", "sent")
    assert wait_until(lambda: _status(app, "acme", queued["id"]).json["status"] == "sent", timeout=20)


def test_a_send_refused_for_good_is_failed(web):
    app, board, _events = web
    _link(app, "acme", "79990001122")
    board.network.fault("acme", "no-lid", phone="79005550000")
    res = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": "79005550000", "message": "x"},
                        headers=ADMIN, expect_errors=True)
    assert res.status_int == 502
    ref = res.json["id"]
    answer = _status(app, "acme", ref).json
    assert answer["status"] == "failed" and "LID" in answer["error"]


@pytest.mark.parametrize("ref", ["a" * 129, "bad%20id", "x%2Fy", "%C3%A9"])
def test_bad_message_ids_are_400_and_unknown_ones_404(web, ref):
    app, _board, _events = web
    _link(app, "acme", "79990001122")
    res = _status(app, "acme", ref)
    assert res.status_int in (400, 404) and res.json["success"] is False
    if ref.startswith("a"):
        assert res.status_int == 400
    assert _status(app, "acme", "0123456789abcdef").status_int == 404
    assert _status(app, "nosuch", "0123456789abcdef").status_int == 404
