"""Deadlines of neonize links, all on one shared timer thread.

Per connection, two watchdogs for Go calls that hang without a word:
  connect deadline  no sign of life (QR, login event, connected, paired, connect failure)
                    within `connect_deadline` s: the child is stuck and gets killed
  QR stall          no new code and no login event QR_STALL_SLACK s after the last code
                    expired: whatsmeow's QR loop is stuck
`Watchdogs` only keeps the timers; its owner calls it under its own lock and, when a
deadline fires, checks its own state again (a firing may race with a cancel).
"""
from __future__ import annotations

import threading
from typing import Callable

from ...scheduler import Scheduler, TimerHandle

QR_STALL_SLACK = 30.0           # no new code/login event this long after expiry: hung

_timers_lock = threading.Lock()
_timers_instance: Scheduler | None = None


def timers() -> Scheduler:
    """One timer thread for every deadline of every connection (command replies, connect
    deadline, QR stall), started on first use."""
    global _timers_instance
    with _timers_lock:
        if _timers_instance is None:
            _timers_instance = Scheduler("neonize-timers")
        return _timers_instance


class Watchdogs:
    """The connect deadline and the QR stall timer of one connection."""

    def __init__(self, *, on_connect_deadline: Callable[[], None],
                 on_qr_stall: Callable[[int], None]) -> None:
        self._on_connect_deadline = on_connect_deadline
        self._on_qr_stall = on_qr_stall
        self._connect: TimerHandle | None = None
        self._qr: TimerHandle | None = None

    def arm_connect(self, seconds: float) -> None:
        self._connect = timers().call_later(seconds, self._fire_connect)

    def life_sign(self) -> None:
        """The child answered: it is not hung."""
        self._connect = _cancelled(self._connect)

    def qr_shown(self, ttl: float, seen: int) -> None:
        """Code number `seen` shows for `ttl` s; `on_qr_stall(seen)` if nothing follows."""
        self._qr = _cancelled(self._qr)
        self._qr = timers().call_later(ttl + QR_STALL_SLACK, self._on_qr_stall, seen)

    def qr_over(self) -> None:
        self._qr = _cancelled(self._qr)

    def cancel(self) -> None:
        self._connect = _cancelled(self._connect)
        self._qr = _cancelled(self._qr)

    def _fire_connect(self) -> None:
        self._connect = None
        self._on_connect_deadline()


def _cancelled(timer: TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()
    return None
