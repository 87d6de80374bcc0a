"""Inbound traffic of one company: incoming messages, de-duplicated by id across
restarts, and receipts, each published as one event.

WhatsApp redelivers a message until a client acknowledges it, and a closing connection
may still hand over what it had received: the ids seen are kept (`inbound-seen.jsonl`)
so that each message is published once.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Callable

from .connection import IncomingMessage, Receipt
from .journal import Journal
from .kinds import EventKind


class SeenIds:
    def __init__(self, path: Path, keep: int = 5000) -> None:
        self._journal = Journal(path)
        self._keep = keep
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        for record in self._journal.read():
            self._remember(str(record.get("id")))

    def add(self, message_id: str) -> bool:
        """True the first time `message_id` is seen; False for a redelivery."""
        if message_id in self._ids:
            return False
        self._remember(message_id)
        try:
            self._journal.append({"id": message_id})
            if self._journal.records_written > 2 * self._keep:
                self._journal.rewrite([{"id": i} for i in self._ids])
        except OSError:
            pass   # still de-duplicated in memory; at worst one duplicate after a restart
        return True

    def close(self) -> None:
        self._journal.close()

    def _remember(self, message_id: str) -> None:
        self._ids[message_id] = None
        while len(self._ids) > self._keep:
            self._ids.popitem(last=False)


class Inbound:
    def __init__(self, company_dir: Path, publish: Callable[[EventKind, dict[str, Any]], None]) -> None:
        self._seen = SeenIds(company_dir / "inbound-seen.jsonl")
        self._publish = publish
        self.received = 0

    def message(self, message: IncomingMessage) -> None:
        if not self._seen.add(message.id):
            return
        self.received += 1
        self._publish(EventKind(message.event_kind), {
            "id": message.id, "chat": message.chat, "phone": message.phone, "pushName": message.push_name,
            "text": message.text, "timestamp": message.timestamp, "isGroup": message.is_group,
            **message.details()})

    def receipt(self, receipt: Receipt) -> None:
        self._publish(EventKind.RECEIPT, {"messageIds": list(receipt.message_ids), "chat": receipt.chat,
                                          "receipt": receipt.kind})

    def close(self) -> None:
        self._seen.close()
