"""Ending and reaping one neonize child without ever signalling a reused pid.

A hung Go call can only be ended by ending the process, so a stop escalates: ask on the
pipe, wait `grace`, SIGTERM, wait, SIGKILL, wait. Signals go out only while the child is
unreaped: until it is reaped its pid cannot belong to anyone else.
"""
from __future__ import annotations

import signal
import threading
from multiprocessing.connection import wait as _wait_ready
from typing import Any, Callable

TERM_WAIT = 2.0                 # after SIGTERM, before SIGKILL
KILL_WAIT = 2.0                 # after SIGKILL (the exit is in progress by then)
REAP_WAIT = 2.0


def exit_text(code: int | None) -> str:
    """An exit status for people: "-9 (SIGKILL)", "4", "None"."""
    if code is not None and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


class ChildProcess:
    """One spawned child: wait for it, signal it, reap it. Thread-safe."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc
        self.pid: int | None = proc.pid
        self._lock = threading.Lock()       # reaping and signalling, never both at once
        self._stopper: threading.Thread | None = None
        self._reaped = False

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def exited(self, timeout: float = 0.0) -> bool:
        """True once the process has ended (waits up to `timeout` seconds for that)."""
        return bool(_wait_ready([self._proc.sentinel], timeout))

    def signal(self, how: str) -> None:
        """"terminate" or "kill", only while unreaped, so the pid cannot have been reused."""
        with self._lock:
            if self._proc.exitcode is None:
                (self._proc.kill if how == "kill" else self._proc.terminate)()

    def reap(self) -> int | None:
        """Collect the exit status if the process has ended; returns it (None: still running)."""
        with self._lock:
            if self._proc.exitcode is None and self.exited():
                # The sentinel closes a moment before the child becomes a zombie:
                # wait (blocking waitpid, bounded by the exit in progress) to collect it.
                self._proc.join(REAP_WAIT)
            return self._proc.exitcode

    def stop(self, ask: Callable[[float], None], grace: float) -> None:
        """Ask (`ask(seconds)` sends the stop request), wait `grace`, SIGTERM, wait, SIGKILL,
        wait: bounded by grace + TERM_WAIT + KILL_WAIT. Reaping is left to the caller."""
        if self.exited():
            return
        ask(max(0.2, grace - 0.5))
        if self.exited(grace):
            return
        self.signal("terminate")
        if self.exited(TERM_WAIT):
            return
        self.signal("kill")
        self.exited(KILL_WAIT)

    def stop_in_background(self, ask: Callable[[float], None], grace: float, name: str) -> None:
        """Run stop() on a thread of its own, never the caller's (an actor, the reader, the
        shared timer thread). The first call wins; after the reap, calls do nothing."""
        with self._lock:
            if self._stopper is not None or self._reaped:
                return
            self._stopper = threading.Thread(target=self.stop, args=(ask, grace), daemon=True, name=name)
            self._stopper.start()

    def reap_after_eof(self, linger: float) -> int | None:
        """The pipe is gone: a process still there after `linger` s is of no use any more and
        is killed. Reaps it, lets a running stop thread return, and gives the exit status."""
        if not self.exited(linger):
            self.signal("kill")
            self.exited(linger)
        code = self.reap()
        with self._lock:
            self._reaped, stopper = True, self._stopper
        if stopper is not None:
            stopper.join(KILL_WAIT + 1.0)   # it returns as soon as the process has ended
        return code
