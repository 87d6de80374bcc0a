"""Message totals that never go down: what the old clients read as `metrics.messagesSent`
and `metrics.messagesReceived`, and the per-minute figures of the dashboard's chart.

A session's own counters start again when its actor restarts, and vanish with the
session when it is deleted, so a sum over the sessions can go down: the old system's
dashboards would read that as the old counter bug. These totals count the events
themselves (`message.sent`, `message`) from the event bus, globally and per company, and
are kept in `<data>/totals.json` (written at most once a second and at close), so they
survive restarts and deletions. A crash loses at most the last second of counting.

The last hour is kept per minute in memory only (the chart shows this process's view).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from switchboard.actors.kinds import EventKind

log = logging.getLogger(__name__)

MINUTES = 60
_FLUSH_EVERY = 1.0


class Totals:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self.sent = 0
        self.received = 0
        self._companies: dict[str, list[int]] = {}            # company -> [sent, received]
        # minute -> [sent, received], globally and per company (the last MINUTES minutes)
        self._minutes: collections.OrderedDict[int, list[int]] = collections.OrderedDict()
        self._company_minutes: dict[str, collections.OrderedDict[int, list[int]]] = {}
        self._dirty = False
        self._written_at = 0.0
        self._load()

    # ---- counting (on the event bus's dispatcher thread) ---------------------------------

    def on_event(self, event: Any) -> None:
        if event.kind == EventKind.SENT:
            column = 0
        elif event.kind == EventKind.MESSAGE:
            column = 1
        else:
            return
        minute = int(event.ts // 60)
        company = event.company_id or ""
        with self._lock:
            if column == 0:
                self.sent += 1
            else:
                self.received += 1
            self._companies.setdefault(company, [0, 0])[column] += 1
            _bump(self._minutes, minute, column)
            _bump(self._company_minutes.setdefault(company, collections.OrderedDict()), minute, column)
            self._dirty = True
        if self._clock() - self._written_at >= _FLUSH_EVERY:
            self.flush()

    # ---- reading ----------------------------------------------------------------------

    def totals(self, company_id: str | None = None) -> tuple[int, int]:
        """(sent, received): globally, or for one company."""
        with self._lock:
            if company_id is None:
                return self.sent, self.received
            sent, received = self._companies.get(company_id, (0, 0))
            return sent, received

    def last_hour(self, company_id: str | None = None) -> list[dict[str, Any]]:
        """One row per minute of the last hour, oldest first: {"minute": unix seconds, "sent", "received"}."""
        now = int(self._clock() // 60)
        with self._lock:
            source = self._minutes if company_id is None else self._company_minutes.get(company_id, {})
            rows = dict(source)
        return [{"minute": m * 60, "sent": rows.get(m, (0, 0))[0], "received": rows.get(m, (0, 0))[1]}
                for m in range(now - MINUTES + 1, now + 1)]

    # ---- storage ----------------------------------------------------------------------

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            data = {"messagesSent": self.sent, "messagesReceived": self.received,
                    "companies": {c: {"messagesSent": v[0], "messagesReceived": v[1]}
                                  for c, v in self._companies.items()}}
            self._dirty = False
            self._written_at = self._clock()
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError:
            log.warning("could not write %s", self.path, exc_info=True)

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            log.warning("ignoring unreadable %s", self.path)
            return
        if not isinstance(data, dict):
            return
        self.sent = _count(data.get("messagesSent"))
        self.received = _count(data.get("messagesReceived"))
        companies = data.get("companies")
        if isinstance(companies, dict):
            for company, counts in companies.items():
                if isinstance(counts, dict):
                    self._companies[str(company)] = [_count(counts.get("messagesSent")),
                                                     _count(counts.get("messagesReceived"))]


def _bump(minutes: collections.OrderedDict[int, list[int]], minute: int, column: int) -> None:
    row = minutes.get(minute)
    if row is None:
        row = minutes[minute] = [0, 0]
        while len(minutes) > MINUTES:
            minutes.popitem(last=False)
    row[column] += 1


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
