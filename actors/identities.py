"""The LID <-> phone mapping of one company, learned from its traffic and kept durably.

WhatsApp increasingly addresses people by a LID (`<digits>@lid`, an opaque per-account
id) instead of their phone number. Whenever an event carries both (whatsmeow's
`SenderAlt`, the LID store's answer), the pair is remembered in
`<company>/identities.jsonl`, so later events from the LID alone still name the phone,
every inbound event carries both forms, and a send says which LID its recipient has.
Bounded: the latest `keep` pairs. Owned by the SessionActor.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import re
from pathlib import Path

from .connection import IncomingMessage
from .journal import Journal
from .phone import USER_SERVER

log = logging.getLogger(__name__)

LID_SERVER = "lid"
KEEP = 20000
_LID = re.compile(r"[0-9]{1,25}")
_PHONE = re.compile(r"[0-9]{7,15}")


def lid_user(jid: str) -> str:
    """`123456789012345:3@lid` -> `123456789012345`; "" if `jid` is not a LID JID."""
    user, _, server = jid.partition("@")
    user = user.split(":", 1)[0]
    return user if server == LID_SERVER and _LID.fullmatch(user) else ""


class Identities:
    def __init__(self, path: Path, *, keep: int = KEEP) -> None:
        self._journal = Journal(path)
        self._keep = keep
        self._phone_by_lid: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lid_by_phone: dict[str, str] = {}
        for record in self._journal.read():
            lid, phone = record.get("lid"), record.get("phone")
            if isinstance(lid, str) and isinstance(phone, str) and _LID.fullmatch(lid) and _PHONE.fullmatch(phone):
                self._remember(lid, phone)

    def learn(self, lid: str, phone: str) -> None:
        """`lid`: the LID user part (digits); `phone`: digits. Stored once per change."""
        if not (_LID.fullmatch(lid) and _PHONE.fullmatch(phone)) or self._phone_by_lid.get(lid) == phone:
            return
        self._remember(lid, phone)
        try:
            self._journal.append({"lid": lid, "phone": phone})
            if self._journal.records_written > 2 * self._keep + 100:
                self._journal.rewrite([{"lid": k, "phone": v} for k, v in self._phone_by_lid.items()])
        except OSError as exc:
            log.warning("could not store a LID mapping: %s", exc)     # still known until a restart

    def phone_for(self, lid: str) -> str:
        return self._phone_by_lid.get(lid, "")

    def lid_for(self, phone: str) -> str:
        return self._lid_by_phone.get(phone, "")

    def __len__(self) -> int:
        return len(self._phone_by_lid)

    def close(self) -> None:
        self._journal.close()

    def _remember(self, lid: str, phone: str) -> None:
        old_phone = self._phone_by_lid.pop(lid, None)
        if old_phone is not None and self._lid_by_phone.get(old_phone) == lid:
            del self._lid_by_phone[old_phone]
        self._phone_by_lid[lid] = phone
        self._lid_by_phone[phone] = lid
        while len(self._phone_by_lid) > self._keep:
            old_lid, old = self._phone_by_lid.popitem(last=False)
            if self._lid_by_phone.get(old) == old_lid:
                del self._lid_by_phone[old]


def complete(identities: Identities, message: IncomingMessage) -> IncomingMessage:
    """`message` (an IncomingMessage) with the sender in both forms where the mapping (or
    the message itself) knows them; learns the pair when the message carries both."""
    lid = lid_user(message.lid) or lid_user(message.participant) or (
        "" if message.is_group else lid_user(message.chat))
    phone = message.phone
    if lid and phone:
        identities.learn(lid, phone)
    elif lid:
        phone = identities.phone_for(lid)
    elif phone:
        lid = identities.lid_for(phone)
    participant = message.participant
    if message.is_group and not participant and phone:
        participant = f"{phone}@{USER_SERVER}"
    return dataclasses.replace(message, phone=phone, lid=f"{lid}@{LID_SERVER}" if lid else "",
                               participant=participant)
