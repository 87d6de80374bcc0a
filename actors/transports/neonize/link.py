"""The parent's end of the pipe to one child: requests and their replies, and the reader.

Commands return futures at once (the owning actor never waits on a slow Go call). Each
request carries an id; its reply, a timeout or the end of the child resolves it, once.
A failed reply carries a wire error code, and only the code decides `retryable`.

The reader thread hands every non-reply message to `on_message` in the order the child
sent it, and calls `on_eof` once when the pipe is gone (the child exited or closed it).
"""
from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable

from ...connection import SendError
from ...scheduler import TimerHandle
from . import wire
from .watchdogs import timers

log = logging.getLogger("switchboard.neonize")

def command_error(code: str, text: str) -> SendError:
    """The SendError for a failed command: retryable exactly when its code says so."""
    return SendError(text, retryable=code in wire.RETRYABLE_CODES)


def failed(code: str, text: str) -> Future:
    """A future that already failed with command_error(code, text)."""
    fut: Future = Future()
    fut.set_exception(command_error(code, text))
    return fut


class Link:
    """Requests over one pipe, with ids, futures and timeouts; and the reader thread."""

    def __init__(self, pipe: Any, *, name: str, command_timeout: float,
                 on_message: Callable[[dict], None], on_eof: Callable[[], None]) -> None:
        self._pipe = pipe
        self._name = name
        self._timeout = float(command_timeout)
        self._on_message = on_message
        self._on_eof = on_eof
        # One lock for the pending table and for writing: one writer on the pipe at a time.
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future, TimerHandle, Callable[[dict], Any]]] = {}
        self._ids = itertools.count(1)
        self._open = True
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name=f"wa-reader-{name}")

    def start(self) -> None:
        self._reader.start()

    def request(self, op: str, args: dict, convert: Callable[[dict], Any]) -> Future:
        """Send a command; the future gets convert(result), or fails with SendError."""
        fut: Future = Future()
        req_id = next(self._ids)
        timer = timers().call_later(self._timeout, self._on_timeout, req_id)
        with self._lock:
            if not self._open:
                timer.cancel()
                fut.set_exception(command_error(wire.NOT_CONNECTED,
                                                "not connected: session process is not running"))
                return fut
            self._pending[req_id] = (fut, timer, convert)
            try:
                self._pipe.send((req_id, op, dict(args, wait=self._timeout)))
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
        """Fail every request still waiting (the connection closed, the child is gone)."""
        with self._lock:
            ids = list(self._pending)
        for req_id in ids:
            self._resolve(req_id, error=command_error(code, text))

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
            value = entry[2](msg.get("result") or {})
        except Exception as exc:
            self._resolve(req_id, error=command_error(wire.INTERNAL, f"bad reply: {exc}"))
            return
        self._resolve(req_id, result=value)

    def _on_timeout(self, req_id: int) -> None:
        self._resolve(req_id, error=command_error(
            wire.TIMEOUT, f"no reply from the session process within {self._timeout:g}s"))

    def _resolve(self, req_id: int, *, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            entry = self._pending.pop(req_id, None)
        if entry is None:
            return
        fut, timer, _ = entry
        timer.cancel()
        try:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        except InvalidStateError:               # the caller cancelled it
            pass
