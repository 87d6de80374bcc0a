"""Child side: neonize's protobuf events -> the wire's plain dicts (see wire.py).

Pure: no Go calls, no client state, so it is unit-tested with hand-built protobufs
(tests/neonize_mapping_cases.py, in a process of its own). neonize is imported inside
the functions: importing this module is cheap and never loads the Go runtime.

What is normalised here and why: a message's sender phone comes from the phone-number
JID or, for LID addressing, from SenderAlt, else from the client's LID store (whatsmeow
keeps the LID<->phone map it learnt; `pn_for_lid`, a look-up handed in, so the mapping
itself stays pure); a 1:1 chat with a LID peer is answered on the phone JID, and a
receipt's LID chat is reported as the phone JID too; timestamps become Unix seconds;
`kind` tells user content from protocol traffic so the gateway can drop the latter.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from . import wire

PnForLid = Callable[[str], str]     # LID user part -> phone digits, "" if unknown

log = logging.getLogger("switchboard.neonize.child")


def _no_lookup(_lid_user: str) -> str:
    return ""


def store_lookup(client: Any) -> PnForLid:
    """A PnForLid that asks the client's LID store (neonize NewClient.get_pn_from_lid ->
    whatsmeow Store.LIDs.GetPNForLID: a cached local map, no network). Child side only."""
    from neonize.proto.Neonize_pb2 import JID

    def lookup(lid_user: str) -> str:
        try:
            # An unpaired device has no LID store: neonize's GetPNFromLID would then
            # dereference nil and panic the whole process (measured). `client.me` is set by
            # neonize's Device event, which waits until the device has its ID (FetchMe).
            me = getattr(client, "me", None)
            if me is None or not me.HasField("JID") or not me.JID.User:
                return ""
            pn = client.get_pn_from_lid(JID(User=lid_user, Server="lid", Device=0, RawAgent=0,
                                            Integrator=0, IsEmpty=False))
        except Exception as exc:                 # GetJIDFromStoreError, a store fault
            log.debug("no phone for %s@lid: %s", lid_user, exc)
            return ""
        return user_digits(pn)

    return lookup

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


def _phone_of(jid: Any, alt: Any, pn_for_lid: PnForLid) -> str:
    """The phone digits behind `jid`: itself if a phone JID, else the alternate (SenderAlt),
    else, for a LID, what the LID store knows."""
    phone = user_digits(jid)
    if not phone and alt is not None and alt.User:
        phone = user_digits(alt)                 # LID addressing: the phone rides in the alt
    if not phone and jid is not None and jid.Server == "lid" and jid.User:
        phone = pn_for_lid(jid.User.split(":", 1)[0])
    return phone


def normalise_message(ev: Any, pn_for_lid: PnForLid = _no_lookup) -> dict:
    from neonize.utils import extract_text

    info = ev.Info
    src = info.MessageSource
    sender = src.Sender
    sender_alt = _jid_str(src.SenderAlt) if _has_jid(src, "SenderAlt") else ""
    phone = _phone_of(sender, src.SenderAlt if _has_jid(src, "SenderAlt") else None, pn_for_lid)
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


def _receipt(ev: Any, pn_for_lid: PnForLid = _no_lookup) -> dict:
    src = ev.MessageSource
    kind = type(ev).ReceiptType.Name(ev.Type).lower() if ev.HasField("Type") else "unknown"
    chat = _jid_str(src.Chat)
    # whatsmeow sends DMs to the contact's LID (send.go), so a 1:1 receipt's chat is
    # usually `<lid>@lid`: report the phone JID the message was sent to.
    if not src.IsGroup and src.Chat.Server == "lid":
        alt = src.SenderAlt if _has_jid(src, "SenderAlt") and src.Sender.User == src.Chat.User else None
        phone = _phone_of(src.Chat, alt, pn_for_lid)
        if phone:
            chat = f"{phone}@s.whatsapp.net"
    return {"type": wire.RECEIPT, "ids": list(ev.MessageIDs), "chat": chat,
            "chat_jid": _jid_str(src.Chat), "sender": _jid_str(src.Sender), "kind": kind,
            "timestamp": float(ev.Timestamp), "from_me": bool(src.IsFromMe)}


def _pair_status(ev: Any) -> dict:
    if ev.Status == type(ev).SUCCESS:
        return {"type": wire.PAIRED, "phone": user_digits(ev.ID) or ev.ID.User,
                "jid": _jid_str(ev.ID), "platform": ev.Platform, "business_name": ev.BusinessName}
    return {"type": wire.PAIR_ERROR, "error": ev.Error or "pairing failed"}


def _raw_reason(node: Any) -> int:
    """The `reason` attribute of the raw <failure> node (whatsmeow reads it the same way,
    connectionevents.go handleConnectFailure); 0 if absent."""
    for attr in node.Attrs:
        if attr.name == "reason":
            value = attr.text if attr.WhichOneof("Value") == "text" else attr.integer
            try:
                return int(value)
            except (TypeError, ValueError):
                return 0
    return 0


def _connect_failure(ev: Any) -> dict:
    # neonize's enum lacks 413, 414, 415 and 418 (its encoder leaves Reason unset for them):
    # the raw node still carries WhatsApp's number.
    name = _reason_name(ev)
    status = wire.FAILURE_STATUS.get(name, 0)
    if not status and ev.HasField("Raw"):
        status = _raw_reason(ev.Raw)
        name = wire.FAILURE_NAME.get(status, f"CODE_{status}" if status else name)
    return {"type": wire.CONNECT_FAILURE, "reason": name, "status": status, "message": ev.Message}


def _logged_out(ev: Any) -> dict:
    # OnConnect: a <failure> with 401/403/406 (the reason is set); else a stream error
    # 401 or conflict device_removed (connectionevents.go): no reason, it is an unlink.
    name = _reason_name(ev)
    status = wire.FAILURE_STATUS.get(name, 0) if ev.OnConnect else 0
    return {"type": wire.LOGGED_OUT, "reason": name, "on_connect": bool(ev.OnConnect),
            "status": status or wire.FAILURE_STATUS["LOGGED_OUT"]}


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
    "LoggedOutEv": _logged_out,
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
_IDENTITY_MAPPERS = {"MessageEv", "ReceiptEv"}      # these take the pn_for_lid look-up


def map_event(ev: Any, pn_for_lid: PnForLid = _no_lookup) -> dict | None:
    """neonize protobuf event -> plain picklable dict, or None for events we don't forward.

    Pure but for `pn_for_lid` (the child hands in store_lookup(client); tests a dict).
    Unit-tested with hand-built protobufs.
    """
    found = _by_class().get(type(ev))
    if found is None:
        return None
    mapper, takes_lookup = found
    return mapper(ev, pn_for_lid) if takes_lookup else mapper(ev)


@functools.cache
def _by_class() -> dict[type, tuple[Callable[..., dict], bool]]:
    import neonize.events as nev

    return {getattr(nev, name): (mapper, name in _IDENTITY_MAPPERS) for name, mapper in _MAPPERS.items()}
