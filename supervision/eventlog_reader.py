"""Reading the durable event log (supervision/eventlog.py) forward from a position."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .eventlog import Event, decode

if TYPE_CHECKING:
    from .eventlog import EventLog

log = logging.getLogger(__name__)


class LogReader:
    """Reads the log forward from a position: whole lines only (a line being written is
    read on the next call), every seq once, in order. `reset` says that events after
    `after` were already deleted by retention (or never existed in this log): the reader
    went on from the oldest event kept."""

    def __init__(self, event_log: EventLog, after: int) -> None:
        self._log = event_log
        self.position = after          # the last seq handed out
        self.reset = False
        self.reset_from = after
        self._path: Path | None = None
        self._offset = 0
        self._warned: set[tuple[str, int]] = set()
        first, head = event_log.first, event_log.head
        if after < first - 1 or after > head:
            self.reset = True
            self.position = first - 1

    def read(self, limit: int = 500) -> list[Event]:
        out: list[Event] = []
        while len(out) < limit:
            if self._path is None and not self._locate():
                return out
            try:
                with open(self._path, "rb") as f:
                    f.seek(self._offset)
                    for line in f:
                        if not line.endswith(b"\n"):
                            break
                        self._offset += len(line)
                        event = decode(line)
                        if event is None:
                            key = (str(self._path), self._offset)
                            if key not in self._warned:
                                self._warned.add(key)
                                log.warning("event log: %s has an unreadable line ending at byte %d; skipped",
                                            self._path, self._offset)
                            continue
                        if event.seq <= self.position:
                            continue
                        self.position = event.seq
                        out.append(event)
                        if len(out) >= limit:
                            return out
            except FileNotFoundError:      # deleted by retention under us
                self._path = None
                if self.position < self._log.first - 1:
                    self.reset, self.reset_from = True, self.position
                    self.position = self._log.first - 1
                continue
            except OSError as exc:
                log.warning("event log: cannot read %s (%s); skipping it", self._path, exc)
                if not self._next_segment():
                    return out
                continue
            if not self._next_segment():
                return out
        return out

    def _locate(self) -> bool:
        """The segment holding position + 1."""
        segments = self._log.segments()
        candidates = [(first, path) for first, path in segments if first <= self.position + 1]
        chosen = candidates[-1] if candidates else (segments[0] if segments else None)
        if chosen is None:
            return False
        self._path, self._offset = chosen[1], 0
        return True

    def _next_segment(self) -> bool:
        """Move to the segment after the current one, if one exists (else stay, at its end)."""
        later = [(first, path) for first, path in self._log.segments() if self._path is not None
                 and path.name > self._path.name]
        if not later:
            return False
        self._path, self._offset = later[0][1], 0
        return True


def read_all(event_log: EventLog, after: int = 0) -> Iterable[Event]:
    """Every event after `after`, oldest first."""
    reader = event_log.reader(after)
    while True:
        batch = reader.read(1000)
        if not batch:
            return
        yield from batch
