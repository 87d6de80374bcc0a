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

# (kind, data) -> the logged event; None: a message id already logged; NOT_LOGGED: the log failed
Publish = Callable[[EventKind, dict[str, Any]], Any]
NOT_LOGGED = type("NotLogged", (), {"__repr__": lambda self: "NOT_LOGGED", "__bool__": lambda self: False})()


class Inbound:
    def __init__(self, company_dir: Path, publish: Publish) -> None:
        self._publish = publish
        self.received = 0
        self.redelivered = 0

    def message(self, message: IncomingMessage) -> bool:
        """True if the message was logged now; False for a redelivery (already logged) or
        when the log could not be written. A transport that lets the client acknowledge a
        message (`message.ack`) is acknowledged only once the message is in the log, so a
        gateway killed before that gets it again."""
        event = self._publish(EventKind(message.event_kind), {
            "id": message.id, "chat": message.chat, "phone": message.phone, "pushName": message.push_name,
            "text": message.text, "timestamp": message.timestamp, "isGroup": message.is_group,
            **message.details()})
        if event is NOT_LOGGED:
            log.error("incoming message %s was not logged; it is not acknowledged, so it comes again", message.id)
            return False
        ack = getattr(message, "ack", None)
        if ack is not None:
            try:
                ack()
            except Exception:
                log.warning("acknowledging message %s failed; it may come again (and is deduplicated)",
                            message.id, exc_info=True)
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
