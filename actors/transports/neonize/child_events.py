"""The child's side of NeonizeConnection: what its messages, its exit and its silences
(the watchdogs) mean for the link, as events.

A mixin, because each reaction reads and sets the connection's own state under its own
lock; the host provides `company_id`, `_lock`, `_translator`, `_watchdogs`, `_child`,
`_link`, `_grace`, `_connect_deadline`, the flags `_closed`, `_final`, `_exited`, and
`_emit`, `_finish`, `_end_child` (see connection.py); it sets `exitcode`. What each
single message means is in translate.py; what the connection adds to it is listed in
connection.py's docstring.
"""
from __future__ import annotations

import logging

from ...connection import Cause, Disconnected, QrExhausted
from . import wire
from .process import exit_text
from .translate import END, INBOUND, SIGNS_OF_LIFE

log = logging.getLogger("switchboard.neonize")


class ChildEvents:
    """The reader's and the watchdogs' callbacks of a NeonizeConnection."""

    def _on_child_event(self, msg: dict) -> None:
        """Called by the reader, in the child's order, for every message but replies."""
        kind = msg.get("type")
        with self._lock:
            if (self._closed or self._final) and kind not in INBOUND:
                return                          # closing, or a final event already went out
            if kind in SIGNS_OF_LIFE:
                self._watchdogs.life_sign()
            step = self._translator.translate(msg)
            if step.qr_over:
                self._watchdogs.qr_over()
            if step.qr_ttl is not None:
                self._watchdogs.qr_shown(step.qr_ttl, self._translator.qr_count)
            if step.over is not None:           # this connection is over
                self._final = True
                self._watchdogs.cancel()
            for event in step.events:
                self._emit(event)
        if step.over == END:
            self._end_child(self._grace)

    def _on_child_gone(self) -> None:
        """Called by the reader once, at the pipe's end: reap, then resolve `gone`."""
        child, link = self._child, self._link
        self.exitcode = code = child.reap_after_eof(5.0)
        with self._lock:
            self._exited = True
            self._translator.connected = False
            self._watchdogs.cancel()
        link.fail_pending(wire.NOT_CONNECTED, "not connected: session process exited")
        with self._lock:
            if self._closed or self._final:
                log.info("company %s: session process %s ended (code %s)",
                         self.company_id, child.pid, exit_text(code))
            else:
                self._final = True
                log.warning("company %s: session process %s exited unasked (code %s)",
                            self.company_id, child.pid, exit_text(code))
                self._emit(Disconnected(reason=f"session process exited with code {exit_text(code)}",
                                        cause=Cause.PROCESS_EXITED))
        self._finish()

    def _on_qr_stall(self, seen: int) -> None:
        with self._lock:
            t = self._translator
            if self._closed or self._final or t.connected or t.qr_count != seen:
                return
            log.warning("company %s: no QR code or login event after the last code expired",
                        self.company_id)
            self._final = True
            self._emit(QrExhausted())
        self._end_child(self._grace)

    def _on_connect_deadline(self) -> None:
        with self._lock:
            if self._closed or self._final or self._exited:
                return
            self._final = True
            self._emit(Disconnected(
                reason=f"no answer from the session within {self._connect_deadline:g}s "
                       "(connect deadline): killed", cause=Cause.TIMED_OUT))
        self._end_child(0.5)                    # it is hung: don't wait for a clean stop
