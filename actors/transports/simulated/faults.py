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
- login       the QR login ends with `outcome` (LOGIN_OUTCOMES), each as whatsmeow's QR
              channel reports it
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from ...connection import Cause, ConnectionEvent, Disconnected, LoggedOut, QrExhausted, SendError
from ...phone import InvalidInput

FAULTS = ("drop", "refuse", "latency", "slow", "logout", "ban", "replace", "interrupt", "blackhole", "no-lid",
          "pair-stall", "login")
LOGIN_OUTCOMES = ("timeout", "scanned-without-multidevice", "unexpected-state", "passkey", "error")
MAX_SECONDS = 86400.0


@dataclasses.dataclass
class CompanyFaults:
    refuse_until: float = 0.0
    ban_until: float = 0.0
    latency: float = 0.0
    slow: float = 0.0
    pair_stall: bool = False

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


def login_failure(outcome: str) -> ConnectionEvent | None:
    """The event a QR login that ends with whatsmeow's `outcome` gives (qrchan.go). None:
    the login goes on (scanned without multi-device keeps the same code valid)."""
    if outcome == "scanned-without-multidevice":
        return None
    if outcome == "unexpected-state":
        # Connected, LoggedOut or a ban arrived during the QR phase: the store may now hold
        # an id, so connecting again with it is the way on.
        return Disconnected("the QR login ended in an unexpected state (simulated)", Cause.DROPPED)
    reasons = {
        "timeout": "QR code expired before it was scanned",
        "passkey": "the phone asked for a passkey, which this client cannot answer",
        "error": "pairing failed on the phone (simulated pair error)",
    }
    return event(QrExhausted, reason=reasons[outcome])


def not_on_whatsapp(jid: str) -> SendError:
    """whatsmeow's error for a number without a LID (not on WhatsApp), never retryable."""
    message = f"number not on WhatsApp: no LID found for {jid} from server"
    return SendError(message, retryable=False, code=SendError.NOT_ON_WHATSAPP)
