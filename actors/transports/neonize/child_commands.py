"""Child side: what each command from the parent does with the neonize client, and which
wire error code a failure is answered with. Imports no neonize: the client is handed in.

Every failed command is answered with an error *code* (wire.NOT_CONNECTED, REJECTED,
TIMEOUT, INTERNAL) taken from what the child knows (its own state, whether the client
is still connected, which exception class), never from Go's error text.
"""
from __future__ import annotations

from typing import Any, Callable

from . import wire

GO_REQUEST_TIMEOUT = 75.0        # whatsmeow's defaultRequestTimeout: a Go call failing after
                                 # this long gave up waiting for WhatsApp (a timeout)


class NotReady(Exception):
    """The session cannot take commands: not up yet, or over."""


class Refused(Exception):
    """The request itself is wrong (unknown command, unknown payload type)."""


def failure_code(exc: BaseException, *, go_error: type, connected: Callable[[], bool],
                 took: float) -> str:
    """The wire error code for a failed command, from what the child knows."""
    if isinstance(exc, NotReady):
        return wire.NOT_CONNECTED
    if isinstance(exc, (Refused, KeyError)):
        return wire.REJECTED
    if isinstance(exc, go_error):             # Go said no: why depends on the link, not the text
        if not connected():
            return wire.NOT_CONNECTED
        return wire.TIMEOUT if took >= GO_REQUEST_TIMEOUT else wire.REJECTED
    return wire.INTERNAL


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
    client.logout()
    return {}


_COMMANDS: dict[str, Callable[[Any, dict], dict]] = {
    wire.SEND: _send, wire.PAIR_PHONE: _pair_phone, wire.LOGOUT: _logout}


def execute(client: Any, op: str, args: dict) -> dict:
    """Run command `op` on the client; its result dict (raises Refused if `op` is unknown)."""
    command = _COMMANDS.get(op)
    if command is None:
        raise Refused(f"unknown command {op!r}")
    return command(client, args)
