"""Sinks: where the events of the durable event log go (webhooks, the Redis Stream, Python callbacks).

Every sink reads the log through its own durable cursor (`<data>/events/cursors/<name>.json`)
on its own thread (`SinkRunner`): a slow or failing sink falls behind on its own and never
holds up another sink, nor the actors (they only append to the log). After a crash a sink
resumes after its cursor: delivery is at-least-once, and the cursor is saved at least every
`save_every` events or `save_interval` seconds, so a crash repeats at most that many.
A sink that starts for the first time begins at the log's head (new events only).

A sink is any object with:
    name: str                      its cursor's name: letters, digits, `.`, `_`, `-`
    __call__(event) -> None        deliver one event; raise to have it retried (with backoff)
    close() -> None                release what it holds (after its thread stopped)
and optionally `save_every` (an int: save the cursor after that many events),
`deliver_batch(events)` (all or nothing), `interrupt()` (end a wait inside a
call at once: raise SinkStopping from it) and `attach(delivery)`.
`Switchboard(sinks=[factory])` takes factories: `factory(data_dir) -> Sink`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from switchboard.actors.backoff import BackoffPolicy
from switchboard.supervision.eventlog import Event, EventLog

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,120}$")
SINK_RETRY = BackoffPolicy(base=0.5, factor=2.0, cap=30.0, jitter=0.2, max_attempts=1 << 30)


class Sink(Protocol):
    name: str

    def __call__(self, event: Event) -> None:
        """Deliver one event (on the sink's own thread); raise to have it retried."""
        ...

    def close(self) -> None:
        """Stop; what is not delivered yet stays after the cursor, for the next start."""
        ...


SinkFactory = Callable[[Path], Sink]      # given the gateway's data directory


class SinkStopping(Exception):
    """Raised by a sink that was closed while it waited; the event is not delivered."""


class Cursor:
    """The last seq a sink has delivered, in a small file replaced atomically."""

    def __init__(self, path: Path, default: int) -> None:
        self.path = path
        self.seq = default
        self.saved = None
        self._tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            pass                 # save() says why
        try:
            self.seq = self.saved = int(json.loads(path.read_text(encoding="utf-8"))["seq"])
        except FileNotFoundError:
            self.save()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("sink cursor %s cannot be read (%s); the sink starts at event %d", path, exc, default)
            self.save()

    def save(self) -> None:
        if self.saved == self.seq:
            return
        try:          # write a new file and rename it over the old: whole or not at all
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b'{"seq": %d}' % self.seq)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
            self.saved = self.seq
        except OSError:
            log.exception("could not save sink cursor %s; a restart repeats more events", self.path)

    def delete(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def cursor_path(event_log: EventLog, name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"sink name {name!r}: 1-120 letters, digits, '.', '_' or '-'")
    return event_log.directory / "cursors" / f"{name}.json"


class SinkRunner:
    """One sink's thread: read the log after the cursor, deliver, move the cursor."""

    def __init__(self, event_log: EventLog, sink: Sink, *, batch: int = 200, save_every: int = 100,
                 save_interval: float = 0.5, retry: BackoffPolicy = SINK_RETRY) -> None:
        self.sink = sink
        self.name = sink.name
        self._log = event_log
        self.cursor = Cursor(cursor_path(event_log, self.name), default=event_log.head)
        save_every = getattr(sink, "save_every", save_every)       # a sink may want fewer repeats after a crash
        self._batch, self._save_every, self._save_interval, self._retry = batch, save_every, save_interval, retry
        self._stop = threading.Event()
        self.failures = 0
        self.skipped = 0          # events retention deleted before this sink read them
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name=f"switchboard-sink-{self.name}", daemon=True)
        self._thread.start()

    @property
    def lag(self) -> int:
        return max(0, self._log.head - self.cursor.seq)

    def close(self, timeout: float = 5.0, *, save: bool = True) -> None:
        """Stop the thread (a sink's `interrupt()` ends a wait at once), then close the sink.
        `save=False`: the cursor file belongs to someone else now (a replacement, or deleted)."""
        self.stop_soon()
        self._thread.join(timeout)
        try:
            self.sink.close()
        except Exception:
            log.exception("sink %s: close failed", self.name)
        if save:
            self.cursor.save()

    def abandon(self) -> None:
        """Stop without waiting: the thread closes the sink itself once its call returns, and
        never writes the cursor again (it may belong to a new sink of the same name)."""
        self._abandoned = True
        self.stop_soon()

    def stop_soon(self) -> None:
        """Ask the thread to stop (without waiting)."""
        self._stop.set()
        interrupt = getattr(self.sink, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._abandoned:
                try:
                    self.sink.close()
                except Exception:
                    log.exception("sink %s: close failed", self.name)

    def _loop(self) -> None:
        reader = self._log.reader(self.cursor.seq)
        self._unsaved, self._saved_at = 0, time.monotonic()
        while not self._stop.is_set():
            if reader.reset:
                self._report_gap(reader)
            batch = reader.read(self._batch)
            if not batch:
                self._save()
                self._log.wait(reader.position, 0.5)
                continue
            if not self._deliver(batch):
                return

    def _save(self) -> None:
        if self._abandoned:
            return
        self.cursor.save()
        self._unsaved, self._saved_at = 0, time.monotonic()

    def _advance(self, seq: int, count: int) -> None:
        self.cursor.seq = seq
        self._unsaved += count
        if self._unsaved >= self._save_every or time.monotonic() - self._saved_at >= self._save_interval:
            self._save()

    def _report_gap(self, reader: Any) -> None:
        missed = max(0, reader.position - reader.reset_from)
        if missed:
            self.skipped += missed
            log.error("sink %s: events %d-%d were deleted by the log's retention before it read them",
                      self.name, reader.reset_from + 1, reader.position)
        reader.reset = False
        self.cursor.seq = max(self.cursor.seq, reader.position)      # what is gone counts as passed

    def _deliver(self, batch: list[Event]) -> bool:
        """Deliver every event of the batch, retrying each until it goes; False when stopped."""
        whole = getattr(self.sink, "deliver_batch", None)
        units = [batch] if whole is not None else [[e] for e in batch]
        for unit in units:
            attempt = 0
            while True:
                if self._stop.is_set():
                    return False
                try:
                    whole(unit) if whole is not None else self.sink(unit[0])
                    break
                except SinkStopping:
                    return False
                except Exception as exc:
                    if self._stop.is_set():
                        return False
                    attempt += 1
                    self.failures += 1
                    if attempt == 1 or attempt % 20 == 0:
                        log.warning("sink %s: delivering event %d failed (attempt %d, retrying): %r",
                                    self.name, unit[0].seq, attempt, exc)
                    if self._stop.wait(self._retry.delay(attempt - 1)):
                        return False
            self._advance(unit[-1].seq, len(unit))
        return True
