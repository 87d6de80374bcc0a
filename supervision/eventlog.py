"""The durable event log: every event of the gateway, appended once, numbered for good.

One log per gateway data directory (`<data>/events/`), not one per company, because:
* the event stream of every company (`/api/whatsapp/events`) needs one total order, and
  its ids must be log positions: one sequence gives that, per-company logs would need
  composite ids that `Last-Event-ID` clients cannot compare;
* a sink (webhook, Redis Stream, callback) keeps one cursor, not one per company, so a
  gateway with thousands of companies keeps a handful of cursor files;
* appends of every company share one file and one fsync (group commit);
* per-company order still holds: one company's events are appended by its own actor, in
  the order it publishes them.
A log is written by one gateway process (the data directory's owner); a distributed
deployment has one log per instance, and its Redis Stream entries say which (`seq`).

Layout: segment files `log-<first seq>.jsonl` of JSON lines
`{"seq": N, "event": kind, "ts": unix, "companyId": id, "data": {...}}`. The sequence
number keeps growing across restarts: it continues after the last whole line of the
newest segment (or after the segment's name, when the segment cannot be read).

The append *is* the dedupe record: a `message` event carries the WhatsApp message id,
and an id counts as seen only once its line is written (under the same lock that checks
it), so there is no window in which an id is "seen" but its event exists only in memory.
On start the seen ids are rebuilt from the retained segments plus `seen.json`, which keeps
the ids of segments that retention deleted (compaction: the last `seen_per_company` ids of
each company outlive their segment).

Durability (`fsync`): every append is a whole line written with one `write()` into the
kernel before `append` returns, so a SIGKILLed gateway loses nothing it appended.
* `interval` (default): a background thread fsyncs every `fsync_interval` s (0.2):
  a power loss or kernel crash loses at most that much;
* `always`: `append` returns after its line is fsynced (concurrent appends share one
  fsync: group commit);
* `never`: the kernel writes back when it likes.
`scripts/bench_delivery` prints the append rate of each policy.

Retention: a segment is closed after `segment_events` events (or `segment_bytes`); the
oldest closed segments are deleted while the log is over `max_bytes`. Damage never stops
the gateway: a torn last line (a crash mid-write, a full disk) is cut off with a warning
naming the file and the offset; an unreadable line elsewhere is skipped (warned once,
naming the file and line); an unreadable segment is skipped, and if it was the newest a
new segment starts after every sequence number it could have held.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from switchboard.actors.clock import iso
from switchboard.actors.connection import INCOMING_KINDS

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
_SEGMENT = re.compile(r"^log-(\d{1,19})\.jsonl$")
_MESSAGE_MARK = b'"event":"message'          # also message.edit, .reaction, ... (decoded, then checked)
# The events whose `id` is a WhatsApp message id that WhatsApp may deliver again: deduplicated.
# (message.sent, .status, .unconfirmed carry the outbox's id and may repeat it: never.)
INBOUND_KINDS = frozenset({"message", *INCOMING_KINDS.values()})
_JSON_STRING = rb'"(?:[^"\\]|\\.)*"'
_MESSAGE_LINE = re.compile(rb'^\{"seq":(\d+),"event":"message","ts":[0-9.e+-]+,"companyId":(null|' + _JSON_STRING
                           + rb'),"data":\{"id":(' + _JSON_STRING + rb')[,}].*\}\n$', re.S)


@dataclasses.dataclass(frozen=True)
class Event:
    seq: int
    ts: float
    company_id: str | None
    kind: str
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": iso(self.ts, ms=True), "companyId": self.company_id, "event": self.kind,
                **self.data}


@dataclasses.dataclass(frozen=True)
class LogSettings:
    fsync: str = "interval"
    fsync_interval: float = 0.2
    segment_events: int = 50_000
    segment_bytes: int = 32 << 20
    max_bytes: int = 64 << 20           # about 300k events; a start reads them all (~1 s per 64 MiB)
    seen_per_company: int = 5000        # message ids per company remembered for dedupe

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"event log fsync must be one of {', '.join(FSYNC_POLICIES)}, not {self.fsync!r}")
        if min(self.segment_events, self.segment_bytes, self.max_bytes, self.seen_per_company) <= 0:
            raise ValueError("event log sizes must be positive")


def encode(event: Event) -> bytes:
    return (json.dumps({"seq": event.seq, "event": event.kind, "ts": event.ts, "companyId": event.company_id,
                        "data": event.data}, separators=(",", ":"), ensure_ascii=False, default=str)
            + "\n").encode()


def decode(line: bytes) -> Event | None:
    try:
        r = json.loads(line)
        return Event(int(r["seq"]), float(r["ts"]), r.get("companyId"), str(r["event"]), dict(r.get("data") or {}))
    except (ValueError, KeyError, TypeError):
        return None


class EventLog:
    def __init__(self, directory: Path, settings: LogSettings | None = None) -> None:
        self.directory = Path(directory)
        self.settings = settings or LogSettings()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()               # appends, rolls, retention
        self._changed = threading.Condition()       # readers wait here for new events
        self._seen: dict[str | None, collections.OrderedDict[str, None]] = {}
        self._file = None
        self._segment_events = 0
        self._segment_bytes = 0
        self._dirty = False
        self._sync_lock = threading.Lock()
        self._written_at = 0                        # a counter of writes; fsync covers up to _synced_at
        self._synced_at = 0
        self._closed = False
        self.warnings: list[str] = []               # what was repaired or skipped on open (also logged)
        self.head = self._recover()
        self._flusher = None
        self._stop_flusher = threading.Event()
        if self.settings.fsync == "interval":
            self._flusher = threading.Thread(target=self._flush_loop, name="switchboard-eventlog-fsync", daemon=True)
            self._flusher.start()

    # ---- writing ------------------------------------------------------------------------

    def append(self, company_id: str | None, kind: str, data: dict[str, Any]) -> Event | None:
        """Append one event; its seq is its position. An inbound event (INBOUND_KINDS) whose
        id this company has already logged is not appended: None. OSError (disk full) leaves the
        log as it was and the id unseen."""
        message_id = data.get("id") if kind in INBOUND_KINDS else None
        message_id = None if message_id is None else str(message_id)
        with self._lock:
            if self._closed:
                raise OSError(errno.EBADF, "the event log is closed")
            seen = self._seen.get(company_id) if message_id is not None else None
            if seen is not None and message_id in seen:
                return None
            event = Event(self.head + 1, time.time(), company_id, str(kind), data)
            line = encode(event)
            self._write(line)
            self.head = event.seq
            if message_id is not None:
                self._remember(company_id, message_id)
            if self._segment_events >= self.settings.segment_events or \
                    self._segment_bytes >= self.settings.segment_bytes:
                self._roll()
            written = self._written_at
        if self.settings.fsync == "always":
            self._sync(written)
        with self._changed:
            self._changed.notify_all()
        return event

    def remember(self, company_id: str | None, message_ids: Iterable[str]) -> None:
        """Count ids as seen without an event (migrating a dedupe file of an older version)."""
        with self._lock:
            for message_id in message_ids:
                self._remember(company_id, message_id)

    def seen(self, company_id: str | None, message_id: str) -> bool:
        with self._lock:
            return message_id in self._seen.get(company_id, ())

    def _write(self, line: bytes) -> None:
        f = self._file
        end = f.seek(0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                n = f.write(view)
                if not n:
                    raise OSError(errno.ENOSPC, "short write")
                view = view[n:]
        except OSError:
            try:
                f.truncate(end)
            except OSError:
                pass
            log.error("event log %s: append failed; nothing was written", self._path, exc_info=True)
            raise
        self._segment_events += 1
        self._segment_bytes += len(line)
        self._written_at += 1
        self._dirty = True

    def _sync(self, upto: int) -> None:
        """Group commit: one fsync covers every line written before it started."""
        with self._sync_lock:
            if self._synced_at >= upto:
                return
            with self._lock:
                f, target = self._file, self._written_at
            try:
                if f is not None:
                    os.fsync(f.fileno())
            except (OSError, ValueError):
                log.exception("event log: fsync failed")
                return
            self._synced_at = target

    def _flush_loop(self) -> None:
        while not self._stop_flusher.wait(self.settings.fsync_interval):
            if self._dirty:
                self._dirty = False
                self._sync(self._written_at)

    def _roll(self) -> None:
        """Start a new segment (under the lock), then apply retention."""
        self._close_file(sync=True)
        self._open_segment(self.head + 1)
        self._retain()

    def _retain(self) -> None:
        segments = self.segments()
        total = sum(_size(p) for _, p in segments)
        doomed = []
        while total > self.settings.max_bytes and len(segments) - len(doomed) > 1:
            first, path = segments[len(doomed)]
            doomed.append(path)
            total -= _size(path)
        if not doomed:
            return
        self._save_seen()       # the ids of the doomed segments outlive them
        for path in doomed:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("event log: could not delete %s: %s", path, exc)
        log.info("event log: retention deleted %d segment(s); the oldest event kept is %d", len(doomed), self.first)

    def _save_seen(self) -> None:
        snapshot = {"head": self.head, "companies": {("" if k is None else k): list(v) for k, v in self._seen.items()}}
        tmp = self.directory / "seen.json.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(snapshot, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / "seen.json")
        except OSError:
            log.exception("event log: could not save seen.json; dedupe after a restart covers the kept segments only")

    # ---- reading ------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            m = _SEGMENT.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
        return sorted(found)

    @property
    def first(self) -> int:
        """The oldest seq still kept (head + 1 when the log is empty)."""
        segments = self.segments()
        return segments[0][0] if segments else self.head + 1

    def reader(self, after: int) -> "LogReader":
        return LogReader(self, after)

    def wait(self, after: int, timeout: float) -> bool:
        """Block until an event after `after` exists (True) or `timeout` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: self.head > after or self._closed, timeout) and self.head > after

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_flusher.set()
        if self._flusher is not None:
            self._flusher.join(5)
        with self._lock:
            self._close_file(sync=self.settings.fsync != "never")
        with self._changed:
            self._changed.notify_all()

    # ---- opening: find the head, repair the tail, rebuild the seen ids -------------------------------

    def _recover(self) -> int:
        self._load_seen()
        segments = self.segments()
        head = self._snapshot_head
        for first, path in segments:
            last = self._scan(path, first, repair=(path == segments[-1][1]))
            head = max(head, last if last is not None else first - 1 + self.settings.segment_events)
        if segments:
            first, path = segments[-1]
            last = self._scan_cached
            if last is None:
                # Unreadable: never append to it; a new segment starts past anything it held.
                self._warn(f"event log: {path} cannot be read; it is skipped and a new segment starts at "
                           f"{head + 1}")
                self._open_segment(head + 1)
            else:
                self._open_existing(path)
        else:
            self._open_segment(1)
        return head

    def _scan(self, path: Path, first: int, *, repair: bool) -> int | None:
        """The last seq of a segment, with its message ids remembered; None if unreadable.
        `repair` (the newest segment): a torn last line is cut off."""
        self._scan_cached = None
        last, good_end, lines, bad = None, 0, 0, []
        try:
            with open(path, "rb") as f:
                tail = None
                for line in f:
                    if not line.endswith(b"\n"):
                        break                                 # torn tail
                    lines += 1
                    good_end += len(line)
                    if _MESSAGE_MARK not in line:
                        tail = line                           # decoded only if it is the last one
                        continue
                    tail = None
                    fast = _MESSAGE_LINE.match(line)       # our own encoder's shape: no full decode
                    if fast is not None:
                        last = int(fast.group(1))
                        self._remember(_string(fast.group(2)), str(_string(fast.group(3))))
                        continue
                    event = decode(line)
                    if event is None:
                        bad.append(lines)
                        continue
                    last = event.seq
                    if event.kind in INBOUND_KINDS and event.data.get("id") is not None:
                        self._remember(event.company_id, str(event.data["id"]))
                if tail is not None:
                    event = decode(tail)
                    if event is None:
                        bad.append(lines)
                    else:
                        last = event.seq
                size = path.stat().st_size
        except OSError as exc:
            self._warn(f"event log: cannot read {path}: {exc}; it is skipped")
            return None
        for number in bad:
            self._warn(f"event log: {path} line {number} is not a valid event; it is skipped")
        if repair and good_end < size:
            self._warn(f"event log: {path} ends with a torn line at byte {good_end} ({size - good_end} bytes, "
                       "from a crash or a full disk); it was cut off")
            try:
                os.truncate(path, good_end)
            except OSError as exc:
                self._warn(f"event log: cannot repair {path}: {exc}; a new segment is started")
                return None
        self._scan_lines = lines
        self._scan_cached = last if last is not None else first - 1
        return self._scan_cached

    def _load_seen(self) -> None:
        path = self.directory / "seen.json"
        self._snapshot_head = 0
        try:
            snapshot = json.loads(path.read_text(encoding="utf-8"))
            self._snapshot_head = int(snapshot.get("head", 0))
            for company, ids in snapshot.get("companies", {}).items():
                for message_id in ids:
                    self._remember(company or None, str(message_id))
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as exc:
            self._warn(f"event log: {path} cannot be read ({exc}); dedupe covers the kept segments only")

    def _remember(self, company_id: str | None, message_id: str) -> None:
        ids = self._seen.get(company_id)
        if ids is None:
            ids = self._seen[company_id] = collections.OrderedDict()
        ids[message_id] = None
        ids.move_to_end(message_id)
        if len(ids) > self.settings.seen_per_company:
            ids.popitem(last=False)

    def _open_segment(self, first: int) -> None:
        self._path = self.directory / f"log-{first:012d}.jsonl"
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)
        self._segment_events = 0
        self._segment_bytes = 0

    def _open_existing(self, path: Path) -> None:
        self._path = path
        fd = os.open(path, os.O_WRONLY | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)
        self._segment_bytes = _size(path)
        self._segment_events = self._scan_lines

    def _close_file(self, *, sync: bool) -> None:
        if self._file is None:
            return
        try:
            if sync:
                os.fsync(self._file.fileno())
            self._file.close()
        except OSError:
            log.exception("event log: closing %s failed", self._path)
        self._file = None

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)


def _string(raw: bytes) -> str | None:
    """A JSON string (or null) the encoder wrote; json.loads only when it has escapes."""
    if raw == b"null":
        return None
    return json.loads(raw) if b"\\" in raw else raw[1:-1].decode()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# The reading side, in its own module; imported last (it uses Event and decode from here).
from .eventlog_reader import LogReader, read_all  # noqa: E402

__all__ = ["Event", "EventLog", "LogReader", "LogSettings", "read_all"]
