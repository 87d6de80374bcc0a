"""The child's command side, in this process with a stand-in client: which command and
payload reach which neonize call, and which error code a failure is answered with.
The child module imports neonize only inside the spawned child, so this is safe here."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from switchboard.actors.transports.neonize import wire
from switchboard.actors.transports.neonize.child import _Session
from switchboard.actors.transports.neonize.child_commands import NotReady, Refused, failure_code


class GoError(Exception):
    """Stands in for neonize.exc.NeonizeError."""


class Pipe:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, msg: dict) -> None:
        self.sent.append(msg)


class Client:
    def __init__(self, *, connected: bool = True, fail: bool = False) -> None:
        self.is_connected, self.fail, self.calls = connected, fail, []

    def send_message(self, jid, text):
        self.calls.append(("send_message", jid, text))
        if self.fail:
            raise GoError("info query timed out")        # the text must not matter
        return SimpleNamespace(ID="3EB0SENT", Timestamp=1_700_000_000)

    def PairPhone(self, phone, show_push_notification):
        self.calls.append(("PairPhone", phone))
        return "ABCD-EFGH"

    def logout(self):
        self.calls.append(("logout",))


@pytest.fixture
def session():
    made = []

    def make(client: Client) -> _Session:
        s = _Session(Pipe())
        s.client, s.go_error = client, GoError
        s.ready.set()
        made.append(s)
        return s

    yield make
    for s in made:
        s._pool.shutdown(wait=True)


def reply(s: _Session, op: str, args: dict) -> dict:
    """Run one command; its reply (a STARTED, if any, must come first and only once)."""
    s.conn.sent.clear()
    s.run_command(7, op, args)
    *before, msg = s.conn.sent
    assert before in ([], [{"type": wire.STARTED, "req_id": 7}])
    assert msg["type"] == wire.REPLY and msg["req_id"] == 7
    return msg


def test_a_text_payload_record_becomes_send_message(session):
    client = Client()
    msg = reply(session(client), wire.SEND, {"jid": "1555@s.whatsapp.net",
                                             "payload": {"type": "text", "text": "hi"}})
    assert msg["ok"] and msg["result"] == {"message_id": "3EB0SENT", "timestamp": 1_700_000_000}
    assert client.calls == [("send_message", "1555@s.whatsapp.net", "hi")]


def test_pair_phone_and_logout(session):
    client = Client()
    assert reply(session(client), wire.PAIR_PHONE, {"phone": "15550001111"})["result"] == {"code": "ABCD-EFGH"}
    assert reply(session(client), wire.LOGOUT, {})["ok"]
    assert client.calls == [("PairPhone", "15550001111"), ("logout",)]


@pytest.mark.parametrize("client, op, args, code", [
    (Client(), wire.SEND, {"jid": "x", "payload": {"type": "sticker"}}, wire.REJECTED),
    (Client(), "explode", {}, wire.REJECTED),
    (Client(), wire.SEND, {"payload": {"type": "text", "text": "hi"}}, wire.REJECTED),   # no jid
    # "info query timed out" inside SendMessage comes from a look-up before the message left
    (Client(connected=True, fail=True), wire.SEND, {"jid": "x", "payload": {"type": "text", "text": "hi"}},
     wire.NOT_CONNECTED),
])
def test_failed_commands_are_answered_with_a_code(session, client, op, args, code):
    msg = reply(session(client), op, args)
    assert not msg["ok"] and msg["code"] == code and msg["error"]


def test_commands_after_the_session_ended_are_not_connected(session):
    s = session(Client())
    s.connect_done.set()
    assert reply(s, wire.SEND, {"jid": "x", "payload": {"type": "text", "text": "hi"}})["code"] == wire.NOT_CONNECTED


def test_this_process_still_has_no_neonize():
    assert not [m for m in sys.modules if m == "neonize" or m.startswith("neonize.")]


def test_the_child_names_failures_by_where_whatsmeow_raised_them():
    def code(exc, op=wire.SEND):
        return failure_code(exc, go_error=GoError, op=op)

    assert code(NotReady("session not ready")) == wire.NOT_CONNECTED
    assert code(Refused("unknown command")) == wire.REJECTED
    assert code(KeyError("jid")) == wire.REJECTED
    assert code(AttributeError("bug")) == wire.INTERNAL
    # before the message node left: provably nothing reached WhatsApp
    for text in ("websocket not connected", "the store doesn't contain a device JID",
                 "failed to get user info for 1555@s.whatsapp.net to fill LID cache: info query timed out",
                 "failed to get user info for 1555@s.whatsapp.net to fill LID cache: websocket "
                 "disconnected before info query returned response",
                 "failed to get LID for PN 1555@s.whatsapp.net: database is locked"):
        assert code(GoError(text)) == wire.NOT_CONNECTED, text
    # after it left, with no answer: it may have been delivered
    for text in ("timed out waiting for message send response",
                 "websocket disconnected before message send returned response",
                 "websocket disconnected before message send (retry) returned response"):
        assert code(GoError(text)) == wire.UNCONFIRMED, text
    # WhatsApp answered no / no such account
    assert code(GoError("server returned error 463")) == wire.REJECTED
    assert code(GoError("message recipient must be a user JID with no device part")) == wire.REJECTED
    assert code(GoError("no LID found for 15550001111@s.whatsapp.net from server")) == wire.NOT_ON_WHATSAPP
    # a pairing code: a wrong number is refused, anything else may be asked again
    assert code(GoError("international phone number required (must not start with 0)"),
                wire.PAIR_PHONE) == wire.REJECTED
    assert code(GoError("info query timed out"), wire.PAIR_PHONE) == wire.NOT_CONNECTED
    assert wire.RETRYABLE_CODES == {wire.NOT_CONNECTED, wire.TIMEOUT}


def test_a_send_reports_started_before_it_goes_into_go(session):
    client = Client()
    s = session(client)
    order = []
    s.conn.send = lambda msg: order.append(msg["type"])
    real = client.send_message
    client.send_message = lambda jid, text: (order.append("go"), real(jid, text))[1]
    s.run_command(3, wire.SEND, {"jid": "x", "payload": {"type": "text", "text": "hi"}})
    assert order == [wire.STARTED, "go", wire.REPLY]


def test_a_request_past_its_deadline_or_during_stop_never_starts(session):
    client = Client()
    s = session(client)
    import time as _time
    msg = reply(s, wire.SEND, {"jid": "x", "payload": {"type": "text", "text": "late"},
                               "not_after": _time.time() - 1})
    assert msg["code"] == wire.NOT_CONNECTED and "waited too long" in msg["error"]
    s.stopping.set()
    msg = reply(s, wire.SEND, {"jid": "x", "payload": {"type": "text", "text": "stopping"}})
    assert msg["code"] == wire.NOT_CONNECTED
    assert client.calls == []                                    # neither reached Go


def test_logout_says_whether_whatsapp_was_told(session):
    class Offline(Client):
        def logout(self):
            raise GoError("error sending logout request: info query timed out")

    class CleanupFailed(Client):
        def logout(self):
            raise GoError("error deleting data from store: disk I/O error")

    assert reply(session(Client()), wire.LOGOUT, {})["result"] == {"told": True}
    not_told = reply(session(Offline()), wire.LOGOUT, {})["result"]
    assert not_told["told"] is False and "error sending logout request" in not_told["error"]
    assert reply(session(CleanupFailed()), wire.LOGOUT, {})["result"]["told"] is True
