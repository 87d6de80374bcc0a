"""Issue 13, media sends from a URL: fetched by the gateway with limits, stored in the
company's directory, carried by the outbox like text (durable, idempotent) and given to
the transport as a local file only."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import types

import pytest
import webtest

from switchboard.actors.outbox import Outbox, OutboxEntry
from switchboard.actors.payload import Media, from_record
from switchboard.http.media_fetch import MediaFetcher

from tests.support.http import ADMIN_KEY, build_app, running_board, wait_until

pytestmark = pytest.mark.timeout(60)
ADMIN = {"X-Api-Key": ADMIN_KEY}
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 50


class _Files(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body, mime = {"/cat.png": (PNG, "image/png"), "/inv.pdf": (b"%PDF-1.4 x", "application/pdf"),
                      "/page.html": (b"<html>", "text/html")}.get(self.path, (b"no", "text/plain"))
        self.send_response(200 if body != b"no" else 404)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def files():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def web(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        # The test's file server is on loopback, which the real policy refuses (test_media_fetch.py).
        app.switchboard.media_fetcher = MediaFetcher(allowed=lambda address: address == "127.0.0.1")
        events = []
        unsubscribe = board.on_event(lambda e: events.append(e), kinds=["message"])
        try:
            yield webtest.TestApp(app), board, events, tmp_path / "data"
        finally:
            unsubscribe()
            app.switchboard.close()


def _link(app, company_id, phone):
    app.post_json("/api/whatsapp/sessions", {"companyId": company_id}, headers=ADMIN)
    app.post_json(f"/api/simulator/companies/{company_id}/scan", {"phone": phone}, headers=ADMIN)
    assert wait_until(lambda: app.get(f"/api/whatsapp/sessions/{company_id}/status",
                                      headers=ADMIN).json["status"] == "connected")


def test_an_image_from_a_url_is_stored_and_sent(web, files):
    app, board, events, data = web
    _link(app, "acme", "79990001122")
    _link(app, "beta", "79990003344")
    sent = app.post_json("/api/whatsapp/sessions/acme/messages",
                         {"to": "79990003344", "type": "image", "url": files + "/cat.png", "caption": "a cat"},
                         headers=ADMIN).json
    assert sent["status"] == "sent"
    digest = hashlib.sha256(PNG).hexdigest()
    stored = data / "acme" / "media" / digest
    assert stored.read_bytes() == PNG and stored.stat().st_mode & 0o777 == 0o600
    (got,) = board.network.messages("79990003344")
    assert (got["type"], got["mediaType"], got["mime"], got["size"], got["caption"], got["sha256"]) == \
        ("media", "image", "image/png", len(PNG), "a cat", digest)
    assert wait_until(lambda: [e for e in events if e.company_id == "beta"])
    inbound = [e.data for e in events if e.company_id == "beta"][0]
    assert inbound["kind"] == "media" and inbound["mediaType"] == "image" and inbound["text"] == "a cat"
    # The outbox carried the media payload (the local file, never the URL).
    records = [json.loads(line) for line in (data / "acme" / "outbox.jsonl").read_text().splitlines()]
    added = [r for r in records if r.get("op") == "add"][0]
    assert added["payload"]["type"] == "media" and added["payload"]["file"] == str(stored)
    assert files not in json.dumps(added) and "url" not in added["payload"]


def test_a_document_keeps_its_file_name_and_a_retry_with_the_key_sends_once(web, files):
    app, board, _events, _data = web
    _link(app, "acme", "79990001122")
    body = {"to": "79001234567", "type": "document", "url": files + "/inv.pdf", "fileName": "invoice.pdf"}
    first = app.post_json("/api/whatsapp/sessions/acme/messages", body, headers={**ADMIN, "Idempotency-Key": "k1"}).json
    again = app.post_json("/api/whatsapp/sessions/acme/messages", body, headers={**ADMIN, "Idempotency-Key": "k1"}).json
    assert first["id"] == again["id"] and first["messageId"] == again["messageId"]
    (got,) = board.network.messages("79001234567")
    assert got["fileName"] == "invoice.pdf" and got["mime"] == "application/pdf"
    other = app.post_json("/api/whatsapp/sessions/acme/messages", {**body, "caption": "changed"},
                          headers={**ADMIN, "Idempotency-Key": "k1"}, expect_errors=True)
    assert other.status_int == 400 and "Idempotency-Key" in other.json["error"]


@pytest.mark.parametrize("body, status", [
    ({"type": "image", "url": "/page.html"}, 415),          # not an image
    ({"type": "image", "url": "/missing.png"}, 422),
    ({"type": "hologram", "url": "/cat.png"}, 400),
    ({"type": "image", "url": "ftp://example.com/x.png"}, 400),
    ({"type": "image", "url": "/cat.png", "message": "x"}, 400),
    ({"type": "document", "url": "/inv.pdf", "fileName": "../../etc/passwd"}, 400),
    ({"type": "image", "url": "/cat.png", "to": "12"}, 400),                 # a bad recipient fetches nothing
])
def test_refused_media_sends_are_clear_4xx_and_send_nothing(web, files, body, status):
    app, board, _events, data = web
    _link(app, "acme", "79990001122")
    if body["url"].startswith("/"):
        body = {**body, "url": files + body["url"]}
    res = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": "79001234567", **body}, headers=ADMIN,
                        expect_errors=True)
    assert res.status_int == status, res.text
    assert board.network.messages("79001234567") == [] and not (data / "acme" / "media").exists()


def test_the_real_policy_refuses_a_loopback_url(web, files):
    app, board, _events, _data = web
    _link(app, "acme", "79990001122")
    app.app.switchboard.media_fetcher = MediaFetcher()
    res = app.post_json("/api/whatsapp/sessions/acme/messages",
                        {"to": "79001234567", "type": "image", "url": files + "/cat.png"}, headers=ADMIN,
                        expect_errors=True)
    assert res.status_int == 400 and "loopback" in res.json["error"]
    assert board.network.messages("79001234567") == []


def test_media_payloads_survive_the_outbox(tmp_path):
    media = Media("audio", str(tmp_path / "f"), "ab" * 32, "audio/ogg", 10, "", "")
    outbox = Outbox(tmp_path / "outbox.jsonl")
    outbox.add(OutboxEntry(id="e1", to="79001234567", jid="79001234567@s.whatsapp.net", payload=media))
    outbox.close()
    again = Outbox(tmp_path / "outbox.jsonl")
    assert again.get("e1").payload == media and from_record(media.as_record()) == media
    again.close()


def test_the_neonize_child_sends_the_local_file_as_bytes(tmp_path):
    """neonize would fetch a string that looks like a URL itself: the child gives it bytes
    it read from the stored file."""
    from switchboard.actors.transports.neonize.child_commands import execute
    path = tmp_path / "stored"
    path.write_bytes(PNG)
    calls = []

    class Client:
        def send_image(self, to, data, caption=None):
            calls.append(("image", to, data, caption))
            return types.SimpleNamespace(ID="3EB0IMG", Timestamp=1)

        def send_document(self, to, data, caption=None, filename=None, mimetype=None):
            calls.append(("document", to, data, filename, mimetype))
            return types.SimpleNamespace(ID="3EB0DOC", Timestamp=1)

    image = Media("image", str(path), "x", "image/png", len(PNG), "a cat")
    assert execute(Client(), "send", {"jid": "79001234567@s.whatsapp.net",
                                      "payload": image.as_record()})["message_id"] == "3EB0IMG"
    doc = Media("document", str(path), "x", "application/pdf", len(PNG), "", "inv.pdf")
    execute(Client(), "send", {"jid": "79001234567@s.whatsapp.net", "payload": doc.as_record()})
    assert calls == [("image", "79001234567@s.whatsapp.net", PNG, "a cat"),
                     ("document", "79001234567@s.whatsapp.net", PNG, "inv.pdf", "application/pdf")]


# ---- multipart uploads ------------------------------------------------------------------------------

def _upload(app, fields, file, headers=ADMIN):
    return app.post("/api/whatsapp/sessions/acme/messages", {**fields, "file": file}, headers=headers,
                    content_type="multipart/form-data", expect_errors=True)


def test_an_uploaded_file_is_sent_with_its_kind_from_the_content_type(web):
    app, board, _events, data = web
    _link(app, "acme", "79990001122")
    res = _upload(app, {"to": "79001234567", "caption": "uploaded"}, webtest.Upload("cat.png", PNG, "image/png"))
    assert res.status_int == 200 and res.json["status"] == "sent", res.text
    (got,) = board.network.messages("79001234567")
    assert (got["mediaType"], got["mime"], got["size"], got["caption"]) == ("image", "image/png", len(PNG), "uploaded")
    assert (data / "acme" / "media" / hashlib.sha256(PNG).hexdigest()).read_bytes() == PNG
    doc = _upload(app, {"to": "79001234567"}, webtest.Upload("../../inv.pdf", b"%PDF-1.4", "application/pdf"))
    assert doc.status_int == 200, doc.text
    assert board.network.messages("79001234567")[1]["fileName"] == "inv.pdf"     # the name only, no path


@pytest.mark.parametrize("fields, file, status", [
    ({}, ("cat.png", PNG, "image/png"), 400),                                          # no recipient
    ({"to": "79001234567"}, None, 400),                                                # no file
    ({"to": "79001234567", "type": "image"}, ("x.html", b"<html>", "text/html"), 415),
    ({"to": "79001234567", "type": "hologram"}, ("cat.png", PNG, "image/png"), 400),
    ({"to": "12"}, ("cat.png", PNG, "image/png"), 400),                                 # bad phone
])
def test_refused_uploads_are_clear_4xx_and_send_nothing(web, fields, file, status):
    app, board, _events, data = web
    _link(app, "acme", "79990001122")
    params = dict(fields)
    if file is not None:
        params["file"] = webtest.Upload(*file)
    res = app.post("/api/whatsapp/sessions/acme/messages", params, headers=ADMIN, content_type="multipart/form-data",
                   expect_errors=True)
    assert res.status_int == status, res.text
    assert board.network.messages("79001234567") == [] and not (data / "acme" / "media").exists()


def test_an_upload_over_the_limit_is_413_while_json_keeps_its_own_limit(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data", upload_limit=2000, body_limit=1000)
        web = webtest.TestApp(app)
        try:
            _link(web, "acme", "79990001122")
            big = _upload(web, {"to": "79001234567"}, webtest.Upload("big.png", b"x" * 3000, "image/png"))
            assert big.status_int == 413
            fits = _upload(web, {"to": "79001234567"}, webtest.Upload("ok.png", PNG * 4, "image/png"))
            assert fits.status_int == 200, fits.text                     # 1.2 KB: over the JSON limit, fine here
            res = web.post_json("/api/whatsapp/sessions/acme/messages", {"to": "79001234567", "message": "x" * 1500},
                                headers=ADMIN, expect_errors=True)
            assert res.status_int == 413
        finally:
            app.switchboard.close()
