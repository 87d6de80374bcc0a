"""The simulated WhatsApp's record of live links: which links are live per company now,
the most ever live at once per company and per account (phone), and a bounded history
of every change. It is how a test proves there were never two live connections for one
account: WhatsApp would replace one of them (440), the ledger keeps the moment on record.

Not thread-safe on its own: the network calls it with its lock held.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Generic, Iterable, TypeVar

HISTORY = 2000          # changes kept for GET /api/simulator/connections

Link = TypeVar("Link")


class Ledger(Generic[Link]):
    def __init__(self) -> None:
        self._live: dict[str, set[Link]] = {}
        self._max_seen: dict[str, int] = {}
        self._account_max: dict[str, int] = {}
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)

    def mark(self, company_id: str, link: Link, phone: str | None, outside: int = 0) -> None:
        live = self._live.setdefault(company_id, set())
        live.add(link)
        self._max_seen[company_id] = max(self._max_seen.get(company_id, 0), len(live))
        self.record(company_id, phone, outside)

    def unmark(self, company_id: str, link: Link, phone: str | None, outside: int = 0) -> None:
        live = self._live.get(company_id, set())
        if link in live:
            live.discard(link)
            self.record(company_id, phone, outside)

    def record(self, company_id: str, phone: str | None, outside: int = 0) -> None:
        """One line of history; `outside`: clients on the same credentials that are not
        ours (the replace fault), which count for the account."""
        live = self.live_count(company_id)
        entry: dict[str, Any] = {"at": time.time(), "companyId": company_id, "live": live}
        if phone:
            entry["phone"] = phone
            self._account_max[phone] = max(self._account_max.get(phone, 0), live + outside)
        self._history.append(entry)

    def live_count(self, company_id: str) -> int:
        return len(self._live.get(company_id, ()))

    def any_live(self, company_id: str) -> Link | None:
        return next(iter(self._live.get(company_id, ())), None)

    def max_seen(self, company_id: str) -> int:
        return self._max_seen.get(company_id, 0)

    def account_max(self, phone: str) -> int:
        return self._account_max.get(phone, 0)

    def companies(self) -> Iterable[str]:
        return set(self._live) | set(self._max_seen)

    def history(self, last: int) -> list[dict[str, Any]]:
        return list(self._history)[-last:] if last > 0 else []
