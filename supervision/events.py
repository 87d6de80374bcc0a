"""The event bus (every session and supervision event: into the durable event log, then to the
live subscribers) and the supervisor log."""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import itertools
import json
import math
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from switchboard.actors.inbound import NOT_LOGGED
from switchboard.actors.kinds import LOGGED        # what the supervisor log keeps

from .eventlog import Event, EventLog

__all__ = ["Event", "EventBus", "SupervisorLog", "follow_log", "parse_since", "read_log"]

log = logging.getLogger(__name__)


Subscriber = Callable[[Event], None]


class EventBus:
    """publish() appends the event to the durable log (when there is one) on the caller's
    thread, which gives it its seq, and returns it; then one dispatcher thread calls the
    live subscribers (status waiters, counters, `on_event` callbacks), so a slow callback
    delays other callbacks, never a session. Durable delivery (webhooks, Redis, SSE) reads
    the log through cursors instead (supervision/delivery.py)."""

    def __init__(self, log_path: Path | None = None, recent: int = 1000, event_log: EventLog | None = None) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        self.event_log = event_log
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._recent: collections.deque[Event] = collections.deque(maxlen=recent)
        self._log = SupervisorLog(log_path) if log_path else None
        self._thread = threading.Thread(target=self._run, name="switchboard-events", daemon=True)
        self._thread.start()

    def publish(self, company_id: str | None, kind: str, data: dict[str, Any]) -> Any:
        """The event as logged; None for a message id already logged (a redelivery);
        NOT_LOGGED when the log could not be written (then it is logged as an error)."""
        kind = str(kind)
        if self.event_log is not None:
            try:
                event = self.event_log.append(company_id, kind, data)
            except OSError:
                log.error("event %s of %s was not logged (see the event log error)", kind, company_id)
                return NOT_LOGGED
            if event is None:
                return None
        else:
            with self._seq_lock:
                event = Event(next(self._seq), time.time(), company_id, kind, data)
        self._queue.put(event)
        return event

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = [s for s in self._subscribers if s is not callback]
        return unsubscribe

    def recent(self, after_seq: int = 0) -> list[Event]:
        return [e for e in list(self._recent) if e.seq > after_seq]

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far has been dispatched."""
        done = threading.Event()
        self._queue.put(_Marker(done))   # type: ignore[arg-type]
        return done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        if self._log:
            self._log.close()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            if isinstance(event, _Marker):
                event.done.set()
                continue
            self._recent.append(event)
            if self._log and event.kind in LOGGED:
                self._log.append(event)
            for subscriber in self._subscribers:
                try:
                    subscriber(event)
                except Exception:
                    log.exception("event subscriber %r failed", subscriber)


@dataclasses.dataclass(frozen=True)
class _Marker:
    done: threading.Event


LOG_MAX_BYTES = int(os.environ.get("SWITCHBOARD_LOG_MAX_BYTES") or 10 * 1024 * 1024)
LOG_BACKUPS = 3


class SupervisorLog:
    """One JSON line per supervision and lifecycle event in `<data>/supervisor.log`.

    Rotates by size: past `max_bytes` the file becomes supervisor.log.1 (.1 -> .2 ...,
    `LOG_BACKUPS` kept) and a new one is started; `switchboard logs -f` follows across it."""

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes or LOG_MAX_BYTES
        path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        self._size = os.fstat(fd).st_size

    def append(self, event: Event) -> None:
        try:
            line = json.dumps(event.as_dict(), ensure_ascii=False, default=str) + "\n"
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self._size += len(line.encode("utf-8"))
        except OSError:
            log.exception("could not write the supervisor log")

    def _rotate(self) -> None:
        self._file.close()
        for n in range(LOG_BACKUPS - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


def read_log(path: Path, *, company: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """Records of the supervisor log, oldest first, filtered by company and time."""
    records = list(_filtered(_lines(path), company, since))
    return records[-limit:] if limit else records


def follow_log(path: Path, *, company: str | None = None, since: float | None = None,
               stop: threading.Event | None = None, poll: float = 0.25) -> Iterator[dict[str, Any]]:
    """Like `tail -f`: yields records as they are appended, until `stop` is set."""
    stop = stop or threading.Event()
    position = 0
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                f.seek(position)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        complete, _, _ = chunk.rpartition(b"\n")
        if complete:
            position += len(complete) + 1
            yield from _filtered(_parse(complete.split(b"\n")), company, since)
        stop.wait(poll)


def parse_since(value: str | None) -> float | None:
    """`--since`: an ISO time, Unix seconds, or a duration back from now (30s, 10m, 2h, 1d)."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"cannot read time {value!r}: Unix seconds are a number from 0 up")
        return number
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read time {value!r}: use ISO 8601, Unix seconds or 30s/10m/2h/1d") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            yield from _parse(f)
    except FileNotFoundError:
        return


def _parse(lines) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def _filtered(records: Iterator[dict[str, Any]], company: str | None, since: float | None):
    for record in records:
        if company and record.get("companyId") != company:
            continue
        if since is not None:
            try:
                if dt.datetime.fromisoformat(str(record.get("ts")).replace("Z", "+00:00")).timestamp() < since:
                    continue
            except ValueError:
                continue
        yield record
