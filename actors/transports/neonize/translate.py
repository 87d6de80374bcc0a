"""Child dicts -> Connection events: one small handler per wire type, as whatsmeow does.

  qr               -> QrCode(code, 60 s for the first code, 20 s after)
  login_event      -> each of whatsmeow's QR channel outcomes (qrchan.go) on its own; every
                      one but the first two ends the child (Go would hang in FetchMe):
                      success: nothing (Paired/Connected follow)
                      err-scanned-without-multidevice: the same QrCode again with a hint
                        (whatsmeow keeps the channel, and the code, alive)
                      timeout after the last code's time: QrExhausted("expired")
                      timeout earlier: the socket dropped during the QR phase:
                        Disconnected(DROPPED), retryable - a new connection shows a new QR
                      err-unexpected-state: Disconnected(DROPPED), retryable (WhatsApp already
                        sees a login, a ban or a failure: the next connect says which)
                      error: QrExhausted("pairing failed ...")
                      passkey-request / -confirmation: QrExhausted("... passkey ...", neonize
                        cannot answer one)
                      err-client-outdated: ConnectFailure(CLIENT_OUTDATED)
  paired           -> Paired(phone)
  connected        -> Connected(phone of this device, "" if unknown)
  disconnected     -> Interrupted("connection lost", DROPPED): whatsmeow reconnects by itself
                      in this same child (0, 2, 4 ... s) and sends Connected again
  keepalive_timeout-> the second one in a row while connected: Interrupted(KEEPALIVE), so
                      nothing more is sent into a dead socket; whatsmeow's forced reconnect
                      after 3 minutes stays the backstop (Connected follows it)
  keepalive_restored-> Connected again, after such an Interrupted
  logged_out       -> LoggedOut(reason, code 401/403/406, kind unlinked/locked/banned) (end)
  stream_replaced  -> Replaced() (end)
  temporary_ban    -> TemporaryBan(expires_in, reason=code name) (end)
  connect_failure  -> ConnectFailure("NAME: message", cause by status: 5xx SERVICE_UNAVAILABLE,
                      405 CLIENT_OUTDATED, else REJECTED; code = the status, also for codes
                      neonize's enum lacks) (end)
  client_outdated  -> ConnectFailure("client outdated: upgrade neonize", CLIENT_OUTDATED) (end)
  connect_failed   -> Disconnected("connect failed: <the Go error>", UNREACHABLE) (final: the
                      initial connect is never retried by whatsmeow, the child exits)
  stream_error     -> logged only (the server closes the socket; Disconnected follows)
  message          -> IncomingMessage (our own messages, status broadcasts, protocol
                      messages and reactions are dropped)
  receipt          -> Receipt (delivered/read/played of other people only)
The connection adds what only it knows: the child's exit (PROCESS_EXITED), the connect
deadline (TIMED_OUT), a failed spawn (OPEN_FAILED) and a stalled QR phase (QrExhausted).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from ...connection import (Cause, ConnectFailure, Connected, ConnectionEvent, Disconnected,
                           IncomingMessage, Interrupted, LoggedOut, Paired, QrCode, QrExhausted,
                           Receipt, Replaced, TemporaryBan)
from . import wire

log = logging.getLogger("switchboard.neonize")

FIRST_QR_TTL = 60.0                              # whatsmeow: first code 60 s, then 20 s each
NEXT_QR_TTL = 20.0
QR_CODES = 6                                     # codes per QR session (pair.go: the server's
QR_WINDOW = FIRST_QR_TTL + (QR_CODES - 1) * NEXT_QR_TTL   # refs; 160 s, then it disconnects)
QR_EARLY_SLACK = 2.0                             # a "timeout" this much before the last code's
                                                 # end is a dropped socket, not exhaustion
KEEPALIVE_FAILURES = 2                           # failed pings in a row before sending stops
NO_MULTIDEVICE_HINT = ("the phone that scanned has no multi-device support: update WhatsApp "
                       "on the phone, then scan this code again")
PASSKEY_REASON = ("the phone asked to confirm the link with a passkey, which this gateway "
                  "cannot do: link with a pairing code instead")
# LoggedOut codes (whatsmeow types/events/events.go: 403 "is now called LOCKED", 406 "BANNED")
LOGGED_OUT_KINDS = {401: ("unlinked", "this device was unlinked from the phone (401): link it again"),
                    403: ("locked", "WhatsApp locked this account (403): the phone's owner must "
                                    "unlock it in WhatsApp before it can be linked again"),
                    406: ("banned", "WhatsApp banned this account (406): linking again will not help")}
FINAL, END = "final", "end"                      # a Step's `over`, see Step
INBOUND = frozenset({wire.MESSAGE, wire.RECEIPT})    # traffic: delivered even while closing
SIGNS_OF_LIFE = frozenset({wire.QR, wire.LOGIN_EVENT, wire.CONNECTED, wire.PAIRED,
                           wire.CONNECT_FAILED})     # the child answered: it is not hung
_DELIVERED_KINDS = {"text", "media"}
_RECEIPT_KINDS = {"delivered", "read", "played"}


@dataclasses.dataclass(frozen=True)
class Step:
    """What one child message means. `over`: None, the link goes on; FINAL, it is over and
    the child exits by itself; END, it is over and the child must be ended (whatsmeow
    would idle or hang). `qr_ttl`: a QR code shows this long (watch for a stall);
    `qr_over`: the QR phase ended (stop watching)."""
    events: tuple[ConnectionEvent, ...] = ()
    over: str | None = None
    qr_ttl: float | None = None
    qr_over: bool = False


NOTHING = Step()


class Translator:
    """What translating must remember about one link. Not thread-safe: its connection
    calls it under its own lock."""

    def __init__(self, company_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.company_id = company_id
        self.clock = clock
        self.connected = False
        self.qr_count = 0
        self.qr_code = ""
        self.first_qr_at: float | None = None
        self.last_qr_at = 0.0
        self.last_qr_ttl = 0.0
        self.pair_error = ""
        self.phone = ""
        self.keepalive_failures = 0
        self.keepalive_lost = False

    def qr_window_left(self) -> float:
        """Seconds until whatsmeow closes the QR socket (and any pairing code with it)."""
        if self.first_qr_at is None:
            return QR_WINDOW
        return max(0.0, self.first_qr_at + QR_WINDOW - self.clock())

    def translate(self, msg: dict) -> Step:
        handler = _HANDLERS.get(str(msg.get("type")))
        return handler(self, msg) if handler is not None else NOTHING   # stopped, qr_codes, unknown

    def lost(self, event: ConnectionEvent, over: str | None = None) -> Step:
        self.connected = False
        return Step((event,), over)


def _qr(t: Translator, msg: dict) -> Step:
    ttl = FIRST_QR_TTL if t.qr_count == 0 else NEXT_QR_TTL
    now = t.clock()
    if t.first_qr_at is None:
        t.first_qr_at = now
    t.qr_count += 1
    t.qr_code, t.last_qr_at, t.last_qr_ttl = str(msg["code"]), now, ttl
    return Step((QrCode(code=t.qr_code, expires_in=ttl),), qr_ttl=ttl)


def _login_event(t: Translator, msg: dict) -> Step:
    event = str(msg.get("event", ""))
    handler = _LOGIN_OUTCOMES.get(event)
    if handler is not None:
        return handler(t)
    log.warning("company %s: QR login ended with unknown outcome %r", t.company_id, event)
    return _qr_ended(QrExhausted(reason=f"the QR login ended ({event})"))


def _qr_ended(event: ConnectionEvent) -> Step:
    """The QR phase is over without a link: Go may now hang in FetchMe, end the child."""
    return Step((event,), END, qr_over=True)


def _login_timeout(t: Translator) -> Step:
    # qrchan.go sends "timeout" both when the codes ran out (after the last one's time)
    # and when the socket dropped while a code was shown (a Disconnected event).
    shown_for = t.clock() - t.last_qr_at
    if t.qr_count >= QR_CODES or (t.qr_count and shown_for >= t.last_qr_ttl - QR_EARLY_SLACK):
        return _qr_ended(QrExhausted())
    t.connected = False
    return _qr_ended(Disconnected(reason="connection to WhatsApp lost while the QR code was shown",
                                  cause=Cause.DROPPED))


def _login_no_multidevice(t: Translator) -> Step:
    log.info("company %s: QR scanned by a phone without multi-device", t.company_id)
    if not t.qr_code:
        return NOTHING
    left = max(0.0, t.last_qr_at + t.last_qr_ttl - t.clock())
    return Step((QrCode(code=t.qr_code, expires_in=left, hint=NO_MULTIDEVICE_HINT),))


def _login_unexpected(t: Translator) -> Step:
    t.connected = False
    return _qr_ended(Disconnected(
        reason="WhatsApp answered the QR login with an unexpected state (already linked, "
               "banned or refused): reconnecting to learn which", cause=Cause.DROPPED))


def _login_error(t: Translator) -> Step:
    detail = f": {t.pair_error}" if t.pair_error else ""
    return _qr_ended(QrExhausted(reason=f"pairing failed after the scan{detail}; scan a new QR code"))


_LOGIN_OUTCOMES: dict[str, Callable[[Translator], Step]] = {
    wire.LOGIN_SUCCESS: lambda t: Step(qr_over=True),
    wire.LOGIN_TIMEOUT: _login_timeout,
    wire.LOGIN_NO_MULTIDEVICE: _login_no_multidevice,
    wire.LOGIN_UNEXPECTED: _login_unexpected,
    wire.LOGIN_ERROR: _login_error,
    wire.LOGIN_PASSKEY_REQUEST: lambda t: _qr_ended(QrExhausted(reason=PASSKEY_REASON)),
    wire.LOGIN_PASSKEY_CONFIRMATION: lambda t: _qr_ended(QrExhausted(reason=PASSKEY_REASON)),
    wire.LOGIN_CLIENT_OUTDATED: lambda t: _qr_ended(_outdated()),
}


def _paired(t: Translator, msg: dict) -> Step:
    t.phone = str(msg.get("phone") or "")
    return Step((Paired(phone=t.phone),))


def _pair_error(t: Translator, msg: dict) -> Step:
    t.pair_error = str(msg.get("error") or "")
    log.warning("company %s: pairing failed: %s", t.company_id, t.pair_error)
    return NOTHING


def _connected(t: Translator, msg: dict) -> Step:
    t.connected, t.keepalive_lost, t.keepalive_failures = True, False, 0
    t.phone = str(msg.get("phone") or t.phone)
    return Step((Connected(phone=t.phone),), qr_over=True)


def _disconnected(t: Translator, msg: dict) -> Step:
    # whatsmeow emits Disconnected only for a close it did not expect, and then
    # reconnects by itself in this process: the link is interrupted, not over.
    t.keepalive_lost, t.keepalive_failures = False, 0
    return t.lost(Interrupted(reason="connection lost; reconnecting", cause=Cause.DROPPED))


def _keepalive_timeout(t: Translator, msg: dict) -> Step:
    # A ping went unanswered (10 s each, every 20-30 s, keepalive.go). Two in a row: the
    # socket is probably a black hole, so stop sending into it. whatsmeow itself forces a
    # reconnect once pings have failed for 3 minutes; its Connected ends the interruption.
    if not t.connected:
        return NOTHING
    t.keepalive_failures = max(t.keepalive_failures + 1, int(msg.get("error_count") or 0))
    if t.keepalive_failures < KEEPALIVE_FAILURES:
        return NOTHING
    t.keepalive_lost = True
    last = int(msg.get("last_success") or 0)
    since = f" (last answer {time.time() - last:.0f}s ago)" if last > 1_000_000_000 else ""
    return t.lost(Interrupted(reason=f"keep-alive pings unanswered {t.keepalive_failures} times{since}",
                              cause=Cause.KEEPALIVE))


def _keepalive_restored(t: Translator, msg: dict) -> Step:
    t.keepalive_failures = 0
    if not t.keepalive_lost:
        return NOTHING
    t.keepalive_lost, t.connected = False, True
    return Step((Connected(phone=t.phone),))


def _logged_out(t: Translator, msg: dict) -> Step:
    code = int(msg.get("status") or 401)
    kind, reason = LOGGED_OUT_KINDS.get(code, ("unlinked", f"logged out by WhatsApp ({code}): link it again"))
    return t.lost(LoggedOut(reason=reason, code=code, kind=kind), END)


def _stream_replaced(t: Translator, msg: dict) -> Step:
    return t.lost(Replaced(), END)


def _temporary_ban(t: Translator, msg: dict) -> Step:
    return t.lost(TemporaryBan(expires_in=float(msg.get("expire_s") or 0),
                               reason=str(msg.get("code") or "temporary ban")), END)


def _failure_cause(status: int) -> Cause:
    if 500 <= status < 600:
        return Cause.SERVICE_UNAVAILABLE
    if status == wire.FAILURE_STATUS["CLIENT_OUTDATED"]:
        return Cause.CLIENT_OUTDATED
    return Cause.REJECTED


def _connect_failure(t: Translator, msg: dict) -> Step:
    name = str(msg.get("reason") or "UNKNOWN")
    status = int(msg.get("status") or wire.FAILURE_STATUS.get(name, 0))
    label = f"{name} ({status})" if status else name
    text = f"{label}: {msg.get('message')}" if msg.get("message") else label
    return t.lost(ConnectFailure(reason=text, cause=_failure_cause(status), code=status), END)


def _outdated() -> ConnectFailure:
    return ConnectFailure(reason="client outdated: upgrade neonize", cause=Cause.CLIENT_OUTDATED,
                          code=wire.FAILURE_STATUS["CLIENT_OUTDATED"])


def _client_outdated(t: Translator, msg: dict) -> Step:
    return t.lost(_outdated(), END)


def _connect_failed(t: Translator, msg: dict) -> Step:
    error = str(msg.get("error") or "unknown error")
    return t.lost(Disconnected(reason=f"connect failed: {error}", cause=Cause.UNREACHABLE), FINAL)


def _stream_error(t: Translator, msg: dict) -> Step:
    log.warning("company %s: stream error %s", t.company_id, msg.get("code"))
    return NOTHING


def _connecting(t: Translator, msg: dict) -> Step:
    log.debug("company %s: child %s connecting as %s", t.company_id, msg.get("pid"), msg.get("uuid"))
    return NOTHING


def _message(t: Translator, msg: dict) -> Step:
    if msg.get("from_me") or msg.get("broadcast"):
        return NOTHING                          # our own sends (other devices), status updates
    text = str(msg.get("text") or "")
    if msg.get("kind") not in _DELIVERED_KINDS and not text:
        return NOTHING                          # protocol messages, reactions, key shares
    return Step((IncomingMessage(id=str(msg["id"]), chat=str(msg.get("chat") or ""),
                                 phone=str(msg.get("phone") or ""), text=text,
                                 timestamp=float(msg.get("timestamp") or 0.0),
                                 push_name=str(msg.get("push_name") or ""),
                                 is_group=bool(msg.get("is_group"))),))


def _receipt(t: Translator, msg: dict) -> Step:
    if msg.get("from_me") or msg.get("kind") not in _RECEIPT_KINDS:
        return NOTHING                          # our own devices' receipts, retries, syncs
    return Step((Receipt(message_ids=tuple(msg.get("ids") or ()), chat=str(msg.get("chat", "")),
                         kind=str(msg["kind"]), timestamp=float(msg.get("timestamp") or 0)),))


_HANDLERS: dict[str, Callable[[Translator, dict], Step]] = {
    wire.QR: _qr, wire.LOGIN_EVENT: _login_event, wire.PAIRED: _paired,
    wire.PAIR_ERROR: _pair_error, wire.CONNECTED: _connected, wire.DISCONNECTED: _disconnected,
    wire.KEEPALIVE_TIMEOUT: _keepalive_timeout, wire.KEEPALIVE_RESTORED: _keepalive_restored,
    wire.LOGGED_OUT: _logged_out, wire.STREAM_REPLACED: _stream_replaced,
    wire.TEMPORARY_BAN: _temporary_ban, wire.CONNECT_FAILURE: _connect_failure,
    wire.CLIENT_OUTDATED: _client_outdated, wire.CONNECT_FAILED: _connect_failed,
    wire.STREAM_ERROR: _stream_error, wire.CONNECTING: _connecting,
    wire.MESSAGE: _message, wire.RECEIPT: _receipt,
}
