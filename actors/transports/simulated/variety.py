"""The simulator's inbound kinds beyond text (issue 13): what `POST /api/simulator/inbound`
takes with `type`, checked, as the `content` an IncomingMessage carries (the same shape
the neonize child reads from WhatsApp's protobufs, actors/transports/neonize/content.py)."""
from __future__ import annotations

import math
from typing import Any

from ...phone import InvalidInput

TYPES = ("text", "media", "edit", "revoke", "reaction", "location", "contact")
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


def _string(payload: dict, name: str, max_len: int, *, required: bool = True, empty: bool = True) -> str:
    value = payload.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > max_len or (not empty and not value):
        raise InvalidInput(f"'{name}' must be a string of {'1' if not empty else '0'}-{max_len} characters")
    return value


def _number(payload: dict, name: str, low: float, high: float) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise InvalidInput(f"'{name}' must be a number from {low:g} to {high:g}")
    return float(value)


def incoming_content(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The content of an incoming message of `kind`, from the control API's body."""
    if kind == "text":
        return {}
    if kind in ("edit", "revoke"):
        content = {"targetId": _string(payload, "targetId", 200, empty=False)}
        return {**content, "text": payload.get("text", "")} if kind == "edit" else content
    if kind == "reaction":
        emoji = _string(payload, "emoji", 20)
        return {"targetId": _string(payload, "targetId", 200, empty=False), "emoji": emoji, "removed": not emoji}
    if kind == "location":
        return {"latitude": _number(payload, "latitude", -90, 90), "longitude": _number(payload, "longitude", -180, 180),
                "name": _string(payload, "name", 200, required=False),
                "address": _string(payload, "address", 500, required=False), "live": False}
    if kind == "contact":
        contacts = payload.get("contacts")
        if not isinstance(contacts, list) or not 1 <= len(contacts) <= 10 or \
                not all(isinstance(c, dict) for c in contacts):
            raise InvalidInput("'contacts' must be a list of 1-10 objects with displayName (and vcard)")
        return {"contacts": [{"displayName": _string(c, "displayName", 200, empty=False),
                              "vcard": _string(c, "vcard", 10000, required=False)} for c in contacts]}
    if kind == "media":
        media_type = payload.get("mediaType")
        if media_type not in MEDIA_TYPES:
            raise InvalidInput(f"'mediaType' must be one of {', '.join(MEDIA_TYPES)}")
        size = payload.get("size", 0)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 2 ** 40:
            raise InvalidInput("'size' must be a whole number of bytes")
        return {"mediaType": media_type, "mime": _string(payload, "mime", 200, empty=False), "size": size,
                "caption": payload.get("text", ""), "fileName": _string(payload, "fileName", 255, required=False)}
    raise InvalidInput(f"'type' must be one of {', '.join(TYPES)}")
