"""A session's status, and the board where every session publishes it.

The board is Erlang's "owner writes, anyone reads" table: each session actor writes its
own slot after every message it handles (one writer per company, stamped with the
actor's urn), and readers (HTTP, metrics, waiters) read without asking the actor. A slot
also tells whether its actor is in the middle of a message and since when, so a reader
can tell an idle actor from a stuck one and ask (and time out) only then.
Reads need no lock: a slot is replaced whole, never changed in place.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from .clock import iso


@dataclasses.dataclass(frozen=True)
class SessionStatus:
    company_id: str
    state: str
    phone: str | None = None
    connected_at: float | None = None
    last_error: str | None = None
    attempts: int = 0
    next_retry_at: float | None = None
    qr_available: bool = False
    queued: int = 0
    sent: int = 0
    received: int = 0
    unconfirmed: int = 0
    recent_unconfirmed: tuple[str, ...] = ()
    interrupted: bool = False

    def as_api(self) -> dict[str, Any]:
        """The status in the API's shape (camelCase, ISO times)."""
        connected = self.state == "connected"
        return {
            "companyId": self.company_id,
            "status": self.state,
            "connected": connected,
            "phoneNumber": f"+{self.phone}" if self.phone else None,
            "connectedAt": iso(self.connected_at) if connected else None,
            "lastError": self.last_error,
            "reconnectAttempts": self.attempts,
            "nextRetryAt": iso(self.next_retry_at),
            "qrAvailable": self.qr_available,
            "queued": self.queued,
            "messagesSent": self.sent,
            "messagesReceived": self.received,
            # Sends that may have reached WhatsApp with no answer saying so (never resent):
            # how many since the session started, and the outbox ids of the latest.
            "unconfirmed": self.unconfirmed,
            "lastUnconfirmed": list(self.recent_unconfirmed),
            # reconnecting while the transport heals the same link (no new connection yet)
            "interrupted": self.interrupted,
        }


@dataclasses.dataclass(frozen=True)
class _Slot:
    urn: str
    status: SessionStatus
    api: dict[str, Any]              # status.as_api(), made once per write, read many times


class StatusBoard:
    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._busy: dict[str, tuple[str, float]] = {}     # company id -> (urn, monotonic since)

    # ---- the writer: only the company's own actor, identified by its urn ----------------

    def begin(self, company_id: str, urn: str) -> None:
        """The actor started handling a message."""
        self._busy[company_id] = (urn, time.monotonic())

    def end(self, company_id: str, urn: str) -> None:
        """The actor finished it. Only its own mark: a stuck predecessor cannot clear a successor's."""
        mark = self._busy.get(company_id)
        if mark is not None and mark[0] == urn:
            self._busy.pop(company_id, None)

    def publish(self, urn: str, status: SessionStatus) -> dict[str, Any]:
        """The actor's status changed (it publishes before it replies: callers read their
        writes). Returns it in the API's shape, made once here for every reader."""
        api = status.as_api()
        self._slots[status.company_id] = _Slot(urn, status, api)
        return api

    def drop(self, company_id: str) -> None:
        """The company was deleted."""
        self._slots.pop(company_id, None)
        self._busy.pop(company_id, None)

    # ---- readers --------------------------------------------------------------------------

    def get(self, company_id: str) -> dict[str, Any] | None:
        slot = self._slots.get(company_id)
        return slot.api if slot is not None else None

    def live(self, company_id: str, max_busy: float) -> dict[str, Any] | None:
        """The last status, unless its actor has been inside one message for more than
        `max_busy` seconds (then None: ask it, and let the ask's timeout speak)."""
        mark = self._busy.get(company_id)
        if mark is not None and time.monotonic() - mark[1] > max_busy:
            return None
        slot = self._slots.get(company_id)
        return slot.api if slot is not None else None
