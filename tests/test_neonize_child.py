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
    s.run_command(7, op, args)
    (msg,) = s.conn.sent
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
    (Client(connected=False, fail=True), wire.SEND, {"jid": "x", "payload": {"type": "text", "text": "hi"}},
     wire.NOT_CONNECTED),
    (Client(connected=True, fail=True), wire.SEND, {"jid": "x", "payload": {"type": "text", "text": "hi"}},
     wire.REJECTED),
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


def test_the_child_names_failures_by_what_it_knows_not_by_go_text():
    def code(exc, connected=True, took=0.1):
        return failure_code(exc, go_error=GoError, connected=lambda: connected, took=took)

    assert code(NotReady("session not ready")) == wire.NOT_CONNECTED
    assert code(Refused("unknown command")) == wire.REJECTED
    assert code(KeyError("jid")) == wire.REJECTED
    assert code(GoError("websocket not connected"), connected=False) == wire.NOT_CONNECTED
    assert code(GoError("timed out"), connected=True, took=0.5) == wire.REJECTED   # text is ignored
    assert code(GoError("anything"), connected=True, took=80.0) == wire.TIMEOUT
    assert code(AttributeError("bug")) == wire.INTERNAL
    assert wire.RETRYABLE_CODES == {wire.NOT_CONNECTED, wire.TIMEOUT}
