"""The send queue: the durable outbox, the one send in flight, the callers waiting for
their message id, and the retry decision. Pure bookkeeping: no threads, no connection,
no actor; the SessionActor hands entries to its connection and reports the outcomes.

One send is in flight at a time, so messages leave in the order they were accepted.

A send is handed over at most once unless the connection proves it did not go out
(SendError.retryable: not connected, failed before the request). neonize cannot pin
WhatsApp's message id, so a second hand-over after a silent or unknown outcome could
reach the recipient twice: such a send is settled `unconfirmed` (an event, a count in
the status, the caller told the outcome is unknown) and never resent by itself. A
person who knows it did not arrive sends it again, with a new Idempotency-Key.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from . import messages as m
from .connection import Connection, SendError
from .errors import InvalidInput, OutboxUnavailable, SessionUnavailable
from .outbox import KeyedResult, Outbox, OutboxEntry
from .payload import Payload, fingerprint
from .phone import USER_SERVER

log = logging.getLogger(__name__)

SEND_RETRIES = 5
MAX_KEY = 200
RECENT_UNCONFIRMED = 5        # outbox ids of the latest unconfirmed sends, shown in the status


@dataclasses.dataclass
class SendReceipt:
    """The answer to a send: at once, with `delivered` resolving to WhatsApp's message id."""
    id: str
    to: str
    queued: bool
    message_id: str | None = None
    delivered: Future = dataclasses.field(default_factory=Future, repr=False)
    lid: str = ""                    # the recipient's LID JID, when the company's mapping knows it (issue 13)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.to, "queued": self.queued, "messageId": self.message_id,
                "status": "sent" if self.message_id else "queued"}


def is_unconfirmed(error: BaseException) -> bool:
    """A send error that leaves the outcome unknown. An error that is not a SendError
    is not known to have happened before the request, so it counts as unknown too."""
    return getattr(error, "unconfirmed", not isinstance(error, SendError))


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one answer from the connection means for the queue."""
    sent: str | None = None          # the message id, when WhatsApp took it
    failed: str | None = None        # the error, when it can never go out
    unconfirmed: str | None = None   # why the outcome is unknown (it is not resent)
    retry_in: float | None = None    # try the same entry again after this many seconds
    entry_id: str = ""
    late: bool = False               # `sent` answers a send already reported unconfirmed

    @property
    def next_may_go(self) -> bool:
        return self.retry_in is None


def check_key(key: Any) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
        raise InvalidInput(f"Idempotency-Key must be 1-{MAX_KEY} characters")
    return key


class SendQueue:
    def __init__(self, path: Path, *, fsync: bool = False, max_queued: int = 1000, journal: Any = None,
                 keys_kept: int = 1000, resend_interrupted: bool = False) -> None:
        self._outbox = Outbox(path, fsync=fsync, journal=journal, keys_kept=keys_kept,
                              resend_interrupted=resend_interrupted)
        self._max_queued = max_queued
        self._waiters: dict[str, Future] = {}
        self._in_flight: int | None = None        # the dispatch awaiting its answer
        self._in_flight_entry = ""
        self._in_flight_since = 0.0
        self._dispatches = 0
        self.sent = 0                             # sends WhatsApp took, since the actor started
        # Sends whose outcome is unknown: since the actor started, plus those found at start
        # (handed over before the gateway stopped, never answered).
        self.recovered_unconfirmed = list(self._outbox.recovered_unconfirmed)
        self.unconfirmed = len(self.recovered_unconfirmed)
        self.recent_unconfirmed: collections.deque[str] = collections.deque(
            self.recovered_unconfirmed[-RECENT_UNCONFIRMED:], maxlen=RECENT_UNCONFIRMED)

    def __len__(self) -> int:
        return len(self._outbox)

    # ---- accepting ------------------------------------------------------------------------

    def known(self, phone: str, payload: Payload, key: str | None) -> SendReceipt | None:
        """The first send's receipt when `key` was used before (for the same message)."""
        result = self._outbox.by_key(key) if key else None
        if result is None:
            return None
        if result.fingerprint not in (None, fingerprint(phone, payload)):
            raise InvalidInput("this Idempotency-Key was used for a different message; "
                               "use a new key for a new message")
        return self._receipt_for(result, phone)

    def check_room(self, state: str) -> None:
        if len(self._outbox) >= self._max_queued:
            raise SessionUnavailable(f"outbox full: {len(self._outbox)} messages wait for the connection",
                                     state=state, retry_after_ms=5000)

    def accept(self, phone: str, payload: Payload, key: str | None, *, connected: bool,
               jid: str | None = None) -> SendReceipt:
        """Store the send to `phone` (normalised digits) durably, or raise OutboxUnavailable
        and keep nothing."""
        # `phone` is already normalised digits (the actor checked it): no second parse.
        entry = OutboxEntry(id=Outbox.new_id(), to=phone, jid=jid or f"{phone}@{USER_SERVER}", payload=payload,
                            key=key)
        try:
            self._outbox.add(entry)
        except OSError as exc:
            raise OutboxUnavailable(f"could not store the message: {exc.strerror or exc}") from exc
        receipt = SendReceipt(id=entry.id, to=phone, queued=not connected)
        self._waiters[entry.id] = receipt.delivered
        return receipt

    # ---- dispatching ----------------------------------------------------------------------

    def next_dispatch(self) -> tuple[OutboxEntry, int] | None:
        """The oldest pending entry and its dispatch number, if nothing is in flight."""
        if self._in_flight is not None:
            return None
        entry = self._outbox.head()
        if entry is None:
            return None
        self._dispatches += 1
        self._in_flight, self._in_flight_since = self._dispatches, time.monotonic()
        self._in_flight_entry = entry.id
        self._outbox.sending(entry.id)          # from here on, a restart must not resend it
        return entry, self._dispatches

    def pump(self, conn: Connection, generation: int, tell: Callable[[Any], None]) -> list[Outcome]:
        """Hand pending sends to `conn`, oldest first, one in flight. An answer that comes
        later is told as SendDone; answers given at once are settled here (no round trip
        through the mailbox), and their outcomes returned."""
        outcomes: list[Outcome] = []
        while (dispatch := self.next_dispatch()) is not None:
            entry, number = dispatch
            try:
                future = conn.send(entry.jid, dataclasses.replace(entry.payload, id=whatsapp_id(entry.id)))
            except Exception as exc:         # raised before anything was handed over
                future = Future()
                future.set_exception(SendError(str(exc), retryable=True))
            if not future.done():
                entry_id = entry.id
                future.add_done_callback(lambda f: tell(m.SendDone(generation, entry_id, f, number)))
                break
            # A link that died before the actor heard of it answers "not connected" at once:
            # not the message's fault, and no use trying the next one on it either.
            alive = conn.alive()
            outcomes.append(self.settle(entry.id, number, future, same_link=alive))
            if not outcomes[-1].next_may_go or not alive:
                break
        return outcomes

    def stalled(self, timeout: float) -> Outcome | None:
        """A send with no answer for `timeout` seconds is settled as unconfirmed (it may
        still be on its way: never handed over again); the next one may go."""
        if self._in_flight is None or time.monotonic() - self._in_flight_since <= timeout:
            return None
        entry_id = self._in_flight_entry
        self._in_flight = None
        return self._settle_unconfirmed(
            entry_id, f"WhatsApp did not answer within {timeout:g} s; the message may have been delivered "
                      "and is not resent")

    def settle(self, entry_id: str, dispatch: int, future: Future, *, same_link: bool) -> Outcome:
        """Record one answer. `same_link`: the connection that took the send is still the
        live one (a retryable error from a link that went away is not the message's fault)."""
        if self._in_flight == dispatch:
            self._in_flight = None
        error = future.exception()
        if error is None:
            message_id = future.result()
            was_pending = entry_id in self._outbox
            self._outbox.done(entry_id, message_id)
            self._resolve(entry_id, result=message_id)
            self.sent += was_pending
            if not was_pending and entry_id in self.recent_unconfirmed:
                # It was reported unconfirmed (no answer in time), and WhatsApp took it after all.
                log.info("a send reported unconfirmed was taken after all: %s -> %s", entry_id, message_id)
                return Outcome(sent=message_id, entry_id=entry_id, late=True)
            return Outcome(sent=message_id if was_pending else None, entry_id=entry_id)
        entry = self._outbox.get(entry_id)
        if entry is None:
            return Outcome(entry_id=entry_id)
        if is_unconfirmed(error):
            return self._settle_unconfirmed(entry_id, f"the outcome is unknown ({error}); "
                                                      "the message may have been delivered and is not resent")
        if error.retryable:
            self._outbox.returned(entry_id)        # provably nothing left: it may go again
            if not same_link:
                return Outcome(entry_id=entry_id)
            entry.attempts += 1
            if entry.attempts < SEND_RETRIES:
                return Outcome(retry_in=min(30.0, 2.0 ** entry.attempts), entry_id=entry_id)
        self._outbox.failed(entry_id, str(error))
        self._resolve(entry_id, error=error)
        return Outcome(failed=str(error), entry_id=entry_id)

    def _settle_unconfirmed(self, entry_id: str, reason: str) -> Outcome:
        if entry_id not in self._outbox:
            return Outcome(entry_id=entry_id)
        self._outbox.unconfirmed(entry_id, reason)
        self._resolve(entry_id, error=SendError(reason, retryable=False, unconfirmed=True))
        self.unconfirmed += 1
        self.recent_unconfirmed.append(entry_id)
        return Outcome(unconfirmed=reason, entry_id=entry_id)

    # ---- giving up ------------------------------------------------------------------------

    def discard(self, reason: str, state: str) -> list[str]:
        """Fail every pending send (the company is being deleted); their ids."""
        ids = [entry.id for entry in self._outbox.pending()]
        for entry_id in ids:
            self._outbox.failed(entry_id, reason)
            self._resolve(entry_id, error=SessionUnavailable(reason, state=state))
        self._in_flight = None
        return ids

    def close(self, state: str) -> None:
        """The actor is going: callers still waiting learn that their send stays queued."""
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(SessionUnavailable("session stopped; the send stays in the outbox", state=state))
        self._waiters.clear()
        self._outbox.close()

    # ---- helpers ---------------------------------------------------------------------------

    def _resolve(self, entry_id: str, *, result: str | None = None, error: BaseException | None = None) -> None:
        waiter = self._waiters.pop(entry_id, None)
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(result)
        else:
            waiter.set_exception(error)

    def _receipt_for(self, known: KeyedResult, phone: str) -> SendReceipt:
        receipt = SendReceipt(id=known.id, to=phone, queued=known.message_id is None and known.error is None,
                              message_id=known.message_id)
        if known.message_id is not None:
            receipt.delivered.set_result(known.message_id)
        elif known.error is not None:
            receipt.delivered.set_exception(SendError(known.error, retryable=False, unconfirmed=known.unconfirmed))
        elif known.id in self._waiters:
            receipt.delivered = self._waiters[known.id]
        return receipt


def whatsapp_id(entry_id: str) -> str:
    """The WhatsApp message id of an outbox entry, the same on every attempt (whatsmeow's
    shape: 3EB0 and 18 upper-case hex digits): a send repeated after a crash, before its
    outcome was recorded, is the same message to WhatsApp, not a second one."""
    return "3EB0" + entry_id.replace("-", "")[:18].upper()
