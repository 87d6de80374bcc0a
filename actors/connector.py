"""The company's one connection: opened only under ownership, closed without blocking,
and never two at once.

A Connection's close returns at once with a future that resolves when the link is gone
for good. Until then the company still has a live socket, so the Connector keeps
ownership, and a new connection waits for the old one's close (WhatsApp would answer a
second socket on the same credentials by dropping the first: the old failure). The
Connector is owned by its SessionActor and used only on the actor's thread; the close
futures tell the actor (`ConnClosed`), never touch it.
"""
from __future__ import annotations

import concurrent.futures
import enum
import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from . import messages as m
from .connection import Connection, Transport
from .ownership import Ownership

log = logging.getLogger(__name__)


class Opening(enum.Enum):
    OPENED = "opened"                    # connecting; events follow
    AFTER_CLOSE = "after_close"          # our previous link is still closing: open() again on ConnClosed
    OWNER_BUSY = "owner_busy"            # someone else owns the company
    FAILED = "failed"                    # the transport raised (the error is in `last_failure`)


class Connector:
    def __init__(self, company_id: str, company_dir: Path, transport: Transport, owner: Ownership,
                 tell: Callable[[Any], None]) -> None:
        self._company_id = company_id
        self._dir = company_dir
        self._transport = transport
        self.owner = owner
        self._tell = tell
        self.conn: Connection | None = None
        self.generation = 0
        self._closing: dict[int, Future] = {}     # generation -> close future, until ConnClosed
        self.open_after_close = False               # open() answered AFTER_CLOSE and still stands
        self.opened_at = 0.0                        # monotonic time of the last open (or its deferral)
        self.last_failure = ""

    def is_current(self, generation: int) -> bool:
        return self.conn is not None and generation == self.generation

    def alive(self) -> bool:
        return self.conn is not None and self.conn.alive()

    def open(self) -> Opening:
        """Close what is there, then connect if we own the company and nothing of ours is closing."""
        self.close()
        self.opened_at = time.monotonic()
        self.open_after_close = bool(self._closing)
        if self.open_after_close:
            return Opening.AFTER_CLOSE
        if not self.owner.acquire(lambda reason: self._tell(m.OwnershipLost(reason))):
            return Opening.OWNER_BUSY
        self.generation += 1
        gen = self.generation
        try:
            self.conn = self._transport.connect(self._company_id, self._dir,
                                                lambda event: self._tell(m.ConnEvent(gen, event)))
            self.conn.open()
        except Exception as exc:
            log.exception("[%s] opening the connection failed", self._company_id)
            self.close()
            self.last_failure = f"could not open the connection: {exc}"
            return Opening.FAILED
        return Opening.OPENED

    def close(self) -> None:
        """Start closing the live connection, if any; returns at once."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        gen = self.generation
        try:
            closed = conn.close()
        except Exception:
            log.exception("[%s] closing the connection failed", self._company_id)
            return
        self._closing[gen] = closed
        closed.add_done_callback(lambda _f: self._tell(m.ConnClosed(gen)))

    def closed(self, generation: int) -> bool:
        """A ConnClosed arrived; True when nothing of ours is left closing."""
        self._closing.pop(generation, None)
        return not self._closing

    def closing(self) -> list[Future]:
        """The close futures of our links still going away."""
        return list(self._closing.values())

    def release_if_idle(self) -> None:
        """Give up ownership, unless a link of ours still lives (then: on its ConnClosed)
        or is about to (an open waits for that close)."""
        if self.conn is None and not self._closing and not self.open_after_close:
            self.owner.release()

    def shutdown(self, wait: float = 0.0) -> None:
        """The actor is ending: close, wait up to `wait` seconds for every link to be gone
        (a stopped actor's files may be deleted right after), and release ownership once
        they are (on the close futures' threads if they outlast the wait)."""
        self.close()
        pending = list(self._closing.values())
        self._closing.clear()
        if pending and wait > 0:
            concurrent.futures.wait(pending, timeout=wait)
        _when_all_done(pending, self.owner.release)


def _when_all_done(futures: list[Future], then: Callable[[], None]) -> None:
    """Call `then()` once every future is done (at once if there are none)."""
    if not futures:
        then()
        return
    remaining = [len(futures)]
    lock = threading.Lock()             # the futures may resolve on different threads

    def one_done(_f: Future) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            then()
    for future in futures:
        future.add_done_callback(one_done)
