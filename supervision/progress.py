"""Progress of restoring the sessions a gateway finds at start, on the console and in the log.

A restart with many companies takes a while (each neonize child is a process, started
0.25 s apart): the operator sees, as it goes, how many were restored, are connected, wait
for a QR scan, or failed, e.g.

    switchboard: restoring 50 sessions: 12 connected, 3 waiting for QR, 1 failed, 34 pending

and the same figures go to the supervisor log as `gateway` events (action
`restore_progress`, and `restore_done` when every session has settled or the watch ends).
It reads the sessions' published statuses whenever a state event arrives (never asks an
actor) and prints at most once a second.
"""
from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any, Callable, TextIO

from switchboard.actors.kinds import EventKind

_WAITING = {"qr"}
_FAILED = {"failed", "conflict", "banned", "logged_out"}
_SETTLED = {"connected", "stopped"} | _WAITING | _FAILED


def summarize(statuses: list[dict[str, Any]]) -> dict[str, int]:
    by = collections.Counter(s.get("status") for s in statuses)
    connected = by.get("connected", 0)
    waiting = sum(by.get(s, 0) for s in _WAITING)
    failed = sum(by.get(s, 0) for s in _FAILED)
    stopped = by.get("stopped", 0)
    return {"restored": len(statuses), "connected": connected, "waitingForQr": waiting, "failed": failed,
            "stopped": stopped, "pending": len(statuses) - connected - waiting - failed - stopped}


def line(counts: dict[str, int]) -> str:
    text = (f"restoring {counts['restored']} session(s): {counts['connected']} connected, "
            f"{counts['waitingForQr']} waiting for QR, {counts['failed']} failed")
    if counts["stopped"]:
        text += f", {counts['stopped']} stopped"
    return text + (f", {counts['pending']} pending" if counts["pending"] else " (done)")


class RestoreProgress:
    """Watches the restored companies until each has settled or `timeout` passes."""

    def __init__(self, board: Any, companies: list[str], *, out: TextIO = sys.stderr, timeout: float = 300.0,
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._board = board
        self._companies = set(companies)
        self._out = out
        self._timeout = timeout
        self._interval = interval
        self._clock = clock
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> RestoreProgress:
        if not self._companies:
            return self
        self._unsubscribe = self._board.on_event(lambda _e: self._changed.set(),
                                                 kinds=(EventKind.STATE, EventKind.GAVE_UP))
        self._thread = threading.Thread(target=self._run, name="switchboard-restore-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def counts(self) -> dict[str, int]:
        return summarize([s for s in self._board.statuses() if s.get("companyId") in self._companies])

    def _run(self) -> None:
        deadline = self._clock() + self._timeout
        shown = None
        self._changed.set()
        while not self._stop.is_set():
            self._changed.wait(max(0.0, min(self._interval, deadline - self._clock())))
            self._changed.clear()
            counts = self.counts()
            done = counts["pending"] == 0 or self._clock() >= deadline
            if counts != shown:
                shown = counts
                self._report(counts, done)
            elif done:
                self._report(counts, True)
            if done:
                return
            self._stop.wait(self._interval)     # at most one line a second

    def _report(self, counts: dict[str, int], done: bool) -> None:
        print(f"switchboard: {line(counts)}", file=self._out, flush=True)
        bus = getattr(self._board, "bus", None)
        if bus is not None:
            bus.publish(None, EventKind.GATEWAY, {"action": "restore_done" if done else "restore_progress", **counts})
