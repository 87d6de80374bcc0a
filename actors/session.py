"""SessionActor: one per company; owns its connection, limiter, backoff and outbox.

Everything that changes the session's state arrives as a message in the mailbox:
public methods (asked through proxies), connection events (told by the connection's
threads, tagged with the connection's generation), and timers (told by the shared
scheduler, tagged so a timer from before a later state change is ignored).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import random
import time
import traceback
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import pykka

from .backoff import BackoffPolicy
from .connection import (Connected, Connection, ConnectFailure, Disconnected, IncomingMessage, LoggedOut,
                         Paired, QrCode, QrExhausted, Receipt, Replaced, SendError, TemporaryBan, Transport)
from .inbound import SeenIds
from .outbox import Outbox, OutboxEntry, fingerprint
from .payload import Text
from .phone import InvalidInput, normalize_phone, phone_to_jid, validate_company_id
from .ratelimit import RateLimit, SlidingWindowLimiter
from .scheduler import Scheduler

log = logging.getLogger(__name__)

STATES = ("stopped", "starting", "qr", "connected", "reconnecting", "failed", "logged_out", "conflict", "banned")
# States from which the session comes back by itself: a send is queued, not refused.
RECOVERING = ("starting", "reconnecting")
# States a session stays in until someone acts; remembered across actor restarts.
RESTING = ("stopped", "failed", "logged_out", "conflict")
MAX_TEXT = 65536
SEND_RETRIES = 5


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    backoff: BackoffPolicy = BackoffPolicy()
    rate_limit: RateLimit = RateLimit()
    health_interval: float = 30.0      # seconds between health ticks
    connect_timeout: float = 90.0      # `starting` longer than this counts as a failed attempt
    logout_timeout: float = 10.0
    fsync: bool = False                # fsync every outbox write (survive power loss, slower)
    max_queued: int = 1000             # pending sends per company before new ones are refused
    send_timeout: float = 60.0         # a send with no answer this long is tried again


@dataclasses.dataclass
class SessionContext:
    """What every session actor of one gateway shares."""
    data_dir: Path
    transport: Transport
    scheduler: Scheduler
    settings: SessionSettings
    publish: Callable[[str, str, dict[str, Any]], None]          # (company_id, kind, data)
    snapshots: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # company id -> since when its actor is handling a message (absent while idle)
    busy_since: dict[str, float] = dataclasses.field(default_factory=dict)
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    # company id, limits -> limiter; in-memory unless Redis is configured
    limiter_factory: Callable[[str, RateLimit], Any] | None = None

    def make_limiter(self, company_id: str) -> Any:
        if self.limiter_factory is None:
            return SlidingWindowLimiter(self.settings.rate_limit)
        return self.limiter_factory(company_id, self.settings.rate_limit)

    def company_dir(self, company_id: str) -> Path:
        return self.data_dir / validate_company_id(company_id)


class SessionUnavailable(Exception):
    """The session cannot take this request in its current state (HTTP 409)."""

    def __init__(self, message: str, *, state: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.retry_after_ms = retry_after_ms


class OutboxUnavailable(Exception):
    """The outbox could not store the send durably (disk full, I/O error): nothing accepted."""


@dataclasses.dataclass
class SendReceipt:
    id: str
    to: str
    queued: bool
    message_id: str | None = None
    delivered: Future = dataclasses.field(default_factory=Future, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.to, "queued": self.queued, "messageId": self.message_id,
                "status": "sent" if self.message_id else "queued"}


# ---- mailbox messages ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConnEvent:
    generation: int
    event: Any


@dataclasses.dataclass(frozen=True)
class TimerFired:
    kind: str      # retry | ban_end | stable | health | pump | logout
    token: int


@dataclasses.dataclass(frozen=True)
class SendDone:
    generation: int
    entry_id: str
    future: Future
    dispatch: int = 0         # which hand-over of the entry this answers


@dataclasses.dataclass(frozen=True)
class InjectedCrash:
    """Chaos tool: the actor raises while handling it, as a bug would."""
    reason: str = "injected crash"


@dataclasses.dataclass(frozen=True)
class ChildExit:
    """Told to the supervisor when a session actor stops, normally or not."""
    company_id: str
    urn: str
    normal: bool
    reason: str
    traceback: str | None = None


class OwnershipLock:
    """An exclusive flock on `<company dir>/owner.lock`: one connection per company per host.

    flock conflicts between two open files even inside one process, so a restarted
    actor cannot connect while its crashed predecessor still holds the company.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SessionActor(pykka.ThreadingActor):
    def __init__(self, company_id: str, ctx: SessionContext, *, supervisor: pykka.ActorRef | None = None,
                 parked_reason: str | None = None, start_delay: float = 0.0) -> None:
        super().__init__()
        self.company_id = validate_company_id(company_id)
        self._ctx = ctx
        self._settings = ctx.settings
        self._supervisor = supervisor
        self._parked_reason = parked_reason
        self._start_delay = start_delay
        self._dir = ctx.company_dir(company_id)
        self._state = "stopped"
        self._last_error: str | None = None
        self._phone: str | None = None
        self._connected_at: float | None = None
        self._attempts = 0
        self._next_retry_at: float | None = None
        self._qr: QrCode | None = None
        self._qr_expires_at: float | None = None
        self._conn: Connection | None = None
        self._gen = 0
        self._timer_token = 0
        self._opened_at = 0.0
        self._in_flight: int | None = None           # the dispatch awaiting its answer
        self._in_flight_since = 0.0
        self._waiters: dict[str, Future] = {}
        self._sent = 0
        self._received = 0
        self._reconnects: dict[str, int] = {}
        self._exit_reported = False
        self._logging_out = False
        self._dispatches = 0
        self._health_token = 0
        self._limiter = ctx.make_limiter(self.company_id)
        self._lock: OwnershipLock | None = None
        self._outbox: Outbox | None = None
        self._seen: SeenIds | None = None

    # ---- lifecycle of the actor itself ------------------------------------------------

    def on_start(self) -> None:
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock = OwnershipLock(self._dir / "owner.lock")
            self._outbox = Outbox(self._dir / "outbox.jsonl", fsync=self._settings.fsync)
            self._seen = SeenIds(self._dir / "inbound-seen.jsonl")
            saved = self._load_saved()
            self._phone = saved.get("phone")
            if self._parked_reason:
                self._enter("failed", self._parked_reason)
            elif saved.get("desired") == "running" and self._start_delay > 0:
                # After a gateway restart sessions connect one after another, not all at once.
                self._timer_token += 1
                self._next_retry_at = time.time() + self._start_delay
                self._enter("reconnecting", "waiting for its turn to connect after a restart")
                self._ctx.scheduler.call_later(self._start_delay, self._tell, TimerFired("retry", self._timer_token))
            elif saved.get("desired") == "running":
                self._open()
            elif saved.get("state") in RESTING:
                # A restarted actor still knows why it is down (conflict, logged out, ...).
                self._state, self._last_error = saved["state"], saved.get("lastError")
                self._publish_snapshot()
            else:
                self._publish_snapshot()
            self._schedule_health()
        except Exception as exc:   # pykka skips on_failure when on_start raises
            self._release()
            self._report(False, f"start failed: {exc!r}", traceback.format_exc())
            raise

    def on_stop(self) -> None:
        self._release()
        self._report(True, "stopped")

    def on_failure(self, exc_type, exc, tb) -> None:
        self._release()
        self._report(False, repr(exc), "".join(traceback.format_exception(exc_type, exc, tb)))

    def _release(self) -> None:
        """Close the connection before the lock: nobody may connect while ours lives."""
        self._close_conn()
        if self._lock is not None:
            self._lock.release()
        if self._outbox is not None:
            self._outbox.close()
        if self._seen is not None:
            self._seen.close()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(SessionUnavailable("session stopped; the send stays in the outbox",
                                                        state=self._state))
        self._waiters.clear()

    def _report(self, normal: bool, reason: str, tb: str | None = None) -> None:
        if self._exit_reported or self._supervisor is None:
            return
        self._exit_reported = True
        try:
            self._supervisor.tell(ChildExit(self.company_id, self.actor_urn, normal, reason, tb))
        except pykka.ActorDeadError:
            pass

    # ---- public API (called through proxies; each runs inside the actor) ---------------

    # start/stop would shadow pykka's Actor.start/stop; handles expose them under those names.
    def start_session(self) -> dict[str, Any]:
        """Connect with stored credentials, or show a QR code. Idempotent."""
        self._save(desired="running")
        if self._state in RESTING:        # banned waits for its timer; reconnect overrides it
            self._attempts = 0
            self._open()
        return self.status()

    def stop_session(self) -> dict[str, Any]:
        """Close the connection and stay stopped; credentials and outbox are kept."""
        self._save(desired="stopped")
        if self._logging_out:
            self._finish_logout("logged out by request")
        self._close_conn()
        self._cancel_timers()
        self._next_retry_at = None
        if self._state != "logged_out":
            self._enter("stopped", None)
        self._release_ownership()
        return self.status()

    def reconnect(self) -> dict[str, Any]:
        """Operator action: drop whatever is there and connect now, attempts reset."""
        self._save(desired="running")
        self._attempts = 0
        self._open()
        return self.status()

    def logout(self) -> dict[str, Any]:
        """Unlink the device on WhatsApp's side and delete the credentials."""
        self._save(desired="stopped")
        conn = self._conn
        if conn is not None and self._state == "connected":
            # Until WhatsApp confirms (or the timeout), any event or request finishes the logout.
            self._logging_out = True
            self._cancel_timers()
            conn.logout().add_done_callback(lambda _f: self._tell(TimerFired("logout", 0)))
            self._ctx.scheduler.call_later(self._settings.logout_timeout, self._tell, TimerFired("logout", 0))
            self._enter("logged_out", "logged out by request")
        else:
            self._finish_logout("logged out by request")
        return self.status()

    def send(self, to: str, text: str, idempotency_key: str | None = None) -> SendReceipt:
        phone = normalize_phone(to)
        text = Text.of(text).text         # the one check of a message's text (HTTP checks only its JSON type)
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 200):
            raise InvalidInput("Idempotency-Key must be 1-200 characters")
        if idempotency_key:
            known = self._outbox.by_key(idempotency_key)
            if known is not None:
                if known.fingerprint not in (None, fingerprint(phone, text)):
                    raise InvalidInput("this Idempotency-Key was used for a different message; "
                                       "use a new key for a new message")
                return self._receipt_for_known(known, phone)
        if self._state != "connected" and self._state not in RECOVERING:
            raise SessionUnavailable(self._refusal(), state=self._state, retry_after_ms=self._retry_after_ms())
        if len(self._outbox) >= self._settings.max_queued:
            raise SessionUnavailable(f"outbox full: {len(self._outbox)} messages wait for the connection",
                                     state=self._state, retry_after_ms=5000)
        self._limiter.acquire(phone)
        entry = OutboxEntry(id=Outbox.new_id(), to=phone, jid=phone_to_jid(phone), text=text, key=idempotency_key)
        try:
            self._outbox.add(entry)
        except OSError as exc:
            raise OutboxUnavailable(f"could not store the message: {exc.strerror or exc}") from exc
        receipt = SendReceipt(id=entry.id, to=phone, queued=self._state != "connected")
        self._waiters[entry.id] = receipt.delivered
        self._pump()
        self._publish_snapshot()
        return receipt

    def discard_outbox(self, reason: str) -> int:
        """Give up every pending send (the company is being deleted); each is reported
        as message.failed and its receipt fails with `reason`."""
        pending = self._outbox.pending()
        for entry in pending:
            self._outbox.failed(entry.id, reason)
            self._ctx.publish(self.company_id, "message.failed", {"id": entry.id, "error": reason})
            waiter = self._waiters.pop(entry.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(SessionUnavailable(reason, state=self._state))
        self._in_flight = None
        self._publish_snapshot()
        return len(pending)

    def pair_phone(self, phone: str) -> Future:
        """Ask for an 8-character pairing code for `phone` (instead of scanning the QR)."""
        normalized = normalize_phone(phone)
        if self._state != "qr" or self._conn is None:
            raise SessionUnavailable("a pairing code needs a session waiting for a QR scan; start it first",
                                     state=self._state)
        return self._conn.pair_phone(normalized)

    def status(self) -> dict[str, Any]:
        return {
            "companyId": self.company_id,
            "status": self._state,
            "connected": self._state == "connected",
            "phoneNumber": f"+{self._phone}" if self._phone else None,
            "connectedAt": iso(self._connected_at) if self._state == "connected" else None,
            "lastError": self._last_error,
            "reconnectAttempts": self._attempts,
            "nextRetryAt": iso(self._next_retry_at),
            "qrAvailable": self._state == "qr" and self._qr is not None,
            "queued": len(self._outbox) if self._outbox is not None else 0,
            "messagesSent": self._sent,
            "messagesReceived": self._received,
        }

    def qr(self) -> dict[str, Any] | None:
        if self._state != "qr" or self._qr is None:
            return None
        return {"code": self._qr.code, "expiresAt": iso(self._qr_expires_at)}

    def diagnostics(self) -> dict[str, Any]:
        """Status plus what an operator needs to judge the session's health."""
        return {**self.status(), "transport": self._ctx.transport.name,
                "connectionAlive": bool(self._conn is not None and self._conn.alive()),
                "reconnectsByReason": dict(self._reconnects),
                "ownershipLockHeld": bool(self._lock and self._lock.held),
                "connectedForSeconds": (round(time.time() - self._connected_at, 1)
                                        if self._state == "connected" and self._connected_at else None)}

    def _handle_receive(self, message: Any) -> Any:
        # Every message, proxy calls included, passes here: mark the actor busy so that
        # readers of its published snapshot can tell an idle actor from a stuck one.
        self._ctx.busy_since[self.company_id] = time.monotonic()
        try:
            return super()._handle_receive(message)
        finally:
            self._ctx.busy_since.pop(self.company_id, None)

    # ---- messages that are not proxy calls -----------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ConnEvent):
            if isinstance(message.event, (IncomingMessage, Receipt)):
                # Whatever a closing connection still received is real traffic: keep it
                # (duplicates are dropped by message id).
                self._on_connection_event(message.event)
            elif message.generation == self._gen and self._conn is not None:
                self._on_connection_event(message.event)
        elif isinstance(message, SendDone):
            if self._on_send_done(message):
                self._pump()
        elif isinstance(message, TimerFired):
            self._on_timer(message)
        elif isinstance(message, InjectedCrash):
            raise RuntimeError(message.reason)
        self._publish_snapshot()
        return None

    # ---- connection events: the policy table of the design ---------------------------

    def _on_connection_event(self, event: Any) -> None:
        if self._logging_out and not isinstance(event, (IncomingMessage, Receipt)):
            self._finish_logout(self._last_error or "logged out by request")
            return
        if isinstance(event, IncomingMessage):
            self._on_incoming(event)
        elif isinstance(event, Receipt):
            self._ctx.publish(self.company_id, "receipt", {"messageIds": list(event.message_ids),
                                                          "chat": event.chat, "receipt": event.kind})
        elif isinstance(event, QrCode):
            self._qr, self._qr_expires_at = event, time.time() + event.expires_in
            self._enter("qr", None)
            self._ctx.publish(self.company_id, "qr", {"code": event.code, "expiresAt": iso(self._qr_expires_at)})
        elif isinstance(event, Paired):
            self._phone = event.phone
            self._save(phone=event.phone)
            self._ctx.publish(self.company_id, "paired", {"phone": event.phone})
        elif isinstance(event, Connected):
            if event.phone and event.phone != self._phone:
                self._phone = event.phone
                self._save(phone=event.phone)
            self._qr = None
            self._connected_at = time.time()
            self._next_retry_at = None
            self._enter("connected", None)
            self._ctx.scheduler.call_later(self._settings.backoff.stable_after, self._tell,
                                           TimerFired("stable", self._gen))
            self._pump()
        elif isinstance(event, (Disconnected, ConnectFailure)):
            self._close_conn()
            if event.retryable:
                self._schedule_retry(event.reason)
            else:
                self._give_up(event.reason)
        elif isinstance(event, LoggedOut):
            self._save(desired="stopped")
            self._finish_logout(f"logged out: {event.reason}")
        elif isinstance(event, Replaced):
            self._close_conn()
            self._save(desired="stopped")
            self._enter("conflict", f"conflict: {event.reason}; not reconnecting (use reconnect to take over)")
            self._release_ownership()
        elif isinstance(event, TemporaryBan):
            self._close_conn()
            self._timer_token += 1
            # A ban with no (or a zero) expiry must not turn into a reconnect loop.
            policy = self._settings.backoff
            delay = max(event.expires_in if event.expires_in > 0 else policy.cap, policy.base)
            self._next_retry_at = time.time() + delay
            self._enter("banned", f"temporarily banned ({event.reason}) for {delay:g} s")
            self._ctx.scheduler.call_later(delay, self._tell, TimerFired("ban_end", self._timer_token))
        elif isinstance(event, QrExhausted):
            self._close_conn()
            self._save(desired="stopped")
            self._enter("stopped", "QR expired")
            self._release_ownership()

    def _on_incoming(self, message: IncomingMessage) -> None:
        if not self._seen.add(message.id):
            return
        self._received += 1
        self._ctx.publish(self.company_id, "message", {
            "id": message.id, "chat": message.chat, "phone": message.phone, "pushName": message.push_name,
            "text": message.text, "timestamp": message.timestamp, "isGroup": message.is_group})

    # ---- connecting, retrying, giving up ---------------------------------------------------

    def _open(self) -> None:
        if self._logging_out:
            self._finish_logout("logged out by request")
        self._close_conn()
        self._cancel_timers()
        if not self._lock.acquire():
            # Another gateway, or the actor before us still closing its connection.
            self._schedule_retry("another process holds this company (owner.lock); not connecting yet")
            return
        self._gen += 1
        gen = self._gen
        self._next_retry_at = None
        self._opened_at = time.monotonic()
        self._enter("starting", self._last_error if self._state == "reconnecting" else None)
        try:
            self._conn = self._ctx.transport.connect(self.company_id, self._dir,
                                                     lambda event: self._tell(ConnEvent(gen, event)))
            self._conn.open()
        except Exception as exc:
            log.exception("[%s] opening the connection failed", self.company_id)
            self._close_conn()
            self._schedule_retry(f"could not open the connection: {exc}")

    def _schedule_retry(self, reason: str) -> None:
        self._reconnects[_reason_kind(reason)] = self._reconnects.get(_reason_kind(reason), 0) + 1
        policy = self._settings.backoff
        if self._attempts >= policy.max_attempts:
            self._give_up(f"gave up after {self._attempts} reconnect attempts; last error: {reason}")
            return
        delay = policy.delay(self._attempts, self._ctx.rng)
        self._attempts += 1
        self._timer_token += 1
        self._next_retry_at = time.time() + delay
        self._enter("reconnecting", reason)
        self._ctx.scheduler.call_later(delay, self._tell, TimerFired("retry", self._timer_token))

    def _give_up(self, reason: str) -> None:
        self._save(desired="stopped")     # an operator decides; a restart must not retry it
        self._close_conn()
        self._cancel_timers()
        self._next_retry_at = None
        self._enter("failed", reason)
        self._release_ownership()

    def _finish_logout(self, reason: str) -> None:
        self._logging_out = False
        self._close_conn()
        self._cancel_timers()
        self._ctx.transport.forget(self.company_id, self._dir)
        self._phone = None
        self._save(phone=None)
        self._next_retry_at = None
        self._enter("logged_out", reason)
        self._release_ownership()

    def _on_timer(self, timer: TimerFired) -> None:
        if timer.kind == "health":
            if timer.token == self._health_token:
                self._health_check()
                self._schedule_health()
        elif timer.kind == "stable":
            if timer.token == self._gen and self._state == "connected":
                self._attempts = 0
        elif timer.kind == "pump":
            if timer.token == self._gen:
                self._pump()
        elif timer.kind == "logout":
            if self._logging_out:
                self._finish_logout(self._last_error or "logged out by request")
        elif timer.token != self._timer_token:
            return   # stale: the state changed after this timer was set
        elif timer.kind == "retry" and self._state == "reconnecting":
            self._open()
        elif timer.kind == "ban_end" and self._state == "banned":
            self._open()

    def _schedule_health(self) -> None:
        self._health_token += 1
        self._ctx.scheduler.call_later(self._settings.health_interval, self._tell,
                                       TimerFired("health", self._health_token))

    def _health_check(self) -> None:
        """Reconcile the state with the connection, so "connected" is never a ghost."""
        if self._state == "connected" and (self._conn is None or not self._conn.alive()):
            self._close_conn()
            self._schedule_retry("connection lost (found by health check)")
        elif self._state == "starting" and time.monotonic() - self._opened_at > self._settings.connect_timeout:
            self._close_conn()
            self._schedule_retry(f"connect timed out after {self._settings.connect_timeout:g} s")
        elif self._state == "connected" and self._outbox:
            if self._in_flight is not None and time.monotonic() - self._in_flight_since > self._settings.send_timeout:
                log.warning("[%s] send %s got no answer in %g s; trying again", self.company_id, self._in_flight,
                            self._settings.send_timeout)
                self._in_flight = None
            self._pump()

    def _cancel_timers(self) -> None:
        self._timer_token += 1

    def _close_conn(self) -> None:
        # _in_flight stays: that send may still succeed, and sending it again on the next
        # connection would deliver it twice. Its future always resolves (or times out).
        conn, self._conn = self._conn, None
        self._qr = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.exception("[%s] closing the connection failed", self.company_id)

    def _release_ownership(self) -> None:
        if self._lock is not None and self._conn is None:
            self._lock.release()

    # ---- sending -------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand the oldest pending send to the connection; one in flight keeps the order."""
        while self._state == "connected" and self._in_flight is None and self._conn is not None:
            entry = self._outbox.head()
            if entry is None:
                return
            self._dispatches += 1
            self._in_flight, self._in_flight_since = self._dispatches, time.monotonic()
            gen, entry_id, dispatch = self._gen, entry.id, self._dispatches
            try:
                future = self._conn.send_text(entry.jid, entry.text)
            except Exception as exc:
                future = Future()
                future.set_exception(SendError(str(exc), retryable=True))
            if not future.done():
                future.add_done_callback(lambda f: self._tell(SendDone(gen, entry_id, f, dispatch)))
                return
            # Answered at once: settle it now instead of a round trip through the mailbox.
            if not self._on_send_done(SendDone(gen, entry_id, future, dispatch)):
                return

    def _on_send_done(self, done: SendDone) -> bool:
        """Record a send's outcome. True when the next send may go now."""
        if self._in_flight == done.dispatch:
            self._in_flight = None
        error = done.future.exception()
        waiter = self._waiters.get(done.entry_id)
        if error is None:
            message_id = done.future.result()
            if done.entry_id in self._outbox:
                self._outbox.done(done.entry_id, message_id)
                self._sent += 1
                self._ctx.publish(self.company_id, "message.sent", {"id": done.entry_id, "messageId": message_id})
            if waiter is not None:
                del self._waiters[done.entry_id]
                if not waiter.done():
                    waiter.set_result(message_id)
            return True
        entry = self._outbox.get(done.entry_id)
        if entry is None:
            return True
        retryable = getattr(error, "retryable", True)
        if retryable and (done.generation != self._gen or self._state != "connected"):
            return True               # the connection went away under it: not the message's fault
        entry.attempts += 1
        if retryable and entry.attempts < SEND_RETRIES:
            self._ctx.scheduler.call_later(min(30.0, 2.0 ** entry.attempts), self._tell,
                                           TimerFired("pump", self._gen))
            return False
        self._outbox.failed(entry.id, str(error))
        self._ctx.publish(self.company_id, "message.failed", {"id": entry.id, "error": str(error)})
        if waiter is not None:
            del self._waiters[entry.id]
            if not waiter.done():
                waiter.set_exception(error)
        return True

    def _receipt_for_known(self, known, phone: str) -> SendReceipt:
        receipt = SendReceipt(id=known.id, to=phone, queued=known.message_id is None and known.error is None,
                              message_id=known.message_id)
        if known.message_id is not None:
            receipt.delivered.set_result(known.message_id)
        elif known.error is not None:
            receipt.delivered.set_exception(SendError(known.error, retryable=False))
        elif known.id in self._waiters:
            receipt.delivered = self._waiters[known.id]
        return receipt

    def _refusal(self) -> str:
        return {
            "stopped": "session is stopped; start it first",
            "qr": "session is not linked yet; scan the QR code first",
            "failed": f"session failed ({self._last_error}); reconnect it first",
            "logged_out": "the phone unlinked this session; start it and scan a new QR code",
            "conflict": "another client took over this WhatsApp account; reconnect to take it back",
            "banned": "WhatsApp temporarily banned this account",
        }.get(self._state, f"session is {self._state}")

    def _retry_after_ms(self) -> int | None:
        if self._state == "banned" and self._next_retry_at:
            return max(1, int((self._next_retry_at - time.time()) * 1000))
        return None

    # ---- helpers ---------------------------------------------------------------------------

    def _tell(self, message: Any) -> None:
        """The only way other threads reach this actor."""
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass

    def _enter(self, state: str, error: str | None) -> None:
        previous = self._state
        self._state = state
        self._last_error = error
        if state != "connected":
            self._connected_at = None if state != "reconnecting" else self._connected_at
        if state in RESTING:
            self._save(state=state, lastError=error)
        self._publish_snapshot()     # before the event, so a woken subscriber sees the new state
        if previous != state or state in ("reconnecting", "failed"):
            self._ctx.publish(self.company_id, "state", {"state": state, "previous": previous, "error": error,
                                                        "attempt": self._attempts,
                                                        "nextRetryAt": iso(self._next_retry_at)})

    def _publish_snapshot(self) -> None:
        self._ctx.snapshots[self.company_id] = self.status()

    def _load_saved(self) -> dict[str, Any]:
        try:
            data = json.loads((self._dir / "session.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, **changes: Any) -> None:
        data = self._load_saved()
        if all(data.get(k) == v for k, v in changes.items()):
            return
        data.update(changes)
        tmp = self._dir / "session.json.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self._dir / "session.json")
        except OSError:
            log.exception("[%s] could not save session.json", self.company_id)


def _reason_kind(reason: str) -> str:
    """A short, bounded label for metrics: the reason text without its details."""
    text = reason.lower()
    for kind in ("refused", "dropped", "timed out", "health check", "process exited", "could not open",
                 "unreachable", "lookup", "dial"):
        if kind in text:
            return kind.replace(" ", "_")
    return "other"
