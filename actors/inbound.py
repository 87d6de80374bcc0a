"""Inbound traffic of one company: incoming messages and receipts, each published once.

WhatsApp redelivers a message until a client acknowledges it, and a closing connection
may still hand over what it had received. The dedupe is the gateway's event log
(supervision/eventlog.py): `publish` appends the message's event and answers None for an
id already logged, so an id counts as seen only once its event is durable. (The old
design wrote the id to a dedupe file first and queued the event in memory: a kill in
between lost the message for good, because its redelivery was then dropped.)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from .connection import IncomingMessage, Receipt
from .kinds import EventKind

log = logging.getLogger(__name__)

# (kind, data) -> the logged event, or None: a message id already logged (or not logged at all)
Publish = Callable[[EventKind, dict[str, Any]], Any]


class Inbound:
    def __init__(self, company_dir: Path, publish: Publish) -> None:
        self._publish = publish
        self.received = 0
        self.redelivered = 0

    def message(self, message: IncomingMessage) -> bool:
        """True if the message was logged now; False for a redelivery (already logged)."""
        event = self._publish(EventKind.MESSAGE, {
            "id": message.id, "chat": message.chat, "phone": message.phone, "pushName": message.push_name,
            "text": message.text, "timestamp": message.timestamp, "isGroup": message.is_group})
        if event is None:
            self.redelivered += 1
            return False
        self.received += 1
        return True

    def receipt(self, receipt: Receipt) -> None:
        self._publish(EventKind.RECEIPT, {"messageIds": list(receipt.message_ids), "chat": receipt.chat,
                                          "receipt": receipt.kind})

    def close(self) -> None:
        """Nothing of its own to close: what it published is in the event log."""
