"""Each sent message's status, per company: `queued -> sent -> delivered -> read`, or
`failed` / `unconfirmed`, joined from the send outcomes and WhatsApp's receipts.

Owned by the SessionActor (its state changes only inside the actor). Kept durably in
`<company>/message-status.jsonl`, bounded to the latest `keep` messages, so
`GET .../messages/:id` answers after a restart too. Every change is published as a
`message.status` event.

A status only moves forward: a late `delivered` never undoes `read`. A receipt proves the
message went out, so it also moves an `unconfirmed` (or even `failed`) send on. A receipt
may arrive before the send's outcome (the ack and the receipt travel separately): it is
held, bounded, until the message id is known.
"""
from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any, Callable

from .clock import iso
from .connection import Receipt
from .journal import Journal
from .kinds import EventKind

log = logging.getLogger(__name__)

STATUSES = ("queued", "sent", "delivered", "read", "failed", "unconfirmed")
_RANK = {"queued": 0, "unconfirmed": 1, "failed": 1, "sent": 2, "delivered": 3, "read": 4}
# WhatsApp's receipt kinds (neonize's ReceiptType names, lower case) -> the status they prove.
RECEIPT_STATUS = {"delivered": "delivered", "read": "read", "played": "read"}
KEEP = 5000               # messages remembered per company
EARLY_RECEIPTS = 500      # receipts held for message ids not known yet

Publish = Callable[[EventKind, dict[str, Any]], None]


class MessageStatuses:
    def __init__(self, path: Path, publish: Publish, *, keep: int = KEEP) -> None:
        self._journal = Journal(path)
        self._publish = publish
        self._keep = keep
        self._by_id: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._by_message_id: dict[str, str] = {}
        self._early: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        for record in self._journal.read():
            self._replay(record)

    # ---- what happens to a send -------------------------------------------------------------

    def queued(self, entry_id: str, to: str) -> None:
        """The send was accepted into the outbox."""
        if entry_id not in self._by_id:
            self._change(entry_id, "queued", to=to)

    def sent(self, entry_id: str, message_id: str) -> None:
        self._change(entry_id, "sent", message_id=message_id)
        early = self._early.pop(message_id, None)
        if early is not None:
            self._change(entry_id, early[0], at=early[1])

    def failed(self, entry_id: str, error: str) -> None:
        self._change(entry_id, "failed", error=error)

    def unconfirmed(self, entry_id: str, error: str) -> None:
        self._change(entry_id, "unconfirmed", error=error)

    def outcome(self, outcome: Any) -> None:
        """A send outcome of the send queue (sending.Outcome)."""
        if outcome.sent is not None:
            self.sent(outcome.entry_id, outcome.sent)
        elif getattr(outcome, "unconfirmed", None) is not None:
            self.unconfirmed(outcome.entry_id, outcome.unconfirmed)
        elif outcome.failed is not None:
            self.failed(outcome.entry_id, outcome.failed)

    def receipt(self, receipt: Receipt) -> None:
        status = RECEIPT_STATUS.get(receipt.kind)
        if status is None:
            return
        for message_id in receipt.message_ids:
            entry_id = self._by_message_id.get(message_id)
            if entry_id is not None:
                self._change(entry_id, status, at=receipt.timestamp)
                continue
            held = self._early.get(message_id)
            if held is None or _RANK[status] > _RANK[held[0]]:
                self._early[message_id] = (status, receipt.timestamp)
                self._early.move_to_end(message_id)
            while len(self._early) > EARLY_RECEIPTS:
                self._early.popitem(last=False)

    # ---- reading ------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        """The status of a send, by the id the send returned (or WhatsApp's message id)."""
        record = self._by_id.get(key)
        if record is None and key in self._by_message_id:
            record = self._by_id.get(self._by_message_id[key])
        return None if record is None else shown(record)

    def __len__(self) -> int:
        return len(self._by_id)

    def close(self) -> None:
        self._journal.close()

    # ---- helpers ------------------------------------------------------------------------------

    def _change(self, entry_id: str, status: str, *, to: str | None = None, message_id: str | None = None,
                error: str | None = None, at: float | None = None) -> None:
        record = self._by_id.get(entry_id)
        if record is None:
            if status != "queued" and to is None:
                # A send accepted before this store existed (an older outbox): still tracked.
                to = ""
            record = {"id": entry_id, "to": to or "", "messageId": None, "status": None, "error": None,
                      "times": {}}
        previous = record["status"]
        if previous is not None and _RANK[status] <= _RANK[previous]:
            if message_id and not record["messageId"]:
                record["messageId"] = message_id       # e.g. a late ack after a receipt moved it on
                self._by_message_id[message_id] = entry_id
            return
        at = time.time() if at is None else at
        record["status"] = status
        record["times"][status] = at
        if message_id:
            record["messageId"] = message_id
            self._by_message_id[message_id] = entry_id
        if error is not None:
            record["error"] = error
        elif _RANK[status] >= _RANK["sent"]:
            record["error"] = None        # it went out after all
        self._store(record)
        self._publish(EventKind.MESSAGE_STATUS, {**shown(record), "previous": previous})

    def _store(self, record: dict[str, Any]) -> None:
        self._remember(record)
        try:
            self._journal.append(record)
            if self._journal.records_written > 2 * self._keep + 100:
                self._journal.rewrite(list(self._by_id.values()))
        except OSError as exc:
            # Still answered from memory; only a restart would forget this change.
            log.warning("could not store a message status: %s", exc)

    def _remember(self, record: dict[str, Any]) -> None:
        self._by_id[record["id"]] = record
        self._by_id.move_to_end(record["id"])
        if record.get("messageId"):
            self._by_message_id[record["messageId"]] = record["id"]
        while len(self._by_id) > self._keep:
            _id, old = self._by_id.popitem(last=False)
            if old.get("messageId"):
                self._by_message_id.pop(old["messageId"], None)

    def _replay(self, record: dict[str, Any]) -> None:
        if not isinstance(record.get("id"), str) or record.get("status") not in _RANK:
            return
        if not isinstance(record.get("times"), dict):
            record["times"] = {}
        self._remember(record)


def shown(record: dict[str, Any]) -> dict[str, Any]:
    """A status as the API and the events show it."""
    times = record.get("times") or {}
    return {"id": record["id"], "to": record.get("to", ""), "messageId": record.get("messageId"),
            "status": record["status"], "error": record.get("error"),
            "updatedAt": iso(times[record["status"]], ms=True) if record["status"] in times else None,
            "history": {status: iso(times[status], ms=True) for status in STATUSES if status in times}}
