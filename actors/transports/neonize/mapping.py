"""Child side: neonize's protobuf events -> the wire's plain dicts (see wire.py).

Pure: no Go calls, no client state, so it is unit-tested with hand-built protobufs
(tests/neonize_mapping_cases.py, in a process of its own). neonize is imported inside
the functions: importing this module is cheap and never loads the Go runtime.

What is normalised here and why: a message's sender phone comes from the phone-number
JID or, for LID addressing, from SenderAlt; a 1:1 chat with a LID peer is answered on
the phone JID; timestamps become Unix seconds; `kind` tells user content from protocol
traffic so the gateway can drop the latter.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from . import wire

_USER_SERVERS = ("s.whatsapp.net", "c.us")
# Message fields that carry no user content: key distribution and context metadata ride
# along with real messages, and arrive alone when a group's keys change.
_NON_CONTENT_FIELDS = {"messageContextInfo", "senderKeyDistributionMessage",
                       "fastRatchetKeySenderKeyDistributionMessage"}
_MEDIA_FIELDS = {"imageMessage", "videoMessage", "audioMessage", "documentMessage",
                 "stickerMessage", "ptvMessage", "documentWithCaptionMessage"}
_TEXT_FIELDS = {"conversation", "extendedTextMessage"}
_REACTION_FIELDS = {"reactionMessage", "encReactionMessage"}


def _jid_str(jid: Any) -> str:
    """`user@server` without device/agent parts; "" for an unset or empty JID."""
    if jid is None or not jid.User:
        return ""
    return f"{jid.User}@{jid.Server}"


def user_digits(jid: Any) -> str:
    """The phone digits of a phone-number JID (device suffix ':N' stripped), else ""."""
    if jid is None or jid.Server not in _USER_SERVERS:
        return ""
    user = jid.User.split(":", 1)[0].split(".", 1)[0]
    return user if user.isdigit() else ""


def _has_jid(msg: Any, field: str) -> bool:
    # The Go glue always encodes SenderAlt/RecipientAlt, empty when unknown: check User.
    return msg.HasField(field) and bool(getattr(msg, field).User)


def _to_seconds(value: int) -> float:
    """neonize's MessageInfo.Timestamp is Unix milliseconds (Go glue: Timestamp.UnixMilli());
    older glue versions sent seconds, so anything below 1e11 (year 5138 in seconds) is
    taken as seconds already."""
    return value / 1000.0 if value >= 100_000_000_000 else float(value)


def _message_kind(message: Any) -> str:
    fields = {f.name for f, _ in message.ListFields()} - _NON_CONTENT_FIELDS
    if not fields:
        return "empty"
    if "protocolMessage" in fields:          # revokes, edits, history-sync notices, key shares
        return "protocol"
    if fields & _REACTION_FIELDS:
        return "reaction"
    if fields & _TEXT_FIELDS:
        return "text"
    if fields & _MEDIA_FIELDS:
        return "media"
    return "other"


def normalise_message(ev: Any) -> dict:
    from neonize.utils import extract_text

    info = ev.Info
    src = info.MessageSource
    sender = src.Sender
    phone = user_digits(sender)
    sender_alt = _jid_str(src.SenderAlt) if _has_jid(src, "SenderAlt") else ""
    if not phone and _has_jid(src, "SenderAlt"):
        # LID addressing: Sender is an opaque `<digits>@lid`; the phone JID rides in SenderAlt.
        phone = user_digits(src.SenderAlt)
    chat = _jid_str(src.Chat)
    if (not src.IsGroup and src.Chat.Server == "lid" and src.Chat.User == sender.User
            and phone and not src.IsFromMe):
        chat = f"{phone}@s.whatsapp.net"     # a 1:1 chat with a LID peer: reply to the phone JID
    kind = _message_kind(ev.Message)
    text = extract_text(ev.Message) if ev.HasField("Message") else ""
    if not text and "documentWithCaptionMessage" in {f.name for f, _ in ev.Message.ListFields()}:
        text = ev.Message.documentWithCaptionMessage.message.documentMessage.caption
    return {
        "type": wire.MESSAGE,
        "id": info.ID,
        "chat": chat,
        "chat_jid": _jid_str(src.Chat),
        "sender": _jid_str(sender),
        "sender_alt": sender_alt,
        "phone": phone,
        "text": text,
        "kind": kind,
        "push_name": info.Pushname,
        "timestamp": _to_seconds(info.Timestamp),
        "is_group": bool(src.IsGroup),
        "from_me": bool(src.IsFromMe),
        "is_edit": bool(ev.IsEdit),
        "broadcast": src.Chat.Server in ("broadcast", "newsletter"),
    }


def _reason_name(msg: Any, field: str = "Reason") -> str:
    from neonize.proto.Neonize_pb2 import ConnectFailureReason

    if not msg.HasField(field):
        return "UNKNOWN"
    value = getattr(msg, field)
    try:
        return ConnectFailureReason.Name(value)
    except ValueError:
        return f"CODE_{value}"


def _receipt(ev: Any) -> dict:
    src = ev.MessageSource
    kind = type(ev).ReceiptType.Name(ev.Type).lower() if ev.HasField("Type") else "unknown"
    return {"type": wire.RECEIPT, "ids": list(ev.MessageIDs), "chat": _jid_str(src.Chat),
            "sender": _jid_str(src.Sender), "kind": kind,
            "timestamp": float(ev.Timestamp), "from_me": bool(src.IsFromMe)}


def _pair_status(ev: Any) -> dict:
    if ev.Status == type(ev).SUCCESS:
        return {"type": wire.PAIRED, "phone": user_digits(ev.ID) or ev.ID.User,
                "jid": _jid_str(ev.ID), "platform": ev.Platform, "business_name": ev.BusinessName}
    return {"type": wire.PAIR_ERROR, "error": ev.Error or "pairing failed"}


def _connect_failure(ev: Any) -> dict:
    name = _reason_name(ev)
    return {"type": wire.CONNECT_FAILURE, "reason": name,
            "status": wire.FAILURE_STATUS.get(name, 0), "message": ev.Message}


def _temporary_ban(ev: Any) -> dict:
    code = type(ev).TempBanReason.Name(ev.Code) if ev.HasField("Code") else "UNKNOWN"
    return {"type": wire.TEMPORARY_BAN, "code": code, "expire_s": int(ev.Expire)}


def _just(kind: str) -> Callable[[Any], dict]:
    return lambda _ev: {"type": kind}


# neonize.events name -> mapper; one small function per event, as whatsmeow's handlers.
_MAPPERS: dict[str, Callable[[Any], dict]] = {
    "MessageEv": normalise_message,
    "ReceiptEv": _receipt,
    "QREv": lambda ev: {"type": wire.QR_CODES, "codes": list(ev.Codes)},
    "PairStatusEv": _pair_status,
    "LoggedOutEv": lambda ev: {"type": wire.LOGGED_OUT, "reason": _reason_name(ev),
                               "on_connect": bool(ev.OnConnect)},
    "ConnectFailureEv": _connect_failure,
    "TemporaryBanEv": _temporary_ban,
    "KeepAliveTimeoutEv": lambda ev: {"type": wire.KEEPALIVE_TIMEOUT, "error_count": int(ev.ErrorCount),
                                      "last_success": int(ev.LastSuccess)},
    "StreamErrorEv": lambda ev: {"type": wire.STREAM_ERROR, "code": ev.Code},
    "ConnectedEv": _just(wire.CONNECTED),
    "DisconnectedEv": _just(wire.DISCONNECTED),
    "StreamReplacedEv": _just(wire.STREAM_REPLACED),
    "ClientOutdatedEv": _just(wire.CLIENT_OUTDATED),
    "KeepAliveRestoredEv": _just(wire.KEEPALIVE_RESTORED),
}

# The events the child subscribes to. QREv is not one: neonize buffers it until paired,
# so live codes come from the client's qr callback instead.
FORWARDED = tuple(name for name in _MAPPERS if name != "QREv")


def map_event(ev: Any) -> dict | None:
    """neonize protobuf event -> plain picklable dict, or None for events we don't forward.

    Pure: no Go calls, no client state. Unit-tested with hand-built protobufs.
    """
    mapper = _by_class().get(type(ev))
    return mapper(ev) if mapper is not None else None


@functools.cache
def _by_class() -> dict[type, Callable[[Any], dict]]:
    import neonize.events as nev

    return {getattr(nev, name): mapper for name, mapper in _MAPPERS.items()}
