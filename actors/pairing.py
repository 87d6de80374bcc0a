"""Linking a phone, the actor's side: the QR session's window, pairing codes in it, and
the watch from Paired to Connected.

whatsmeow's QR session lives about 160 s from its first code (60 s, then 20 s per code),
and a pairing code lives only as long as that session (pair-code.go), so a code asked
for late in the window would leave the user seconds to type it: past
`pair_code_fresh` seconds the actor opens a fresh QR session and asks on its first
code. Every code is answered with its expiry.

After the phone pairs, whatsmeow restarts the stream itself (the 515 restart) and says
Connected; if that reconnect fails it only logs it. So a Paired starts a watch: no
Connected within `pair_timeout` seconds and the actor reconnects with the stored
credentials. Pure bookkeeping, used on the actor's thread only.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from concurrent.futures import Future
from typing import Any, Callable

from . import messages as m
from .clock import iso
from .connection import Connection, SendError
from .scheduler import Scheduler


@dataclasses.dataclass(frozen=True)
class PairingCodeAnswer:
    """What a pairing-code request answers: the code, and when its QR session ends."""
    code: str
    expires_at: float               # wall clock

    def __str__(self) -> str:       # the code itself, where a plain string was expected
        return self.code

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "expiresAt": iso(self.expires_at)}


class Pairing:
    def __init__(self, settings: Any, scheduler: Scheduler, tell: Callable[[Any], None]) -> None:
        self._settings = settings
        self._scheduler = scheduler
        self._tell = tell
        self._generation = 0                       # the connection whose QR window is timed
        self._started = 0.0                        # monotonic time of its first QR code
        self._started_wall = 0.0
        self._waiting: tuple[str, Future] | None = None   # a code asked for on the next QR session
        self._watches = itertools.count(1)
        self._watch = 0

    # ---- the QR window and pairing codes -------------------------------------------------

    def qr_shown(self, generation: int) -> tuple[str, Future] | None:
        """A QR code of `generation` is on show (its first one starts the window). Answers
        the pairing-code request that waited for a fresh QR session, if any."""
        if generation != self._generation:
            self._generation, self._started, self._started_wall = generation, time.monotonic(), time.time()
        waiting, self._waiting = self._waiting, None
        return waiting

    def window_is_fresh(self, generation: int) -> bool:
        return generation == self._generation and \
            time.monotonic() - self._started <= self._settings.pair_code_fresh

    def wait_for_fresh_window(self, phone: str) -> Future:
        """Ask on the next QR session's first code; a request already waiting is superseded."""
        self.cancel(SendError("superseded by a newer pairing-code request", retryable=True))
        result: Future = Future()
        self._waiting = (phone, result)
        return result

    def request(self, conn: Connection, phone: str, result: Future | None = None) -> Future:
        """Ask `conn` (showing QR codes) for a code; resolves to a PairingCodeAnswer. The
        expiry is the transport's when it says (a PairingCode's expires_in), else the end
        of the QR session as the actor counts it."""
        result = result if result is not None else Future()
        window_end = self._started_wall + self._settings.pair_code_window

        def answered(f: Future) -> None:
            if result.done():
                return
            error = f.exception()
            if error is not None:
                result.set_exception(error)
            else:
                code = f.result()
                expires_in = getattr(code, "expires_in", None)
                result.set_result(PairingCodeAnswer(
                    str(code), time.time() + expires_in if expires_in is not None else window_end))
        conn.pair_phone(phone).add_done_callback(answered)
        return result

    def cancel(self, error: BaseException) -> None:
        """The request waiting for a fresh QR session will not get one."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting[1].done():
            waiting[1].set_exception(error)

    # ---- from Paired to Connected ------------------------------------------------------

    def paired(self, generation: int) -> None:
        self._watch = next(self._watches)
        self._scheduler.call_later(self._settings.pair_timeout, self._tell, m.PairWatch(generation, self._watch))

    def connected(self) -> None:
        self._watch = 0

    def watch_due(self, timer: m.PairWatch) -> bool:
        due = timer.ticket == self._watch
        if due:
            self._watch = 0
        return due
