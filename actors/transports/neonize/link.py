"""The parent's end of the pipe to one child: requests and their replies, and the reader.

Commands return futures at once (the owning actor never waits on a slow Go call). Each
request carries an id; its reply, a timeout or the end of the child resolves it, once.
A failed reply carries a wire error code, and only the code decides the outcome.

A request has two phases, because a send that may have reached WhatsApp must never be
reported as safe to resend (issue 8: the recipient would get it twice):
  queued   until the child says STARTED: `command_timeout` s, then TIMEOUT (retryable; the
           child never starts a request after the "not_after" it was given, a little
           earlier); the child ending now: the given code (nothing left)
  started  in Go: `run_timeout` s (longer than whatsmeow's own 75 s), then UNCONFIRMED;
           the child ending now: UNCONFIRMED too - for sends; a pairing code or a logout
           asked again does no harm, so those stay retryable.

The reader thread hands every non-reply message to `on_message` in the order the child
sent it, and calls `on_eof` once when the pipe is gone (the child exited or closed it).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable

from ...connection import SendError
from ...scheduler import TimerHandle
from . import wire
from .watchdogs import timers

log = logging.getLogger("switchboard.neonize")

RUN_TIMEOUT = 90.0          # a started command: whatsmeow gives up after 75 s (request.go
                            # defaultRequestTimeout, send.go ErrMessageTimedOut), plus the
                            # LID/usync look-ups and encryption before it


def command_error(code: str, text: str) -> SendError:
    """The SendError for a failed command, by its code: retryable (nothing left),
    unconfirmed (may have reached WhatsApp) or refused."""
    if code == wire.UNCONFIRMED:
        return SendError(text, retryable=False, unconfirmed=True, code=code)
    if code == wire.NOT_ON_WHATSAPP:
        return SendError(f"number not on WhatsApp ({text})", retryable=False,
                         code=SendError.NOT_ON_WHATSAPP)
    return SendError(text, retryable=code in wire.RETRYABLE_CODES, code=code)


@dataclasses.dataclass
class _Pending:
    op: str
    future: Future
    timer: TimerHandle
    convert: Callable[[dict], Any]
    started: bool = False

    @property
    def maybe_delivered(self) -> bool:
        """Went into Go and is a send: from now on its fate is WhatsApp's."""
        return self.started and self.op == wire.SEND


def failed(code: str, text: str) -> Future:
    """A future that already failed with command_error(code, text)."""
    fut: Future = Future()
    fut.set_exception(command_error(code, text))
    return fut


class Link:
    """Requests over one pipe, with ids, futures and timeouts; and the reader thread."""

    def __init__(self, pipe: Any, *, name: str, command_timeout: float,
                 on_message: Callable[[dict], None], on_eof: Callable[[], None],
                 run_timeout: float = RUN_TIMEOUT) -> None:
        self._pipe = pipe
        self._name = name
        self._timeout = float(command_timeout)          # queued, until STARTED
        self._run_timeout = float(run_timeout)
        self._on_message = on_message
        self._on_eof = on_eof
        # One lock for the pending table and for writing: one writer on the pipe at a time.
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._open = True
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name=f"wa-reader-{name}")

    def start(self) -> None:
        self._reader.start()

    def request(self, op: str, args: dict, convert: Callable[[dict], Any]) -> Future:
        """Send a command; the future gets convert(result), or fails with SendError."""
        fut: Future = Future()
        req_id = next(self._ids)
        timer = timers().call_later(self._timeout, self._on_timeout, req_id, False)
        # The child starts nothing after not_after: a little before our own deadline, so
        # that a STARTED is read before that deadline passes (same clock, same host).
        not_after = time.time() + self._timeout - min(5.0, self._timeout / 4)
        with self._lock:
            if not self._open:
                timer.cancel()
                fut.set_exception(command_error(wire.NOT_CONNECTED,
                                                "not connected: session process is not running"))
                return fut
            self._pending[req_id] = _Pending(op, fut, timer, convert)
            try:
                self._pipe.send((req_id, op, dict(args, wait=self._timeout, not_after=not_after)))
                return fut
            except (OSError, ValueError) as exc:
                error = command_error(wire.NOT_CONNECTED, f"session process is not running: {exc}")
        self._resolve(req_id, error=error)
        return fut

    def tell(self, op: str, args: dict) -> None:
        """Send a command nobody waits for (stop); a broken pipe is ignored."""
        with self._lock:
            try:
                self._pipe.send((0, op, args))
            except (OSError, ValueError):
                pass

    def fail_pending(self, code: str, text: str) -> None:
        """Fail every request still waiting (the child is gone): with `code` if it never
        started, as UNCONFIRMED if it is a send that did."""
        with self._lock:
            entries = list(self._pending.items())
        for req_id, entry in entries:
            if entry.maybe_delivered:
                error = command_error(wire.UNCONFIRMED, f"{text} while the send was in progress: "
                                      "it may have reached WhatsApp")
            else:
                error = command_error(code, text)
            self._resolve(req_id, error=error)

    def joined(self, timeout: float) -> bool:
        """Wait for the reader to finish (not from the reader itself); True if it has."""
        if self._reader is not threading.current_thread():
            self._reader.join(timeout)
        return not self._reader.is_alive()

    # ---- the reader ------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    msg = self._pipe.recv()
                except (EOFError, OSError):
                    break
                except Exception:
                    log.exception("%s: undecodable message from the session process", self._name)
                    continue
                try:
                    if msg.get("type") == wire.REPLY:
                        self._on_reply(msg)
                    elif msg.get("type") == wire.STARTED:
                        self._on_started(msg)
                    else:
                        self._on_message(msg)
                except Exception:
                    log.exception("%s: handling %r failed", self._name, msg.get("type"))
        finally:
            with self._lock:
                self._open = False
                try:
                    self._pipe.close()
                except OSError:
                    pass
            self._on_eof()

    def _on_started(self, msg: dict) -> None:
        req_id = msg.get("req_id")
        with self._lock:
            entry = self._pending.get(req_id)
            if entry is None:                   # given up on already: it should not have started
                log.warning("%s: request %s started after its deadline", self._name, req_id)
                return
            entry.started = True
            entry.timer.cancel()
            entry.timer = timers().call_later(self._run_timeout, self._on_timeout, req_id, True)

    def _on_reply(self, msg: dict) -> None:
        req_id = msg.get("req_id")
        with self._lock:
            entry = self._pending.get(req_id)
        if entry is None:
            return                              # timed out or failed already
        if not msg.get("ok"):
            self._resolve(req_id, error=command_error(str(msg.get("code") or wire.INTERNAL),
                                                      str(msg.get("error") or "command failed")))
            return
        try:
            value = entry.convert(msg.get("result") or {})
        except Exception as exc:
            self._resolve(req_id, error=command_error(wire.INTERNAL, f"bad reply: {exc}"))
            return
        self._resolve(req_id, result=value)

    def _on_timeout(self, req_id: int, run_phase: bool) -> None:
        with self._lock:
            entry = self._pending.get(req_id)
            if entry is None or entry.started != run_phase:
                return                          # resolved, or the queued deadline lost a race
        if entry.maybe_delivered:
            error = command_error(wire.UNCONFIRMED, f"no answer from WhatsApp within "
                                  f"{self._run_timeout:g}s: the message may have been delivered")
        elif entry.started:
            error = command_error(wire.NOT_CONNECTED, f"no answer from WhatsApp within "
                                  f"{self._run_timeout:g}s")
        else:
            error = command_error(wire.TIMEOUT, f"no reply from the session process within "
                                  f"{self._timeout:g}s: the request never started")
        self._resolve(req_id, error=error)

    def _resolve(self, req_id: int, *, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            entry = self._pending.pop(req_id, None)
        if entry is None:
            return
        fut, timer = entry.future, entry.timer
        timer.cancel()
        try:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        except InvalidStateError:               # the caller cancelled it
            pass
