"""One shared timer thread for every delayed action (pykka has no timers).

Thousands of backoff, health and QR timers share this thread instead of holding one
`threading.Timer` thread each. Cancellation is lazy: a cancelled handle is skipped.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


class TimerHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self, name: str = "switchboard-timers") -> None:
        self._heap: list[tuple[float, int, Callable[..., Any], tuple, TimerHandle]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run `fn(*args)` on the timer thread after `delay` seconds. `fn` must be quick."""
        handle = TimerHandle()
        with self._cv:
            if self._stopped:
                handle.cancel()
                return handle
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn, args, handle))
            self._cv.notify()
        return handle

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._heap.clear()
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._stopped:
                    return
                _, _, fn, args, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            try:
                fn(*args)
            except Exception:  # a broken callback must not kill every other timer
                log.exception("timer callback %r failed", fn)
