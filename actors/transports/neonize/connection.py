"""NeonizeConnection: one company's link to WhatsApp as one child process.

This module runs in the gateway process and must never import neonize, directly or
indirectly: the child is started by spawner.py (forked from a fork server that has never
loaded Go, or spawned) and imports the neonize side (child.py) by name.

Why a process per company (measured, ../shared/notes/neonize.md §0, §4, §9): neonize's Go
glue keeps unlocked global maps (concurrent connects and sends abort the whole process),
its calls can block for a minute (dial) or forever (after a QR timeout), and every
connect leaks a file descriptor. A child process confines all of that to one tenant, and
killing it is the only reliable way to end a hung Go call.

What each child message means is in translate.py. This class adds what only it knows
(the reactions are in child_events.py, the commands in commands.py):
  child exit not requested by close() and not after a final event
                   -> Disconnected("session process exited with code N", PROCESS_EXITED), once
  no first sign of life within connect_deadline -> Disconnected(TIMED_OUT); child killed
  no QR code or login event QR_STALL_SLACK s after the last code expired -> QrExhausted
  (both watchdogs in watchdogs.py)
  the child could not be started -> Disconnected(OPEN_FAILED)
open() returns at once: it queues the start on the spawner thread (spawner.py), and the
rest of opening (the Link, the reader, the connect deadline) runs there once the process
is up. A close() before that cancels the queued start, or ends the child as soon as it
exists. After a final event the child is ended in the background. close() returns at
once too; the stop sequence (process.py) runs on its own thread, and the future close()
returned resolves once the child is reaped and the reader is done. In between only
traffic (IncomingMessage, Receipt) is still emitted: whatsmeow has acked it, nobody
resends it (the child drains neonize's queue before it stops, child.py). Requests still
pending are answered by the child or failed at its end, never at close(): a send the
child has already handed to Go must come back `unconfirmed`, not retryable (link.py).
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path

from ...connection import Cause, ConnectionEvent, Disconnected, EmitFn, IncomingMessage, Receipt
from ..proxy import validate_proxy
from . import wire
from .child_events import ChildEvents
from .commands import Commands
from .link import RUN_TIMEOUT, Link
from .process import ChildProcess
from .spawner import ChildTarget, child_entry, spawn
from .translate import Translator
from .watchdogs import Watchdogs

log = logging.getLogger("switchboard.neonize")

DB_NAME = "whatsapp.sqlite3"
DB_FILES = (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + "-journal")
COMMAND_TIMEOUT = 60.0          # a command not yet started by the child after this: retryable
SEND_TIMEOUT = RUN_TIMEOUT      # a started one with no answer after this: unconfirmed (> 75 s)
_generations = itertools.count(1)


def _ensure_private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)                    # mkdir's mode is filtered by the umask


class NeonizeConnection(ChildEvents, Commands):
    """One attempt at a live WhatsApp link for one company: one child process."""

    def __init__(self, company_id: str, company_dir: Path, emit: EmitFn, *,
                 device_name: str = "Switchboard", proxy: str | None = None,
                 go_log_level: str = "WARNING", stop_grace: float = 3.0,
                 connect_deadline: float | None = None,
                 command_timeout: float = COMMAND_TIMEOUT, send_timeout: float = SEND_TIMEOUT,
                 generation: int | None = None,
                 child_target: ChildTarget | None = None) -> None:
        """`child_target` replaces the neonize child (tests use it to get a child that
        ignores "stop" and SIGTERM); it must be importable by name in a spawned process."""
        self.company_id = company_id
        self.company_dir = Path(company_dir)
        self.db_path = self.company_dir.resolve() / DB_NAME
        self.generation = generation if generation is not None else next(_generations)
        self._emit_fn = emit
        self._device_name = device_name
        self._proxy = validate_proxy(proxy)
        self._go_log_level = go_log_level
        self._grace = float(stop_grace)
        self._connect_deadline = connect_deadline
        self._command_timeout = float(command_timeout)
        self._send_timeout = float(send_timeout)
        self._child_target = child_target or child_entry

        # _lock guards the state below and is held while calling emit, so that close()
        # (which sets _closed under it) is a barrier for lifecycle events, and the end of
        # the link (_finished) a barrier for everything.
        self._lock = threading.RLock()
        self._translator = Translator(company_id)
        self._spawning: Future | None = None    # the queued start, until the child exists
        self._child: ChildProcess | None = None
        self._link: Link | None = None
        self._opened = False
        self._closed = False        # close() called: traffic only from now on
        self._final = False         # a final event went out: the child's exit says nothing new
        self._exited = False        # the child is gone (pipe EOF seen)
        self._finished = False      # the link is gone for good: nothing more, ever
        self._gone: Future = Future()
        self._watchdogs = Watchdogs(on_connect_deadline=self._on_connect_deadline,
                                    on_qr_stall=self._on_qr_stall)
        self.pid: int | None = None
        self.exitcode: int | None = None

    def __repr__(self) -> str:
        return f"<NeonizeConnection {self.company_id}#{self.generation} pid={self.pid}>"

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Queue the child's start and return at once; everything else arrives as events."""
        with self._lock:
            if self._opened:
                raise RuntimeError("a NeonizeConnection can be opened only once")
            self._opened = True
            if self._closed:
                return
        cfg = {"company_id": self.company_id, "generation": self.generation,
               "db_path": str(self.db_path), "device_name": self._device_name,
               "proxy": self._proxy, "go_log_level": self._go_log_level,
               "parent_pid": os.getpid()}
        try:
            _ensure_private_dir(self.company_dir)
            spawning = spawn(self._child_target, cfg, f"wa-{self.company_id}#{self.generation}")
        except Exception as exc:
            self._open_failed(exc)
            return
        with self._lock:
            self._spawning, closed = spawning, self._closed
        spawning.add_done_callback(self._on_spawned)
        if closed:                                  # close() came in between: don't start it
            spawning.cancel()

    def _on_spawned(self, spawning: Future) -> None:
        """The rest of open, on the spawner thread once the process is up (keep it quick:
        other starts wait behind it), or where close() cancelled the queued start."""
        if spawning.cancelled():                    # closed before it started: no process
            self._finish()
            return
        exc = spawning.exception()
        if exc is not None:
            self._open_failed(exc)
            return
        proc, pipe = spawning.result()
        link = Link(pipe, name=self.company_id, command_timeout=self._command_timeout,
                    run_timeout=self._send_timeout,
                    on_message=self._on_child_event, on_eof=self._on_child_gone)
        with self._lock:
            self._child, self._link, self.pid = ChildProcess(proc), link, proc.pid
            self._spawning = None
            closed = self._closed
            if not closed and self._connect_deadline:
                self._watchdogs.arm_connect(self._connect_deadline)
        link.start()
        log.info("company %s: session process %s started (generation %s)",
                 self.company_id, proc.pid, self.generation)
        if closed:                                  # close() came while we were spawning
            self._end_child(self._grace)

    def _open_failed(self, exc: BaseException) -> None:
        log.error("company %s: could not start the session process", self.company_id,
                  exc_info=exc)
        with self._lock:
            self._final = self._exited = True
            self._spawning = None
            self._emit(Disconnected(reason=f"could not start session process: {exc}",
                                    cause=Cause.OPEN_FAILED))
        self._finish()

    def close(self) -> Future:
        """Start closing and return at once (idempotent: always the same future). The
        future resolves to None once the child is reaped and nothing more will be emitted."""
        with self._lock:
            if self._closed:
                return self._gone
            self._closed = True
            self._watchdogs.cancel()
            never_opened = not self._opened
            running = self._child is not None
            spawning = self._spawning
        if never_opened:
            self._finish()
        elif running:
            self._end_child(self._grace)
        elif spawning is not None:
            spawning.cancel()       # still queued: _on_spawned finishes; already starting:
                                    # it returns False and _on_spawned ends the child
        # else: the start failed (already gone), or open() is between spawn() and
        # storing the future (it sees _closed and cancels itself)
        return self._gone

    def gone(self) -> Future:
        """The future close() returns, without closing: resolves once the link is gone for
        good, whoever ended it (close, a final event, the child's own exit)."""
        return self._gone

    def alive(self) -> bool:
        """True from open() until the link is gone, including while the child is starting."""
        with self._lock:
            if not self._opened or self._closed or self._final or self._exited:
                return False
            child = self._child
        return child is None or not child.exited()

    # ----------------------------------------------------------------- ending

    def _finish(self) -> None:
        with self._lock:
            self._finished = True
        if not self._gone.done():
            self._gone.set_result(None)

    def _emit(self, event: ConnectionEvent) -> None:
        """Called with _lock held: after close() traffic only, after the end nothing."""
        if self._finished or (self._closed and not isinstance(event, (IncomingMessage, Receipt))):
            return
        log.debug("company %s: %r", self.company_id, event)
        try:
            self._emit_fn(event)
        except Exception:
            log.exception("company %s: emit(%r) failed", self.company_id, event)

    def _end_child(self, grace: float) -> None:
        """Ask, then force, the child to end, in the background (process.py)."""
        child, link = self._child, self._link
        if child is not None:
            child.stop_in_background(lambda g: link.tell(wire.STOP, {"grace": g}), grace,
                                     name=f"wa-stop-{self.company_id}")
