"""Issue 13, groups and identity: groups as recipients and as sources (with the participant
on each inbound event), and the LID <-> phone mapping kept per company, put on every
inbound event (both forms) and returned on send. Through the in-process simulator, plus
the neonize mapping offline (neonize's own protobufs, built in a child process)."""
from __future__ import annotations

import pytest
import webtest

from switchboard.actors.connection import IncomingMessage
from switchboard.actors.identities import Identities, complete
from switchboard.actors.phone import InvalidInput
from switchboard.actors.recipients import parse_recipient
from switchboard.actors.transports.simulated import codes

from tests.support.http import ADMIN_KEY, build_app, running_board, wait_until
from tests.test_neonize_mapping import conn, feed, mapped  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(60)
ADMIN = {"X-Api-Key": ADMIN_KEY}
GROUP = "120363012345678901@g.us"


# ---- recipients and the mapping, alone --------------------------------------------------------

@pytest.mark.parametrize("value, to, jid, group", [
    ("+7 900 123-45-67", "79001234567", "79001234567@s.whatsapp.net", False),
    (GROUP, GROUP, GROUP, True),
    ("79001234567-1600000000@g.us", "79001234567-1600000000@g.us", "79001234567-1600000000@g.us", True),
])
def test_recipients(value, to, jid, group):
    r = parse_recipient(value)
    assert (r.to, r.jid, r.is_group) == (to, jid, group)


@pytest.mark.parametrize("value", ["abc@g.us", "@g.us", "1234@g.us", "1" * 30 + "@g.us", "79001234567@lid", 5])
def test_bad_recipients_are_refused(value):
    with pytest.raises(InvalidInput):
        parse_recipient(value)


def test_the_mapping_is_learned_completed_and_kept(tmp_path):
    ids = Identities(tmp_path / "i.jsonl")
    seen = complete(ids, IncomingMessage("m1", "15550002222@s.whatsapp.net", "15550002222", "hi", 1.0,
                                         lid="204812345678901@lid"))
    assert seen.lid == "204812345678901@lid" and seen.details()["phoneJid"] == "15550002222@s.whatsapp.net"
    # Later the same person writes from the LID alone: the phone comes from the mapping ...
    later = complete(ids, IncomingMessage("m2", "204812345678901@lid", "", "again", 2.0))
    assert later.phone == "15550002222"
    # ... and a message with the phone alone gets the LID.
    plain = complete(ids, IncomingMessage("m3", "15550002222@s.whatsapp.net", "15550002222", "x", 3.0))
    assert plain.lid == "204812345678901@lid"
    ids.close()
    again = Identities(tmp_path / "i.jsonl")
    assert again.phone_for("204812345678901") == "15550002222" and again.lid_for("15550002222") == "204812345678901"
    again.close()


def test_the_mapping_is_bounded_and_a_changed_pair_replaces_the_old(tmp_path):
    ids = Identities(tmp_path / "i.jsonl", keep=3)
    for n in range(10):
        ids.learn(f"{100 + n}", f"7900000000{n}")
    assert len(ids) == 3 and ids.phone_for("100") == "" and ids.phone_for("109") == "79000000009"
    ids.learn("109", "79111111111")
    assert ids.lid_for("79000000009") == "" and ids.lid_for("79111111111") == "109"
    ids.learn("not digits", "79111111111")       # ignored
    assert len(ids) == 3
    ids.close()


# ---- through the simulator --------------------------------------------------------------------------

@pytest.fixture
def web(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        messages = []
        unsubscribe = board.on_event(lambda e: messages.append(e), kinds=["message"])
        try:
            yield webtest.TestApp(app), board, messages
        finally:
            unsubscribe()
            app.switchboard.close()


def _link(app, company_id, phone):
    app.post_json("/api/whatsapp/sessions", {"companyId": company_id}, headers=ADMIN)
    app.post_json(f"/api/simulator/companies/{company_id}/scan", {"phone": phone}, headers=ADMIN)
    assert wait_until(lambda: app.get(f"/api/whatsapp/sessions/{company_id}/status",
                                      headers=ADMIN).json["status"] == "connected")


def _events_of(messages, company_id):
    return [e.data for e in messages if e.company_id == company_id]


def test_a_group_as_recipient_and_as_source(web):
    app, board, messages = web
    _link(app, "acme", "79990001122")
    _link(app, "beta", "79990003344")
    app.post_json("/api/simulator/groups", {"group": GROUP, "members": ["79990001122", "79990003344",
                                                                        "79990005566"]}, headers=ADMIN)
    sent = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": GROUP, "message": "hello group"},
                         headers=ADMIN).json
    assert sent["to"] == GROUP and sent["jid"] == GROUP and sent["lid"] is None and sent["messageId"]
    assert [m["text"] for m in board.network.messages("79990005566")] == ["hello group"]
    # beta is in the group: its event names the group as chat and acme's number as participant.
    assert wait_until(lambda: _events_of(messages, "beta"))
    event = _events_of(messages, "beta")[0]
    assert event["chat"] == GROUP and event["isGroup"] is True and event["phone"] == "79990001122"
    assert event["participant"] == "79990001122@s.whatsapp.net" and event["text"] == "hello group"
    # Someone else writes in the group to acme.
    app.post_json("/api/simulator/inbound", {"companyId": "acme", "from": "79990005566", "text": "hi",
                                             "group": GROUP}, headers=ADMIN)
    assert wait_until(lambda: _events_of(messages, "acme"))
    inbound = _events_of(messages, "acme")[0]
    assert inbound["chat"] == GROUP and inbound["isGroup"] is True
    assert inbound["participant"] == "79990005566@s.whatsapp.net" and inbound["phone"] == "79990005566"
    # The status of a group send joins its receipt like any other.
    assert wait_until(lambda: app.get(f"/api/whatsapp/sessions/acme/messages/{sent['id']}",
                                      headers=ADMIN).json["status"] == "delivered")


def test_a_bad_group_is_400(web):
    app, _board, _messages = web
    _link(app, "acme", "79990001122")
    res = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": "abc@g.us", "message": "x"},
                        headers=ADMIN, expect_errors=True)
    assert res.status_int == 400 and "group" in res.json["error"]
    res = app.post_json("/api/simulator/groups", {"group": "nope", "members": ["79990001122"]},
                        headers=ADMIN, expect_errors=True)
    assert res.status_int == 400


def test_lid_senders_carry_both_forms_and_a_send_returns_the_lid(web):
    app, _board, messages = web
    _link(app, "acme", "79990001122")
    app.post_json("/api/simulator/inbound", {"companyId": "acme", "from": "79001234567", "text": "from lid",
                                             "asLid": True}, headers=ADMIN)
    assert wait_until(lambda: _events_of(messages, "acme"))
    event = _events_of(messages, "acme")[0]
    lid = f"{codes.lid_for('79001234567')}@lid"
    assert event["phone"] == "79001234567" and event["lid"] == lid
    assert event["phoneJid"] == "79001234567@s.whatsapp.net" and event["participant"] is None
    sent = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": "+7 900 123 45 67", "message": "reply"},
                         headers=ADMIN).json
    assert sent["lid"] == lid and sent["jid"] == "79001234567@s.whatsapp.net"
    # A later message by phone alone also gets the LID from the company's mapping.
    app.post_json("/api/simulator/inbound", {"companyId": "acme", "from": "79001234567", "text": "by phone"},
                  headers=ADMIN)
    assert wait_until(lambda: len(_events_of(messages, "acme")) == 2)
    assert _events_of(messages, "acme")[1]["lid"] == lid


def test_a_lid_participant_in_a_group(web):
    app, _board, messages = web
    _link(app, "acme", "79990001122")
    app.post_json("/api/simulator/groups", {"group": GROUP, "members": ["79990001122", "79001234567"]},
                  headers=ADMIN)
    app.post_json("/api/simulator/inbound", {"companyId": "acme", "from": "79001234567", "text": "lid in group",
                                             "asLid": True, "group": GROUP}, headers=ADMIN)
    assert wait_until(lambda: _events_of(messages, "acme"))
    event = _events_of(messages, "acme")[0]
    lid = f"{codes.lid_for('79001234567')}@lid"
    assert event["chat"] == GROUP and event["participant"] == lid and event["lid"] == lid
    assert event["phone"] == "79001234567"          # resolved through the LID store, as neonize does


# ---- neonize, offline -----------------------------------------------------------------------------------

def test_neonize_group_and_lid_messages_carry_participant_and_lid(conn, mapped):  # noqa: F811
    feed(conn, mapped["group"], mapped["group_lid_sender"], mapped["lid_sender_with_alt"],
         mapped["group_lid_sender_without_alt"])
    group, group_lid, lid_alt, group_lid_no_alt = conn.events
    assert group.is_group and group.participant == "15550003333@s.whatsapp.net" and group.lid == ""
    assert group_lid.participant == "204812345678901@lid" and group_lid.lid == "204812345678901@lid"
    assert group_lid.phone == "15550004444"
    assert lid_alt.lid == "204812345678901@lid" and lid_alt.participant == "" and lid_alt.phone == "15550002222"
    assert group_lid_no_alt.phone == "" and group_lid_no_alt.lid == "204812345678901@lid"


def test_neonize_child_sends_to_a_group_jid_as_it_is():
    """The child hands the JID to neonize untouched (neonize's _ensure_jid parses
    `user@server`), so a group JID reaches whatsmeow as a group, not as a phone."""
    import types
    from switchboard.actors.transports.neonize.child_commands import execute
    calls = []

    class Client:
        def send_message(self, to, text):
            calls.append((to, text))
            return types.SimpleNamespace(ID="3EB0AB", Timestamp=1)

    assert execute(Client(), "send", {"jid": GROUP, "payload": {"type": "text", "text": "hi"}})["message_id"] == "3EB0AB"
    assert calls == [(GROUP, "hi")]
