"""What the SessionActor does with its connection's signals: QR codes, pairing, the link
coming up, interrupted (the transport heals it) or ending (the policy table says what
follows, lifecycle.py), and the traffic (incoming messages, receipts) it carries.

A mixin of SessionActor (session.py), split out to keep each module to one concern; it
runs on the actor's thread and uses the actor's parts (`_s`, `_link`, `_pairing`,
`_retries`, `_inbound`, ...).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from . import messages as m
from .connection import Cause, Connected, ConnectionEvent, IncomingMessage, Interrupted, Paired, QrCode, Receipt
from .kinds import EventKind
from .late import is_traffic
from .lifecycle import POLICY, RESTING, After, reason_of


class LinkEvents:
    def _on_conn_event(self, message: m.ConnEvent) -> None:
        event = message.event
        traffic = isinstance(event, (IncomingMessage, Receipt))
        # What a closing connection still received is real traffic: keep it (duplicates
        # are dropped by message id). Anything else only from the live connection.
        if not traffic and not self._link.is_current(message.generation):
            return
        if self._logging_out and not traffic:
            self._finish_logout(self._s.error or "logged out by request")
            return
        handler = EVENTS.get(type(event), LinkEvents._on_ending)
        handler(self, event)

    def _on_qr(self, event: QrCode) -> None:
        self._s.show_qr(event)
        self._enter("qr", event.hint or None)         # e.g. the phone scanned but could not link
        shown = self._s.qr_shown()
        self._ctx.publish(self.company_id, EventKind.QR, {**shown, "hint": event.hint} if event.hint else shown)
        waiting = self._pairing.qr_shown(self._link.generation)
        if waiting is not None:
            self._pairing.request(self._link.conn, *waiting)

    def _on_paired(self, event: Paired) -> None:
        # The QR is spent; whatsmeow now restarts the stream (515) and should say Connected.
        self._s.qr = None
        self._s.link_phone(event.phone)
        self._link.opened_at = time.monotonic()
        self._pairing.paired(self._link.generation)
        self._enter("starting", None)
        self._ctx.publish(self.company_id, EventKind.PAIRED, {"phone": event.phone})

    def _on_pair_watch(self, timer: m.PairWatch) -> None:
        if (self._pairing.watch_due(timer) and self._link.is_current(timer.generation)
                and self._s.state == "starting"):
            self._close_conn()
            self._schedule_retry(f"paired, but WhatsApp did not finish the login within "
                                 f"{self._settings.pair_timeout:g} s; reconnecting with the stored credentials",
                                 Cause.TIMED_OUT)

    def _on_interrupted(self, event: Interrupted) -> None:
        """The link dropped and the transport reconnects by itself: keep it, pause sending,
        and give it a grace (longer for a keep-alive black hole, so whatsmeow's own forced
        reconnect acts first). Not a reconnect attempt: nothing is charged."""
        grace = self._settings.keepalive_grace if event.cause is Cause.KEEPALIVE else self._settings.reconnect_grace
        ticket = next(self._graces)
        self._interrupted = (ticket, event, grace)
        self._s.interrupted = True
        self._enter("reconnecting", f"link interrupted ({event.reason}); the transport is reconnecting, "
                                    f"waiting up to {grace:g} s", cause=event.cause)
        self._ctx.scheduler.call_later(grace, self._tell, m.GraceOver(self._link.generation, ticket))

    def _on_grace_over(self, timer: m.GraceOver) -> None:
        if (self._interrupted is None or self._interrupted[0] != timer.ticket
                or not self._link.is_current(timer.generation)):
            return
        _ticket, event, grace = self._interrupted
        self._close_conn()
        self._schedule_retry(f"{event.reason}; the link did not come back within {grace:g} s", event.cause)

    def _on_connected(self, event: Connected) -> None:
        self._s.link_phone(event.phone)
        self._s.qr = None
        self._s.connected_at = time.time()
        self._interrupted, self._s.interrupted = None, False
        self._pairing.connected()
        self._retries.cancel()
        self._enter("connected", None)
        self._ctx.scheduler.call_later(self._settings.backoff.stable_after, self._tell,
                                       m.StableFor(self._link.generation))
        self._pump()

    def _on_ending(self, event: ConnectionEvent) -> None:
        """A signal that ends the connection: the policy table says what follows."""
        reaction = POLICY[type(event)]
        self._close_conn()
        if reaction.after is After.RETRY:
            self._schedule_retry(reason_of(event), event.cause)
            return
        if reaction.stay_down:
            self._record.update(desired="stopped")
        if reaction.forget:
            self._finish_logout(reaction.error.format(reason=reason_of(event)))
            return
        delay = self._retries.ban(event.expires_in) if reaction.after is After.WAIT_BAN else 0.0
        self._enter(reaction.state, reaction.error.format(reason=reason_of(event), delay=delay))
        if reaction.state in RESTING:
            self._link.release_if_idle()

    def _on_late(self, message: Any) -> None:
        """A message for a stopped actor (late.py): traffic and send answers still count."""
        if is_traffic(message):
            EVENTS[type(message.event)](self, message.event)
        elif isinstance(message, m.SendDone):
            self._publish_outcome(self._queue.settle(message.entry_id, message.dispatch, message.future,
                                                     same_link=False))
        elif isinstance(message, m.ConnClosed):
            self._link.closed(message.generation)


# Connection events that do not end the connection; every other one goes by the policy table.
EVENTS: dict[type, Callable[[Any, Any], None]] = {
    QrCode: LinkEvents._on_qr, Paired: LinkEvents._on_paired, Connected: LinkEvents._on_connected,
    Interrupted: LinkEvents._on_interrupted,
    IncomingMessage: lambda actor, event: actor._inbound.message(event),
    Receipt: lambda actor, event: actor._inbound.receipt(event),
}
