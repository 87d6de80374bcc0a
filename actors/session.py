"""SessionActor: one per company, a thin mailbox shell over the parts it owns.

Everything that changes the session arrives as a message (actors/messages.py) and is
dispatched through one table: commands asked by session handles, connection events
(tagged with the connection's generation), connection closes, send outcomes, timers.
What to do with a connection signal is the policy table (lifecycle.py); sends are kept
by the send queue (sending.py); the right to connect is the Ownership (ownership.py);
what survives the actor is the record (record.py); readers see the status board
(status.py); what the connection's signals mean is link_events.py; linking a phone is
pairing.py; what a stopping actor still hears from its closing connection is late.py.
Nothing here blocks on the network: opening and closing a connection return at once,
and a new connection opens only once the previous one is gone.
"""
from __future__ import annotations

import itertools
import logging
import shutil
import time
import traceback
from concurrent.futures import Future
from typing import Any, Callable

import pykka

from . import messages as m
from .connection import Cause, Interrupted
from .connector import Connector, Opening
from .context import SessionContext
from .errors import SessionUnavailable
from .inbound import Inbound
from .kinds import EventKind
from .late import LateMail
from .lifecycle import RESTING, accepts_sends, refusal
from .messages import tell_quietly
from .link_events import LinkEvents
from .pairing import Pairing
from .payload import Text
from .phone import normalize_phone, validate_company_id
from .record import SessionRecord
from .retries import Retries
from .outbox import INTERRUPTED_SEND
from .sending import Outcome, SendQueue, check_key
from .state import SessionState
from .statuses import MessageStatuses
from .identities import Identities, complete
from .recipients import parse_recipient

log = logging.getLogger(__name__)

_STATUS = object()       # a command's answer: the status as published after it
_NOT_TOLD = ("logged out here only: WhatsApp was not told ({why}); the phone may still list this device "
             "under Linked devices: remove it there")


class SessionActor(LinkEvents, pykka.ThreadingActor):
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
        self._retries = Retries(ctx.settings.backoff, ctx.scheduler, ctx.rng, self._tell)
        self._s = SessionState(self.company_id, ctx.status_board,
                               lambda kind, data: ctx.publish(self.company_id, kind, data), self._retries)
        self._link = Connector(self.company_id, self._dir, ctx.transport, ctx.make_ownership(self.company_id, self._dir),
                               self._tell)
        self._health_tickets = itertools.count(1)
        self._health_ticket = 0
        self._pairing = Pairing(ctx.settings, ctx.scheduler, self._tell)
        self._late = LateMail(self.company_id)
        self._graces = itertools.count(1)
        self._interrupted: tuple[int, Interrupted, float] | None = None    # (grace ticket, event, grace)
        self._exit_reported = False
        self._logging_out = False
        self._limiter = ctx.make_limiter(self.company_id)
        self._queue: SendQueue | None = None
        self._inbound: Inbound | None = None
        self._record: SessionRecord | None = None
        self._statuses: MessageStatuses | None = None
        self._identities: Identities | None = None

    # ---- the actor's own lifecycle ---------------------------------------------------------

    def on_start(self) -> None:
        created = not self._dir.exists()
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._s.queue = self._queue = SendQueue(self._dir / "outbox.jsonl", fsync=self._settings.fsync,
                                                    max_queued=self._settings.max_queued,
                                                    keys_kept=self._settings.idempotency_keys,
                                                    resend_interrupted=getattr(self._ctx.transport,
                                                                               "pins_message_ids", False),
                                                    journal=self._ctx.make_outbox_journal(self.company_id,
                                                                                          self._link.owner))
            self._s.inbound = self._inbound = Inbound(
                self._dir, lambda kind, data: self._ctx.publish(self.company_id, kind, data))
            self._s.record = self._record = record = self._ctx.make_record(self.company_id, self._dir,
                                                                                  self._link.owner)
            self._statuses = MessageStatuses(self._dir / "message-status.jsonl",
                                             lambda kind, data: self._ctx.publish(self.company_id, kind, data))
            self._identities = Identities(self._dir / "identities.jsonl")
            self._s.phone = record.phone
            for entry_id in self._queue.recovered_unconfirmed:
                self._publish_outcome(Outcome(unconfirmed=INTERRUPTED_SEND, entry_id=entry_id))
            if self._parked_reason:
                self._enter("failed", self._parked_reason)
            elif record.desired == "running" and self._start_delay > 0:
                # After a gateway restart sessions connect one after another, not all at once.
                self._retries.retry_in(self._start_delay)
                self._enter("reconnecting", "waiting for its turn to connect after a restart")
            elif record.desired == "running":
                self._open()
            elif record.state in RESTING:
                # A restarted actor still knows why it is down (conflict, logged out, ...).
                self._s.state, self._s.error = record.state, record.last_error
            self._s.show(self.actor_urn)
            self._schedule_health()
        except Exception as exc:   # pykka skips on_failure when on_start raises
            self._release()
            if created:            # a company that never got going leaves no half-made directory
                shutil.rmtree(self._dir, ignore_errors=True)
            self._report_exit(False, f"start failed: {exc!r}", traceback.format_exc())
            raise

    def on_stop(self) -> None:
        # Stopped (not crashed): its files may be deleted next, so the link must be gone first.
        # Until it is, what it still emits is real traffic that WhatsApp will not send again.
        self._pairing.cancel(SessionUnavailable("session stopped", state=self._s.state))
        self._link.close()
        self._late.drain(self.actor_inbox, self._link.closing(), self._settings.close_wait, self._on_late)
        self._release()
        self._report_exit(True, "stopped")

    def on_failure(self, exc_type, exc, tb) -> None:
        self._late.close()        # a crashed actor does not wait: what its link still emits is dropped, logged
        self._release()
        self._report_exit(False, repr(exc), "".join(traceback.format_exception(exc_type, exc, tb)))

    def _release(self, wait: float = 0.0) -> None:
        """Let go of everything; ownership only once every connection of ours is gone."""
        self._s.qr = None
        self._link.shutdown(wait)
        self._ctx.status_board.end(self.company_id, self.actor_urn)
        if self._queue is not None:
            self._queue.close(self._s.state)
        if self._inbound is not None:
            self._inbound.close()
        if self._statuses is not None:
            self._statuses.close()
        if self._identities is not None:
            self._identities.close()

    def _report_exit(self, normal: bool, reason: str, tb: str | None = None) -> None:
        if self._exit_reported or self._supervisor is None:
            return
        self._exit_reported = True
        tell_quietly(self._supervisor, m.ChildExit(self.company_id, self.actor_urn, normal, reason, tb))

    # ---- the mailbox -----------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        board = self._ctx.status_board
        board.begin(self.company_id, self.actor_urn)
        try:
            handler = _HANDLERS.get(type(message))
            if handler is None:
                raise TypeError(f"{self.company_id}: unknown message {message!r}")
            result = handler(self, message)
            if not isinstance(message, m.QUERIES):
                self._s.show(self.actor_urn)     # before the reply: a caller reads its own writes
            return self._s.published if result is _STATUS else result
        finally:
            board.end(self.company_id, self.actor_urn)

    def _crash(self, crash: m.InjectedCrash) -> None:
        raise RuntimeError(crash.reason)

    def _on_logout_due(self, due: m.LogoutDue) -> None:
        if self._logging_out:
            self._finish_logout(_NOT_TOLD.format(why=due.error) if due.error else
                                (self._s.error or "logged out by request"))

    # ---- commands ---------------------------------------------------------------------------

    def _do_start(self, _cmd: m.Start) -> object:
        self._record.update(desired="running")
        if self._s.state in RESTING:        # banned waits for its timer; reconnect overrides it
            self._retries.reset()
            self._open()
        return _STATUS

    def _do_stop(self, _cmd: m.Stop) -> object:
        self._record.update(desired="stopped")
        if self._logging_out:
            self._finish_logout("logged out by request")
        self._close_conn()
        self._cancel_timers()
        if self._s.state != "logged_out":
            self._enter("stopped", None)
        self._link.release_if_idle()
        return _STATUS

    def _do_reconnect(self, _cmd: m.Reconnect) -> object:
        self._record.update(desired="running")
        self._retries.reset()
        self._open()
        return _STATUS

    def _do_logout(self, _cmd: m.Logout) -> object:
        self._record.update(desired="stopped")
        conn = self._link.conn
        if conn is not None and self._s.state == "connected":
            # Until WhatsApp confirms (or the timeout), any event or request finishes the logout.
            self._logging_out = True
            self._cancel_timers()
            conn.logout().add_done_callback(lambda f: self._tell(m.LogoutDue(_logout_error(f))))
            self._ctx.scheduler.call_later(
                self._settings.logout_timeout, self._tell,
                m.LogoutDue(f"it did not confirm within {self._settings.logout_timeout:g} s"))
            self._enter("logged_out", "logged out by request")
        elif self._s.phone:
            # Not connected: only the local credentials can go; the phone still lists the device.
            self._finish_logout(_NOT_TOLD.format(why=f"the session was {self._s.state}"))
        else:
            self._finish_logout("logged out by request")
        return _STATUS

    def _do_send(self, cmd: m.Send) -> Any:
        recipient = parse_recipient(cmd.to)      # a phone number or a group (issue 13)
        phone = recipient.to
        payload = cmd.message if not isinstance(cmd.message, str) else Text.of(cmd.message)
        key = check_key(cmd.idempotency_key)
        known = self._queue.known(phone, payload, key)
        if known is not None:
            known.lid = self._lid_of(recipient)
            return known
        if not accepts_sends(self._s.state):
            raise SessionUnavailable(refusal(self._s.state, self._s.error), state=self._s.state,
                                     retry_after_ms=self._retries.retry_after_ms() if self._s.state == "banned" else None)
        self._queue.check_room(self._s.state)
        self._limiter.acquire(phone)
        receipt = self._queue.accept(phone, payload, key, connected=self._s.state == "connected", jid=recipient.jid)
        receipt.lid = self._lid_of(recipient)
        self._statuses.queued(receipt.id, phone)
        self._pump()
        return receipt

    def _do_discard_outbox(self, cmd: m.DiscardOutbox) -> int:
        ids = self._queue.discard(cmd.reason, self._s.state)
        for entry_id in ids:
            self._statuses.failed(entry_id, cmd.reason)
            self._ctx.publish(self.company_id, EventKind.FAILED, {"id": entry_id, "error": cmd.reason})
        return len(ids)

    def _do_pair_phone(self, cmd: m.PairPhone) -> Future:
        """A future of a PairingCodeAnswer (pairing.py): from this QR session while it is young, else from a fresh one."""
        phone = normalize_phone(cmd.phone)
        if self._s.state != "qr" or self._link.conn is None:
            raise SessionUnavailable("a pairing code needs a session waiting for a QR scan; start it first",
                                     state=self._s.state)
        if self._pairing.window_is_fresh(self._link.generation):
            return self._pairing.request(self._link.conn, phone)
        result = self._pairing.wait_for_fresh_window(phone)
        self._open()          # the code is asked for on the new session's first QR code
        return result

    def status(self) -> dict[str, Any]:
        """The status as last shown: current between messages (every handler shows its change)."""
        return self._s.published

    def diagnostics(self) -> dict[str, Any]:
        """Status plus what an operator needs to judge the session's health."""
        return {**self.status(), "transport": self._ctx.transport.name,
                "connectionAlive": self._link.alive(),
                "reconnectsByReason": dict(self._retries.by_cause),
                "ownershipLockHeld": self._link.owner.held,
                "connectedForSeconds": (round(time.time() - self._s.connected_at, 1)
                                        if self._s.state == "connected" and self._s.connected_at else None)}

    # ---- connecting, retrying, giving up -------------------------------------------------------

    def _open(self) -> None:
        if self._logging_out:
            self._finish_logout("logged out by request")
        self._s.qr = None
        self._cancel_timers()
        opening = self._link.open()
        if opening is Opening.OWNER_BUSY:
            # Another gateway, or the actor before us still closing its connection.
            self._schedule_retry(f"{self._link.owner.describe()}; not connecting yet", Cause.OWNER_BUSY)
        elif opening is Opening.FAILED:
            self._schedule_retry(self._link.last_failure, Cause.OPEN_FAILED)
        else:         # OPENED, or AFTER_CLOSE: never two links of ours; it opens once the old is gone
            self._enter("starting", self._s.error if self._s.state == "reconnecting" else None)

    def _on_conn_closed(self, closed: m.ConnClosed) -> None:
        if not self._link.closed(closed.generation):
            return
        if self._link.open_after_close:
            self._open()
        elif self._s.state in RESTING:
            self._link.release_if_idle()

    def _on_ownership_lost(self, lost: m.OwnershipLost) -> None:
        self._close_conn()
        self._schedule_retry(f"ownership lost: {lost.reason}", Cause.OWNER_BUSY)

    def _schedule_retry(self, reason: str, cause: Cause) -> None:
        """Reconnect after the backoff, without end for a cause that can heal: an outage of
        any length never strands a company; operators hear of it every max attempts."""
        if not cause.retryable:
            self._give_up(reason)
            return
        tell_operators = self._retries.schedule(cause)
        self._link.open_after_close = False   # the backoff timer decides when, not the close
        self._enter("reconnecting", reason, cause=cause)
        if tell_operators:
            log.warning("[%s] still not connected after %d reconnect attempts (%s); retrying every %g s at most",
                        self.company_id, self._retries.attempts, reason, self._settings.backoff.cap)
            self._ctx.publish(self.company_id, EventKind.RECONNECT_FAILED, {
                "attempts": self._retries.attempts, "error": reason, "cause": cause.value,
                "nextRetryAt": self._s.published.get("nextRetryAt")})

    def _give_up(self, reason: str) -> None:
        # A cause an operator must fix. The desired state stays: a start, a reconnect or a
        # gateway restart (after the fix, e.g. an upgrade) tries again.
        self._close_conn()
        self._cancel_timers()
        self._enter("failed", reason)
        self._link.release_if_idle()

    def _finish_logout(self, reason: str) -> None:
        self._logging_out = False
        self._close_conn()
        self._cancel_timers()
        self._ctx.transport.forget(self.company_id, self._dir)
        self._s.phone = None
        self._record.update(phone=None)
        self._enter("logged_out", reason)
        self._link.release_if_idle()

    def _close_conn(self) -> None:
        # A send in flight stays in flight: it may still succeed, and sending it again on
        # the next connection would deliver it twice. Its future resolves, or the health
        # check settles it as unconfirmed after send_timeout.
        self._s.qr = None
        self._interrupted, self._s.interrupted = None, False
        self._link.close()

    # ---- timers ---------------------------------------------------------------------------------

    def _on_wake_up(self, timer: m.RetryDue | m.BanOver) -> None:
        waiting = "reconnecting" if isinstance(timer, m.RetryDue) else "banned"
        if self._retries.due(timer) and self._s.state == waiting:
            self._open()

    def _on_stable(self, timer: m.StableFor) -> None:
        if timer.generation == self._link.generation and self._s.state == "connected":
            self._retries.reset()

    def _on_pump_due(self, timer: m.PumpDue) -> None:
        if timer.generation == self._link.generation:
            self._pump()

    def _on_health_tick(self, timer: m.HealthTick) -> None:
        if timer.ticket == self._health_ticket:
            self._health_check()
            self._schedule_health()

    def _schedule_health(self) -> None:
        self._health_ticket = next(self._health_tickets)
        self._ctx.scheduler.call_later(self._settings.health_interval, self._tell, m.HealthTick(self._health_ticket))

    def _health_check(self) -> None:
        """Reconcile the state with the connection, so "connected" is never a ghost."""
        if self._s.state == "connected" and not self._link.alive():
            self._close_conn()
            self._schedule_retry("connection lost (found by health check)", Cause.HEALTH_CHECK)
        elif self._s.state == "starting" and time.monotonic() - self._link.opened_at > self._settings.connect_timeout:
            self._close_conn()
            self._schedule_retry(f"connect timed out after {self._settings.connect_timeout:g} s", Cause.TIMED_OUT)
        stalled = self._queue.stalled(self._settings.send_timeout)
        if stalled is not None:
            self._publish_outcome(stalled)
        if self._s.state == "connected" and len(self._queue):
            self._pump()

    def _cancel_timers(self) -> None:
        """Whatever was going to happen next (a retry, the end of a ban, a deferred open) won't."""
        self._retries.cancel()
        self._link.open_after_close = False

    # ---- sending -----------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand pending sends to the live connection, in order."""
        if self._s.state == "connected" and self._link.conn is not None:
            for outcome in self._queue.pump(self._link.conn, self._link.generation, self._tell):
                self._publish_outcome(outcome)

    def _on_send_done(self, done: m.SendDone) -> None:
        same_link = self._link.is_current(done.generation) and self._s.state == "connected" and self._link.alive()
        outcome = self._queue.settle(done.entry_id, done.dispatch, done.future, same_link=same_link)
        self._publish_outcome(outcome)
        if outcome.next_may_go:
            self._pump()

    def _publish_outcome(self, outcome: Outcome) -> None:
        self._statuses.outcome(outcome)
        if outcome.sent is not None:
            data = {"id": outcome.entry_id, "messageId": outcome.sent}
            self._ctx.publish(self.company_id, EventKind.SENT, {**data, "late": True} if outcome.late else data)
        elif outcome.unconfirmed is not None:
            log.warning("[%s] send %s unconfirmed: %s", self.company_id, outcome.entry_id, outcome.unconfirmed)
            self._ctx.publish(self.company_id, EventKind.UNCONFIRMED,
                              {"id": outcome.entry_id, "error": outcome.unconfirmed})
        elif outcome.failed is not None:
            self._ctx.publish(self.company_id, EventKind.FAILED, {"id": outcome.entry_id, "error": outcome.failed})
        elif outcome.retry_in is not None:
            self._ctx.scheduler.call_later(outcome.retry_in, self._tell, m.PumpDue(self._link.generation))

    def _lid_of(self, recipient) -> str:
        lid = "" if recipient.is_group else self._identities.lid_for(recipient.to)
        return f"{lid}@lid" if lid else ""

    def _on_incoming(self, event: IncomingMessage) -> None:
        self._inbound.message(complete(self._identities, event))

    def _on_receipt(self, event: Receipt) -> None:
        self._inbound.receipt(event)
        self._statuses.receipt(event)

    # ---- state and status -------------------------------------------------------------------------

    def _tell(self, message: Any) -> None:
        """The only way other threads reach this actor (once it stopped: late.py)."""
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            self._late.put(message)

    def _enter(self, state: str, error: str | None, *, cause: Cause | None = None) -> None:
        self._s.enter(state, error, self.actor_urn, cause=cause)


def _logout_error(future: Future) -> str | None:
    """Why WhatsApp was not told of a logout (a failed future, or a LogoutResult saying
    so); None when it was."""
    if future.exception() is not None:
        return str(future.exception())
    result = future.result()
    if result is not None and not getattr(result, "told_whatsapp", True):
        return getattr(result, "reason", "") or "no reason given"
    return None


# The one dispatch table: message type -> handler (class-level: one table, not one per actor).
_HANDLERS: dict[type, Callable[[SessionActor, Any], Any]] = {
    m.Start: SessionActor._do_start, m.Stop: SessionActor._do_stop, m.Reconnect: SessionActor._do_reconnect,
    m.Logout: SessionActor._do_logout, m.Send: SessionActor._do_send, m.PairPhone: SessionActor._do_pair_phone,
    m.GetStatus: lambda actor, _c: actor.status(), m.GetQr: lambda actor, _c: actor._s.qr_shown(),
    m.Diagnose: lambda actor, _c: actor.diagnostics(), m.DiscardOutbox: SessionActor._do_discard_outbox,
    m.ConnEvent: SessionActor._on_conn_event, m.ConnClosed: SessionActor._on_conn_closed,
    m.SendDone: SessionActor._on_send_done, m.OwnershipLost: SessionActor._on_ownership_lost,
    m.RetryDue: SessionActor._on_wake_up, m.BanOver: SessionActor._on_wake_up,
    m.HealthTick: SessionActor._on_health_tick, m.StableFor: SessionActor._on_stable,
    m.PumpDue: SessionActor._on_pump_due, m.LogoutDue: SessionActor._on_logout_due,
    m.GraceOver: SessionActor._on_grace_over, m.PairWatch: SessionActor._on_pair_watch,
    m.InjectedCrash: SessionActor._crash,
}
_HANDLERS[m.GetMessageStatus] = lambda actor, query: actor._statuses.get(query.id)
