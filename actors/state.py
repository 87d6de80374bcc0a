"""What a session is, and how that is shown.

Its lifecycle state and the reason for it, the linked phone, the QR code on show, and
since when it is connected. A change is shown in this order: the status board first (so
a reader woken by the event already sees it), then a "state" event; a resting state is
also written to the company's record, so a restarted actor still knows why it is down.
The status shown also carries figures the other parts keep (attempts, queue, counts).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from .clock import iso
from .connection import Cause, QrCode
from .inbound import Inbound
from .kinds import EventKind
from .lifecycle import RESTING
from .record import SessionRecord
from .retries import Retries
from .sending import SendQueue
from .status import SessionStatus, StatusBoard

Publish = Callable[[EventKind, dict[str, Any]], None]


class SessionState:
    def __init__(self, company_id: str, board: StatusBoard, publish: Publish, retries: Retries) -> None:
        self.company_id = company_id
        self._board = board
        self._publish = publish
        self._retries = retries
        self.state = "stopped"
        self.error: str | None = None
        self.phone: str | None = None
        self.connected_at: float | None = None
        self.qr: QrCode | None = None
        self.qr_expires_at: float | None = None
        self.interrupted = False                 # the transport is healing the link by itself
        self.published: dict[str, Any] = {}     # the status as last shown, in the API's shape
        # Set once the actor has opened them (on_start):
        self.record: SessionRecord | None = None
        self.queue: SendQueue | None = None
        self.inbound: Inbound | None = None

    def enter(self, state: str, error: str | None, urn: str, *, cause: Cause | None = None) -> None:
        previous = self.state
        self.state, self.error = state, error
        if state not in ("connected", "reconnecting"):
            self.connected_at = None
        if state in RESTING:
            self.record.update(state=state, last_error=error)
        self.show(urn)             # before the event, so a woken subscriber sees the new state
        if previous != state or state in ("reconnecting", "failed"):
            data = {"state": state, "previous": previous, "error": error, "attempt": self._retries.attempts,
                    "nextRetryAt": iso(self._retries.next_at)}
            if cause is not None:
                data["cause"] = cause.value
            self._publish(EventKind.STATE, data)

    def link_phone(self, phone: str) -> None:
        if phone and phone != self.phone:
            self.phone = phone
            self.record.update(phone=phone)

    def show_qr(self, code: QrCode) -> None:
        self.qr, self.qr_expires_at = code, time.time() + code.expires_in

    def qr_shown(self) -> dict[str, Any] | None:
        if self.state != "qr" or self.qr is None:
            return None
        return {"code": self.qr.code, "expiresAt": iso(self.qr_expires_at)}

    def show(self, urn: str) -> dict[str, Any]:
        """Write the status to the board; it is what the actor answers until the next change."""
        self.published = self._board.publish(urn, SessionStatus(
            company_id=self.company_id, state=self.state, phone=self.phone, connected_at=self.connected_at,
            last_error=self.error, attempts=self._retries.attempts, next_retry_at=self._retries.next_at,
            qr_available=self.state == "qr" and self.qr is not None,
            queued=len(self.queue) if self.queue is not None else 0,
            sent=self.queue.sent if self.queue is not None else 0,
            received=self.inbound.received if self.inbound is not None else 0,
            unconfirmed=self.queue.unconfirmed if self.queue is not None else 0,
            recent_unconfirmed=tuple(self.queue.recent_unconfirmed) if self.queue is not None else (),
            interrupted=self.interrupted and self.state == "reconnecting"))
        return self.published
