"""What a neonize `Message` protobuf holds beyond plain text (issue 13): edits, revokes,
reactions, locations, contacts, and media metadata. Runs in the child (mapping.py), on
neonize's own waE2E protobufs; attribute access only, so it imports nothing of neonize.

`content_of(message)` answers a plain dict: {"kind": ..., fields} for those kinds, {} for
anything else (plain text, protocol traffic), so the event stays picklable and the
translation (translate.py) decides what becomes an event.
"""
from __future__ import annotations

from typing import Any

_MEDIA = {"imageMessage": "image", "videoMessage": "video", "audioMessage": "audio",
          "documentMessage": "document", "stickerMessage": "sticker"}


def _has(msg: Any, name: str) -> bool:
    try:
        return msg.HasField(name)
    except ValueError:
        return False


def _text_of(message: Any) -> str:
    if _has(message, "extendedTextMessage"):
        return message.extendedTextMessage.text
    return message.conversation or ""


def _media(kind: str, m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "media", "mediaType": kind, "mime": getattr(m, "mimetype", "") or "",
                           "size": int(getattr(m, "fileLength", 0) or 0),
                           "caption": getattr(m, "caption", "") or "", "fileName": getattr(m, "fileName", "") or ""}
    if kind == "audio":
        out["voiceNote"], out["seconds"] = bool(m.PTT), int(m.seconds or 0)
    elif kind == "video":
        out["seconds"] = int(m.seconds or 0)
    return out


def content_of(message: Any) -> dict[str, Any]:
    if message is None:
        return {}
    if _has(message, "protocolMessage"):
        proto = message.protocolMessage
        types = type(proto).Type
        if proto.type == types.Value("REVOKE"):
            return {"kind": "revoke", "targetId": proto.key.ID, "fromMe": bool(proto.key.fromMe)}
        if proto.type == types.Value("MESSAGE_EDIT"):
            edited = proto.editedMessage
            return {"kind": "edit", "targetId": proto.key.ID, "text": _text_of(edited) or _caption_of(edited)}
        return {}
    if _has(message, "reactionMessage"):       # (encReactionMessage stays sealed: not readable here)
        r = message.reactionMessage
        # An empty emoji takes the reaction back.
        return {"kind": "reaction", "targetId": r.key.ID, "emoji": r.text, "removed": not r.text}
    for name in ("locationMessage", "liveLocationMessage"):
        if _has(message, name):
            loc = getattr(message, name)
            return {"kind": "location", "latitude": loc.degreesLatitude, "longitude": loc.degreesLongitude,
                    "name": getattr(loc, "name", "") or "", "address": getattr(loc, "address", "") or "",
                    "live": name == "liveLocationMessage" or bool(getattr(loc, "isLive", False))}
    if _has(message, "contactMessage"):
        c = message.contactMessage
        return {"kind": "contact", "contacts": [{"displayName": c.displayName, "vcard": c.vcard}]}
    if _has(message, "contactsArrayMessage"):
        return {"kind": "contact", "contacts": [{"displayName": c.displayName, "vcard": c.vcard}
                                                for c in message.contactsArrayMessage.contacts]}
    if _has(message, "documentWithCaptionMessage"):
        message = message.documentWithCaptionMessage.message
    for name, kind in _MEDIA.items():
        if _has(message, name):
            return _media(kind, getattr(message, name))
    return {}


def _caption_of(message: Any) -> str:
    for name in ("imageMessage", "videoMessage", "documentMessage"):
        if _has(message, name):
            return getattr(message, name).caption or ""
    return ""
