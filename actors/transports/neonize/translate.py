"""Child dicts -> Connection events: one small handler per wire type, as whatsmeow does.

  qr               -> QrCode(code, 60 s for the first code, 20 s after)
  login_event      -> success: nothing (Paired/Connected follow);
                      err-client-outdated: ConnectFailure(CLIENT_OUTDATED) (end);
                      anything else (QR timeout): QrExhausted (end: Go may hang in FetchMe forever)
  paired           -> Paired(phone)
  connected        -> Connected(phone of this device, "" if unknown)
  disconnected     -> Disconnected("connection lost", DROPPED) - whatsmeow also reconnects
                      by itself and may send Connected again
  keepalive_timeout-> nothing while whatsmeow retries; once pings have failed for
                      KEEPALIVE_GIVE_UP s (whatsmeow then forces a silent reconnect)
                      one Disconnected("keep-alive lost ...", KEEPALIVE)
  logged_out       -> LoggedOut(reason) (end)
  stream_replaced  -> Replaced() (end)
  temporary_ban    -> TemporaryBan(expires_in, reason=code name) (end)
  connect_failure  -> ConnectFailure("NAME: message", cause by status: 5xx SERVICE_UNAVAILABLE,
                      405 CLIENT_OUTDATED, else REJECTED) (end)
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
                           IncomingMessage, LoggedOut, Paired, QrCode, QrExhausted, Receipt,
                           Replaced, TemporaryBan)
from . import wire

log = logging.getLogger("switchboard.neonize")

FIRST_QR_TTL = 60.0                              # whatsmeow: first code 60 s, then 20 s each
NEXT_QR_TTL = 20.0
KEEPALIVE_GIVE_UP = 180.0                        # whatsmeow's KeepAliveMaxFailTime
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

    def __init__(self, company_id: str) -> None:
        self.company_id = company_id
        self.connected = False
        self.qr_count = 0
        self.phone = ""
        self.keepalive_lost = False

    def translate(self, msg: dict) -> Step:
        handler = _HANDLERS.get(str(msg.get("type")))
        return handler(self, msg) if handler is not None else NOTHING   # stopped, qr_codes, unknown

    def lost(self, event: ConnectionEvent, over: str | None = None) -> Step:
        self.connected = False
        return Step((event,), over)


def _qr(t: Translator, msg: dict) -> Step:
    ttl = FIRST_QR_TTL if t.qr_count == 0 else NEXT_QR_TTL
    t.qr_count += 1
    return Step((QrCode(code=str(msg["code"]), expires_in=ttl),), qr_ttl=ttl)


def _login_event(t: Translator, msg: dict) -> Step:
    event = str(msg.get("event", ""))
    if event == wire.LOGIN_SUCCESS:
        return Step(qr_over=True)
    if event == wire.LOGIN_CLIENT_OUTDATED:
        return Step((_outdated(),), END, qr_over=True)
    log.info("company %s: QR login ended with %r", t.company_id, event)
    return Step((QrExhausted(),), END, qr_over=True)     # Go may now hang in FetchMe: end the child


def _paired(t: Translator, msg: dict) -> Step:
    t.phone = str(msg.get("phone") or "")
    return Step((Paired(phone=t.phone),))


def _pair_error(t: Translator, msg: dict) -> Step:
    log.warning("company %s: pairing failed: %s", t.company_id, msg.get("error"))
    return NOTHING


def _connected(t: Translator, msg: dict) -> Step:
    t.connected, t.keepalive_lost = True, False
    t.phone = str(msg.get("phone") or t.phone)
    return Step((Connected(phone=t.phone),), qr_over=True)


def _disconnected(t: Translator, msg: dict) -> Step:
    return t.lost(Disconnected(reason="connection lost", cause=Cause.DROPPED))


def _keepalive_timeout(t: Translator, msg: dict) -> Step:
    # whatsmeow keeps pinging and, after KEEPALIVE_GIVE_UP s of failures, drops the
    # socket and reconnects without a Disconnected event: that is when we speak up.
    last = int(msg.get("last_success") or 0)
    failing_for = time.time() - last if last > 1_000_000_000 else 0.0
    if t.keepalive_lost or not t.connected or failing_for < KEEPALIVE_GIVE_UP:
        return NOTHING
    t.keepalive_lost = True
    return t.lost(Disconnected(reason=f"keep-alive lost for {failing_for:.0f}s", cause=Cause.KEEPALIVE))


def _keepalive_restored(t: Translator, msg: dict) -> Step:
    t.keepalive_lost = False
    return NOTHING


def _logged_out(t: Translator, msg: dict) -> Step:
    return t.lost(LoggedOut(reason=str(msg.get("reason") or "device removed").lower()), END)


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
    text = f"{name}: {msg.get('message')}" if msg.get("message") else name
    status = int(msg.get("status") or wire.FAILURE_STATUS.get(name, 0))
    return t.lost(ConnectFailure(reason=text, cause=_failure_cause(status)), END)


def _outdated() -> ConnectFailure:
    return ConnectFailure(reason="client outdated: upgrade neonize", cause=Cause.CLIENT_OUTDATED)


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
