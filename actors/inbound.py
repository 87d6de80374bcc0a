"""Inbound de-duplication: the ids of recent incoming messages, kept across restarts."""
from __future__ import annotations

import collections
from pathlib import Path

from .journal import Journal


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
