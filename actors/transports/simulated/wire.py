"""The link protocol between a gateway and `switchboard simulator`.

One TCP connection per company link, newline-delimited JSON objects, UTF-8. Why not a
WebSocket or HTTP: both ends are ours, on loopback; a link is exactly one socket whose
life is the link's life (a killed gateway's sockets close, so the service sees its links
end), and asyncio's StreamReader.readline gives the framing. A WebSocket would add an
upgrade handshake, masking and a library we do not have, for nothing we need.

Gateway -> service: `hello` {company, credentials|null} first; then `send` {req, jid, text},
`pair` {req, phone}, `logout` {req}, `lid` {req, lid}, `ack` {id} (an inbound message is
the client's: the service stops holding it), `close` (the client is closing: the service
stops delivering, answers `closed`, and re-holds what was never acknowledged when the
socket ends).
Service -> gateway: `event` {type, fields}, `credentials` {credentials} (before Paired:
store them, as neonize writes its sqlite), `reply` {req, ok} or {req, error: {message,
retryable, unconfirmed, code}}, `closed`. A terminal event is followed by the socket closing.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from ... import connection as contract
from ...connection import Cause, ConnectionEvent, LogoutResult, PairingCode, SendError

VERSION = 1
MAX_LINE = 4 * 1024 * 1024
EVENT_TYPES = {cls.__name__: cls for cls in (
    contract.QrCode, contract.QrExhausted, contract.Paired, contract.Connected, contract.Disconnected,
    contract.Interrupted, contract.LoggedOut, contract.Replaced, contract.TemporaryBan, contract.ConnectFailure,
    contract.IncomingMessage, contract.Receipt)}
TERMINAL = (contract.QrExhausted, contract.Disconnected, contract.LoggedOut, contract.Replaced,
            contract.TemporaryBan, contract.ConnectFailure)


class ProtocolError(ValueError):
    pass


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def parse(raw: bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("a line must be a JSON object with an op")
    return message


def encode_event(event: ConnectionEvent) -> dict[str, Any]:
    fields = {}
    for f in dataclasses.fields(event):
        if f.metadata.get("local"):
            continue
        value = getattr(event, f.name)
        fields[f.name] = value.value if isinstance(value, enum.Enum) else list(value) if isinstance(value, tuple) \
            else value
    return {"op": "event", "type": type(event).__name__, "fields": fields}


def decode_event(message: dict[str, Any]) -> ConnectionEvent:
    """The event, with the fields this side's class knows (the other side may be newer)."""
    cls = EVENT_TYPES.get(message.get("type"))        # type: ignore[arg-type]
    fields = message.get("fields")
    if cls is None or not isinstance(fields, dict):
        raise ProtocolError(f"unknown event {message.get('type')!r}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in fields or f.metadata.get("local"):
            continue
        value = fields[f.name]
        if f.name == "cause":
            value = Cause(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"bad {cls.__name__}: {exc}") from None


def encode_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, SendError):
        return {"message": str(exc), "retryable": exc.retryable, "unconfirmed": exc.unconfirmed,
                "code": exc.code}
    return {"message": str(exc) or type(exc).__name__, "retryable": False, "unconfirmed": False, "code": ""}


def decode_error(error: Any) -> SendError:
    if not isinstance(error, dict):
        return SendError("the simulator answered with a malformed error", retryable=False)
    message = str(error.get("message", "error"))
    retryable, unconfirmed = bool(error.get("retryable")), bool(error.get("unconfirmed"))
    return SendError(message, retryable=retryable, unconfirmed=unconfirmed, code=str(error.get("code") or ""))


def encode_result(value: Any) -> Any:
    """A command's result as JSON: a pairing code keeps its expiry, a logout says whether
    WhatsApp was told."""
    if isinstance(value, PairingCode):
        return {"pairingCode": str(value), "expiresIn": value.expires_in}
    if isinstance(value, LogoutResult):
        return {"toldWhatsapp": value.told_whatsapp, "reason": value.reason}
    return value


def decode_result(op: str, value: Any) -> Any:
    if op == "pair" and isinstance(value, dict):
        return PairingCode(str(value.get("pairingCode", "")), float(value.get("expiresIn", 0)))
    if op == "logout" and isinstance(value, dict):
        return LogoutResult(bool(value.get("toldWhatsapp")), str(value.get("reason", "")))
    return value
