"""Who a send goes to: a phone number (digits, or `digits@s.whatsapp.net`) or a group
(`<id>@g.us`). Validated, never rewritten: a group id keeps its exact form."""
from __future__ import annotations

import dataclasses
import re

from .phone import USER_SERVER, InvalidInput, normalize_phone

GROUP_SERVER = "g.us"
# Group ids: the old `<creator phone>-<unix time>` form, or the newer 18-or-so digit id.
_GROUP_JID = re.compile(r"([0-9]{5,20}(?:-[0-9]{5,15})?)@g\.us")


@dataclasses.dataclass(frozen=True)
class Recipient:
    to: str            # phone digits, or the group's JID
    jid: str           # what the connection sends to
    is_group: bool = False


def parse_recipient(value: object) -> Recipient:
    """A phone number (any form normalize_phone takes) or a group JID; InvalidInput otherwise."""
    if isinstance(value, str) and value.strip().endswith("@" + GROUP_SERVER):
        text = value.strip()
        if not _GROUP_JID.fullmatch(text):
            raise InvalidInput(f"not a group JID: {text[:100]!r} (expected digits@g.us or digits-digits@g.us)")
        return Recipient(to=text, jid=text, is_group=True)
    phone = normalize_phone(value)
    return Recipient(to=phone, jid=f"{phone}@{USER_SERVER}")


def is_group_jid(value: str) -> bool:
    return bool(_GROUP_JID.fullmatch(value))
