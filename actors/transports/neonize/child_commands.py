"""Child side: what each command from the parent does with the neonize client, and which
wire error code a failure is answered with. Imports no neonize: the client is handed in.

Every failed command is answered with an error *code* (wire.NOT_CONNECTED, UNCONFIRMED,
REJECTED, NOT_ON_WHATSAPP, INTERNAL). neonize hands whatsmeow's errors over as text only
(`SendMessageError(err.Error())`), so a Go failure is classified here, once, by where in
whatsmeow's SendMessage it can have come from (send.go, request.go, errors.go):

  before the message node left (nothing reached WhatsApp: NOT_CONNECTED, retryable)
      ErrNotConnected "websocket not connected", ErrNotLoggedIn, the LID/usync look-ups
      ("failed to get user info ...", "failed to get LID for PN ..."), device lists,
      prekeys, encryption, ErrIQTimedOut / "websocket disconnected before info query"
      inside those look-ups - everything whatsmeow returns before `sendNode`
  after it left, with no answer (UNCONFIRMED: it may have been delivered)
      ErrMessageTimedOut "timed out waiting for message send response" (75 s),
      DisconnectedError "websocket disconnected before message send returned response",
      a cancelled/expired context
  WhatsApp answered no (REJECTED): ErrServerReturnedError "server returned error <n>",
      a recipient whatsmeow will not address (device part, unknown server, broadcast)
  no such account (NOT_ON_WHATSAPP): "no LID found for <jid> from server"
Anything unrecognised that Go raised *before* the request is treated as before, because
every post-request path of SendMessage is listed above.
"""
from __future__ import annotations

from typing import Any, Callable

from . import wire

GO_REQUEST_TIMEOUT = 75.0        # whatsmeow's defaultRequestTimeout (request.go)

# whatsmeow's error texts (errors.go, send.go, request.go), by outcome.
NO_LID = "no LID found for"
_UNCONFIRMED_TEXTS = ("timed out waiting for message send response",
                      "websocket disconnected before message send returned response",
                      "websocket disconnected before message send (retry) returned response",
                      "context deadline exceeded", "context canceled")
_REFUSED_TEXTS = ("server returned error", "message recipient must be a user JID",
                  "can't send message to unknown server", "sending to non-status broadcast lists",
                  "invalid inline bot ID", "only one extra parameter")
# PairPhone refusals: the number itself is wrong (pair-code.go).
_PAIR_REFUSED_TEXTS = ("phone number too short", "international phone number required",
                       "info query returned status 400", "bad-request")
LOGOUT_NOT_SENT = "error sending logout request"     # client.go Logout: the IQ failed


class NotReady(Exception):
    """The session cannot take commands: not up yet, or over."""


class Refused(Exception):
    """The request itself is wrong (unknown command, unknown payload type)."""


def failure_code(exc: BaseException, *, go_error: type, op: str = wire.SEND) -> str:
    """The wire error code for a failed command, from what the child knows."""
    if isinstance(exc, NotReady):
        return wire.NOT_CONNECTED
    if isinstance(exc, (Refused, KeyError)):
        return wire.REJECTED
    if not isinstance(exc, go_error):
        return wire.INTERNAL
    text = str(exc)
    if op == wire.SEND:
        if NO_LID in text:
            return wire.NOT_ON_WHATSAPP
        if any(t in text for t in _UNCONFIRMED_TEXTS):
            return wire.UNCONFIRMED
        if any(t in text for t in _REFUSED_TEXTS):
            return wire.REJECTED
        return wire.NOT_CONNECTED                # failed before the message node left
    if op == wire.PAIR_PHONE and any(t in text for t in _PAIR_REFUSED_TEXTS):
        return wire.REJECTED
    return wire.NOT_CONNECTED                    # a pairing code or a logout: asking again is harmless


def _send(client: Any, args: dict) -> dict:
    """Dispatch on the payload's type; media joins here as another branch of _SENDERS."""
    record = args["payload"]
    sender = _SENDERS.get(record.get("type"))
    if sender is None:
        raise Refused(f"unsupported payload type {record.get('type')!r}")
    resp = sender(client, args["jid"], record)
    return {"message_id": resp.ID, "timestamp": int(resp.Timestamp)}


_SENDERS: dict[str, Callable[[Any, str, dict], Any]] = {
    "text": lambda client, jid, record: client.send_message(jid, record["text"]),
}


def _pair_phone(client: Any, args: dict) -> dict:
    return {"code": client.PairPhone(args["phone"], show_push_notification=True)}


def _logout(client: Any, args: dict) -> dict:
    """whatsmeow's Logout sends the remove-companion-device IQ, then disconnects and deletes
    the store. If the IQ failed WhatsApp was not told and the store is kept: say so."""
    try:
        client.logout()
    except Exception as exc:
        if LOGOUT_NOT_SENT in str(exc):
            return {"told": False, "error": str(exc)}
        return {"told": True, "error": str(exc)}     # told; only the local clean-up failed
    return {"told": True}


_COMMANDS: dict[str, Callable[[Any, dict], dict]] = {
    wire.SEND: _send, wire.PAIR_PHONE: _pair_phone, wire.LOGOUT: _logout}


def execute(client: Any, op: str, args: dict) -> dict:
    """Run command `op` on the client; its result dict (raises Refused if `op` is unknown)."""
    command = _COMMANDS.get(op)
    if command is None:
        raise Refused(f"unknown command {op!r}")
    return command(client, args)
