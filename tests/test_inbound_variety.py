"""Issue 13, inbound variety: edits, revokes, reactions, locations, contacts and media
metadata become events of their own kinds: mapped offline from neonize's own protobufs
(built in a child process, tests/neonize_mapping_cases.py) and end to end through the
simulator's inbound API (`type`)."""
from __future__ import annotations

import pytest
import webtest

from tests.support.http import ADMIN_KEY, build_app, running_board, wait_until
from tests.test_neonize_mapping import conn, feed, mapped  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(60)
ADMIN = {"X-Api-Key": ADMIN_KEY}
KINDS = ["message", "message.edit", "message.revoke", "message.reaction", "message.location", "message.contact"]


# ---- neonize, offline -------------------------------------------------------------------------------

def test_neonize_variety_becomes_incoming_messages_of_their_kinds(conn, mapped):  # noqa: F811
    names = ["v_edit", "v_revoke", "v_reaction", "v_reaction_removed", "v_location", "v_contact", "v_contacts",
             "v_voice_note", "v_document"]
    events = {e.id: e for e in feed(conn, *(mapped[n] for n in names))}
    assert len(events) == len(names)
    edit = events["3EB0EDIT"]
    assert (edit.kind, edit.text, edit.content["targetId"], edit.event_kind) == \
        ("edit", "fixed typo", "3EB0ORIGINAL", "message.edit")
    assert events["3EB0REVOKE"].kind == "revoke" and events["3EB0REVOKE"].content["targetId"] == "3EB0ORIGINAL"
    assert events["3EB0REACT"].content == {"targetId": "3EB0ORIGINAL", "emoji": "\U0001F44D", "removed": False}
    assert events["3EB0UNREACT"].content["removed"] is True
    loc = events["3EB0LOC"]
    assert loc.event_kind == "message.location" and loc.content["latitude"] == pytest.approx(55.75)
    assert loc.content["name"] == "Office" and loc.content["address"] == "Tverskaya 1"
    assert [c["displayName"] for c in events["3EB0VCARDS"].content["contacts"]] == ["Ann", "Cy"]
    assert events["3EB0VCARD"].content["contacts"][0]["vcard"].startswith("BEGIN:VCARD")
    voice = events["3EB0PTT"]
    assert (voice.kind, voice.event_kind, voice.content["mediaType"], voice.content["voiceNote"],
            voice.content["size"], voice.content["seconds"]) == ("media", "message", "audio", True, 12345, 7)
    doc = events["3EB0DOC"].details()
    assert doc["kind"] == "media" and doc["fileName"] == "inv.pdf" and doc["mime"] == "application/pdf"


def test_neonize_media_with_a_caption_keeps_the_caption_as_text(conn, mapped):  # noqa: F811
    (image,) = feed(conn, mapped["image_caption"])
    assert image.text == "a cat" and image.kind == "media" and image.content["mime"] == "image/jpeg"
    assert image.content["caption"] == "a cat"


# ---- through the simulator -------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        events = []
        unsubscribe = board.on_event(lambda e: events.append(e), kinds=KINDS)
        try:
            yield webtest.TestApp(app), board, events
        finally:
            unsubscribe()
            app.switchboard.close()


def _inbound(app, **body):
    return app.post_json("/api/simulator/inbound", {"companyId": "acme", "from": "79001234567", "text": "", **body},
                         headers=ADMIN, expect_errors=True)


def test_each_inbound_kind_is_its_own_event(web):
    app, _board, events = web
    app.post_json("/api/whatsapp/sessions", {"companyId": "acme"}, headers=ADMIN)
    app.post_json("/api/simulator/companies/acme/scan", {"phone": "79990001122"}, headers=ADMIN)
    assert wait_until(lambda: app.get("/api/whatsapp/sessions/acme/status", headers=ADMIN).json["connected"])
    first = _inbound(app, text="hello").json["id"]
    _inbound(app, type="edit", targetId=first, text="hello, fixed")
    _inbound(app, type="revoke", targetId=first)
    _inbound(app, type="reaction", targetId=first, emoji="\u2764")
    _inbound(app, type="location", latitude=55.75, longitude=37.62, name="Office")
    _inbound(app, type="contact", contacts=[{"displayName": "Bob", "vcard": "BEGIN:VCARD\nEND:VCARD"}])
    _inbound(app, type="media", mediaType="image", mime="image/png", size=1234, text="a photo")
    assert wait_until(lambda: len(events) == 7)
    by_kind = {e.kind: e.data for e in events}
    assert by_kind["message.edit"]["targetId"] == first and by_kind["message.edit"]["text"] == "hello, fixed"
    assert by_kind["message.revoke"]["targetId"] == first
    assert by_kind["message.reaction"]["emoji"] == "\u2764" and by_kind["message.reaction"]["removed"] is False
    assert by_kind["message.location"]["latitude"] == 55.75 and by_kind["message.location"]["name"] == "Office"
    assert by_kind["message.contact"]["contacts"][0]["displayName"] == "Bob"
    media = [e.data for e in events if e.kind == "message" and e.data["kind"] == "media"][0]
    assert (media["mediaType"], media["mime"], media["size"], media["text"]) == ("image", "image/png", 1234, "a photo")
    assert all(e.data["phone"] == "79001234567" for e in events)


@pytest.mark.parametrize("body", [
    {"type": "edit"}, {"type": "reaction", "targetId": "x"}, {"type": "location", "latitude": 91, "longitude": 0},
    {"type": "contact", "contacts": []}, {"type": "media", "mediaType": "hologram", "mime": "x/y"},
    {"type": "poll"}, {"type": 5},
])
def test_a_bad_inbound_kind_is_a_400(web, body):
    app, _board, events = web
    app.post_json("/api/whatsapp/sessions", {"companyId": "acme"}, headers=ADMIN)
    app.post_json("/api/simulator/companies/acme/scan", {"phone": "79990001122"}, headers=ADMIN)
    res = _inbound(app, **body)
    assert res.status_int == 400, res.text
    assert events == []
