"""The faults the simulated WhatsApp can inject, and the events they turn into.

Each one reproduces something real WhatsApp (whatsmeow, through neonize) does to a client:

- drop        the link dies (Disconnected, retryable); the gateway reconnects itself
- refuse      an outage for `seconds`: the link drops and every connect is refused
- latency     `seconds` more before connects and send answers
- slow        `seconds` before a send's answer; at or past whatsmeow's 75 s deadline
              (`ack_deadline`) the answer never comes and the send fails as unconfirmed
              (the message did reach the recipient: a resend would be a duplicate)
- logout      WhatsApp ends the device's session (LoggedOut; the credentials are dead):
              `code` 401 the phone unlinked it (default), 403 the account is locked,
              406 the account is banned
- ban         a temporary ban for `seconds` (TemporaryBan now and on every connect)
- reject      WhatsApp refuses connects for `seconds` with ConnectFailure `code`
              (405: client outdated, not retryable; 400-599 others, e.g. 418 that
              neonize's enum has no name for: rejected)
- replace     another client opens the same credentials (Replaced, 440)
- interrupt   the socket drops and whatsmeow reconnects in the same process: Interrupted
              now, Connected again on the same link after `seconds`; sends meanwhile fail
              "websocket not connected" (retryable), inbound is held until then
- blackhole   keep-alive pings go unanswered: Interrupted(KEEPALIVE); sends get no answer
              (unconfirmed after the deadline); Connected again after `seconds`
- no-lid      `phone` is not on WhatsApp: a send to it fails "no LID found" (not
              retryable); `seconds: 0` lifts it
- pair-stall  the next scan pairs (Paired) and then nothing: the 515 restart failed
              silently; a later connect with the stored credentials works
- login       the QR login ends with `outcome` (LOGIN_OUTCOMES), each as the neonize
              transport reports whatsmeow's QR channel outcome: timeout (codes ran out) ->
              QrExhausted; dropped (socket lost during the QR phase) and unexpected-state ->
              Disconnected, retryable; error, passkey -> QrExhausted with the reason;
              scanned-without-multidevice -> the same QrCode again with a hint
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from ...connection import (Cause, ConnectFailure, Connected, ConnectionEvent, Disconnected, Interrupted, LoggedOut,
                           QrCode, QrExhausted, Replaced, SendError, TemporaryBan)
from ...phone import InvalidInput, normalize_phone

if TYPE_CHECKING:
    from .connection import SimulatedConnection
    from .network import SimulatedNetwork

FAULTS = ("drop", "refuse", "latency", "slow", "logout", "ban", "replace", "interrupt", "blackhole", "no-lid",
          "pair-stall", "login", "reject")
LOGIN_OUTCOMES = ("timeout", "dropped", "scanned-without-multidevice", "unexpected-state", "passkey", "error")
MAX_SECONDS = 86400.0


@dataclasses.dataclass
class CompanyFaults:
    refuse_until: float = 0.0
    ban_until: float = 0.0
    latency: float = 0.0
    slow: float = 0.0
    pair_stall: bool = False
    reject_until: float = 0.0
    reject_code: int = 0

    def take_pair_stall(self) -> bool:
        stall, self.pair_stall = self.pair_stall, False
        return stall


def check_seconds(seconds: Any) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or not 0 <= seconds <= MAX_SECONDS:
        raise InvalidInput("seconds must be a number from 0 to 86400")
    return float(seconds)


def event(cls: type, **values: Any) -> ConnectionEvent:
    """An event with the fields its class has: the contract grows fields (a reason, a
    hint, a code) and the simulator fills them in where the class already has them."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


LOGOUT_CODES = {401: ("unlinked", "device removed from the phone (simulated)"),
                403: ("locked", "the account is locked (simulated 403)"),
                406: ("banned", "the account is banned (simulated 406)")}


def check_logout_code(code: Any) -> int:
    if code is None:
        return 401
    if isinstance(code, bool) or code not in LOGOUT_CODES:
        raise InvalidInput("code must be 401, 403 or 406")
    return int(code)


def logged_out(code: int) -> ConnectionEvent:
    kind, reason = LOGOUT_CODES[code]
    return event(LoggedOut, reason=reason, code=code, kind=kind)


def check_failure_code(code: Any) -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
        raise InvalidInput("code must be a connect failure code from 400 to 599")
    return code


def connect_failure(code: int) -> ConnectionEvent:
    """WhatsApp's connect failure `code`, as the transport reports it (with the raw code)."""
    if code == 405:
        return event(ConnectFailure, reason="client outdated (405, simulated)", cause=Cause.CLIENT_OUTDATED,
                     code=code)
    return event(ConnectFailure, reason=f"connect failure {code} (simulated)", cause=Cause.REJECTED, code=code)


def login_failure(outcome: str) -> ConnectionEvent | None:
    """The event a QR login that ends with whatsmeow's `outcome` gives (qrchan.go). None:
    the login goes on (scanned without multi-device keeps the same code valid)."""
    if outcome == "scanned-without-multidevice":
        return None
    if outcome == "timeout":
        return QrExhausted()                     # the codes ran out ("QR expired")
    if outcome == "dropped":
        # qrchan.go reports a socket lost while a code was shown as "timeout" too; the
        # neonize transport tells it from exhaustion by the clock: a retryable drop.
        return Disconnected("connection to WhatsApp lost while the QR code was shown (simulated)", Cause.DROPPED)
    if outcome == "unexpected-state":
        # Connected, LoggedOut or a ban arrived during the QR phase: the store may now hold
        # an id, so connecting again with it is the way on.
        return Disconnected("the QR login ended in an unexpected state (simulated)", Cause.DROPPED)
    reasons = {
        "passkey": "the phone asked to confirm the link with a passkey, which this client cannot answer",
        "error": "pairing failed after the scan (simulated pair error); scan a new QR code",
    }
    return QrExhausted(reason=reasons[outcome])


def not_on_whatsapp(jid: str) -> SendError:
    """whatsmeow's error for a number without a LID (not on WhatsApp), never retryable."""
    message = f"number not on WhatsApp: no LID found for {jid} from server"
    return SendError(message, retryable=False, code=SendError.NOT_ON_WHATSAPP)


def inject(net: SimulatedNetwork, company_id: str, fault: str, seconds: float, *, phone: str | None = None,
           outcome: str | None = None, code: int | None = None) -> dict[str, Any]:
    """Apply `fault` to the company's account on `net` (see the module docstring)."""
    if fault not in FAULTS:
        raise InvalidInput(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
    seconds = check_seconds(seconds)
    if fault == "no-lid":
        phone = normalize_phone(phone)
    if fault == "login" and outcome not in LOGIN_OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(LOGIN_OUTCOMES)}")
    if fault == "logout":
        code = check_logout_code(code)
    elif fault == "reject":
        code = check_failure_code(code)
    with net._lock:
        if company_id not in net._known:
            raise LookupError(f"company {company_id!r} never connected to the simulator")
        company = net._faults.setdefault(company_id, CompanyFaults())
        device = net._devices.get(net._company_device.get(company_id, ""))
        live = net._live_connection(company_id)
        answer: dict[str, Any] = {"companyId": company_id, "fault": fault, "seconds": seconds}
        if fault == "latency":
            company.latency = seconds
        elif fault == "slow":
            company.slow = seconds
        elif fault == "drop":
            if live:
                live._die(Disconnected("connection dropped (simulated)", Cause.DROPPED))
        elif fault == "refuse":
            # An outage: the link drops now and connects are refused until it ends.
            company.refuse_until = net._clock() + seconds
            if live:
                live._die(Disconnected("connection lost: network unreachable (simulated)", Cause.UNREACHABLE))
        elif fault == "ban":
            company.ban_until = net._clock() + seconds
            if live:
                live._die(TemporaryBan(seconds))
        elif fault in ("interrupt", "blackhole"):
            if live is None or live._state != "connected":
                raise LookupError(f"company {company_id!r} is not connected")
            _interrupt(net, live, fault, seconds)
        elif fault == "reject":
            company.reject_until, company.reject_code = net._clock() + seconds, code
            if live:
                live._die(connect_failure(code))
            answer["code"] = code
        elif fault == "no-lid":
            if seconds > 0:
                net._not_on_whatsapp.add(phone)
            else:
                net._not_on_whatsapp.discard(phone)
            answer["phone"] = phone
        elif fault == "pair-stall":
            company.pair_stall = seconds > 0
        elif fault == "login":
            conn = net._pending_qr.get(company_id)
            if conn is None:
                raise LookupError(f"company {company_id!r} is not showing a QR code")
            _login_fails(net, conn, outcome)
            answer["outcome"] = outcome
        elif device is None or device.removed:
            raise LookupError(f"company {company_id!r} has no linked device")
        elif fault == "logout":
            net._remove(device)
            if device.live:
                device.live._die(logged_out(code))
            answer["code"] = code
        elif fault == "replace":
            if device.live:
                device.live._die(Replaced())
            device.foreign_live = True
            net._record(company_id)
        return answer


def _login_fails(net: SimulatedNetwork, conn: SimulatedConnection, outcome: str) -> None:
    """A QR login ends without a link (or, scanned without multi-device, goes on)."""
    failure = login_failure(outcome)
    if failure is None:         # the same code stays valid; the user is told why it did not link
        left = max(0.0, round(conn._qr_expires - net._clock(), 3))
        conn._emit(event(QrCode, code=conn._qr, expires_in=left,
                         hint="the phone scanned the code without multi-device; update WhatsApp on the phone"))
        return
    net._pending_qr.pop(conn.company_id, None)
    conn._die(failure)


def _interrupt(net: SimulatedNetwork, conn: SimulatedConnection, fault: str, seconds: float) -> None:
    """The link is lost (interrupt) or goes silent (blackhole) and the client heals it
    by itself after `seconds`: Interrupted now, Connected again on the same link then."""
    if fault == "interrupt":
        conn._state = "interrupted"
        conn._emit(Interrupted("connection lost; the client is reconnecting (simulated)", Cause.DROPPED))
    else:
        conn._state = "blackhole"
        conn._emit(Interrupted("keep-alive timed out; the server does not answer (simulated)",
                               Cause.KEEPALIVE))
    net._scheduler.call_later(seconds, _heal, net, conn, conn._state)


def _heal(net: SimulatedNetwork, conn: SimulatedConnection, state: str) -> None:
    with net._lock:
        device = conn._device
        if conn._state != state or device is None or device.live is not conn:
            return
        conn._state = "connected"
        conn._emit(Connected(device.phone))
        net._drain(device, conn)
