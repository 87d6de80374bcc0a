"""Webhook dead letters: deliveries that failed for good, kept for an operator to replay.

`<data>/webhooks-dead.jsonl` is a journal: `dead` adds one (the body as it was sent, the
destination, the event's seq, the last error and the attempts), `done` removes one that a
replay delivered, `failed` records a replay that failed again. Replays run on one thread
of their own, through the destination's current URL and secret, so they never hold up
the live deliveries (and, being late, they are out of order: the event id says where each
one belongs).
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.clock import iso
from switchboard.actors.journal import Journal
from switchboard.supervision.eventlog import Event

from . import SinkStopping

log = logging.getLogger(__name__)

REPLAY_RETRY = BackoffPolicy(base=0.5, factor=2.0, cap=5.0, jitter=0.2, max_attempts=3)
MAX_KEPT = 100_000


class DeadLetters:
    def __init__(self, path: Path, find_sink: Callable[[str], Any] = lambda name: None) -> None:
        self.path = path
        self.find_sink = find_sink
        self._journal = Journal(path)
        self._lock = threading.Lock()
        self._records: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        for record in self._journal.read():
            op, ident = record.get("op"), record.get("id")
            if op == "dead" and isinstance(ident, str):
                self._records[ident] = {k: v for k, v in record.items() if k not in ("op", "replaying")}
            elif op == "done":
                self._records.pop(ident, None)
            elif op == "failed" and ident in self._records:
                self._records[ident].update(error=record.get("error"), attempts=record.get("attempts"),
                                            replaying=False)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._replay_loop, name="switchboard-webhook-replay", daemon=True)
        self._thread.start()

    # ---- what the sinks and the API call ------------------------------------------------------

    def add(self, sink: str, event: Event, body: bytes, error: str, attempts: int) -> None:
        record = {"id": uuid.uuid4().hex, "sink": sink, "seq": event.seq, "companyId": event.company_id,
                  "event": event.kind, "body": body.decode(), "error": error, "attempts": attempts,
                  "at": iso(time.time(), ms=True)}
        with self._lock:
            self._records[record["id"]] = record
            while len(self._records) > MAX_KEPT:
                self._records.popitem(last=False)
            self._write({"op": "dead", **record})

    def list(self, company_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = [r for r in self._records.values() if company_id is None or r.get("companyId") == company_id]
        return [{k: v for k, v in r.items() if k != "body"} for r in rows[:limit]]

    def count(self) -> int:
        return len(self._records)

    def replay(self, ids: Iterable[str] | None = None, company_id: str | None = None) -> list[str]:
        """Queue dead letters for another delivery (all of them, or those ids, or that company's)."""
        wanted = set(ids) if ids is not None else None
        with self._lock:
            chosen = [r for r in self._records.values()
                      if (wanted is None or r["id"] in wanted)
                      and (company_id is None or r.get("companyId") == company_id) and not r.get("replaying")]
            for r in chosen:
                r["replaying"] = True
        for r in chosen:
            self._queue.put(r["id"])
        return [r["id"] for r in chosen]

    def close(self) -> None:
        self._stopped.set()
        self._queue.put(None)
        self._thread.join(5)
        self._journal.close()

    # ---- the replay thread -----------------------------------------------------------------------

    def _replay_loop(self) -> None:
        while True:
            ident = self._queue.get()
            if ident is None or self._stopped.is_set():
                return
            with self._lock:
                record = self._records.get(ident)
            if record is None:
                continue
            sink = self.find_sink(record["sink"])
            if sink is None:
                self._failed(record, f"its webhook ({record['sink']}) no longer exists", 0)
                continue
            event = Event(record["seq"], time.time(), record.get("companyId"), record["event"], {})
            try:
                error, attempts = sink.deliver(record["body"].encode(), event, REPLAY_RETRY)
            except SinkStopping:
                return
            except Exception as exc:
                error, attempts = repr(exc), 1
            if error is None:
                with self._lock:
                    self._records.pop(ident, None)
                    self._write({"op": "done", "id": ident})
                log.info("webhook dead letter %s (event %s) replayed", ident, record["seq"])
            else:
                self._failed(record, error, attempts)

    def _failed(self, record: dict[str, Any], error: str, attempts: int) -> None:
        with self._lock:
            record.update(error=error, attempts=record.get("attempts", 0) + attempts, replaying=False)
            self._write({"op": "failed", "id": record["id"], "error": error, "attempts": record["attempts"]})

    def _write(self, record: dict[str, Any]) -> None:
        try:
            self._journal.append(record)
            if self._journal.records_written > 1000 + 2 * len(self._records):
                self._journal.rewrite([{"op": "dead", **r} for r in self._records.values()])
        except OSError:
            log.exception("could not write the webhook dead letters (%s)", self.path)
