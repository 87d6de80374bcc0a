"""The SessionActor's whole mailbox protocol, as dataclasses.

Commands are asked by session handles (they answer); everything else is told: events
from the connection (tagged with the connection's generation), the close of a
connection, send outcomes, and timers. Each timer kind is its own message with its own
ticket, so a timer from before a later state change is recognised as stale by the one
slot it belongs to.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from typing import Any

import pykka

from .connection import ConnectionEvent
from .payload import Payload

# ---- commands (asked; each answers) ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Start:
    """Connect with stored credentials, or show a QR code. Idempotent. Answers the status."""


@dataclasses.dataclass(frozen=True)
class Stop:
    """Close the connection and stay stopped; credentials and outbox are kept."""


@dataclasses.dataclass(frozen=True)
class Reconnect:
    """Operator action: drop whatever is there and connect now, attempts reset."""


@dataclasses.dataclass(frozen=True)
class Logout:
    """Unlink the device on WhatsApp's side and delete the credentials."""


@dataclasses.dataclass(frozen=True)
class Send:
    """Send `message` (text or a Payload) to `to`; answers a SendReceipt at once."""
    to: Any
    message: str | Payload
    idempotency_key: str | None = None


@dataclasses.dataclass(frozen=True)
class PairPhone:
    """Answers a future of an 8-character pairing code for `phone`."""
    phone: Any


@dataclasses.dataclass(frozen=True)
class GetStatus:
    pass


@dataclasses.dataclass(frozen=True)
class GetQr:
    pass


@dataclasses.dataclass(frozen=True)
class Diagnose:
    pass


@dataclasses.dataclass(frozen=True)
class DiscardOutbox:
    """Give up every pending send (the company is being deleted); answers how many."""
    reason: str


# A handle's method name -> the command it sends (the embedding API and the HTTP layer use these names).
COMMANDS: dict[str, type] = {"start": Start, "stop": Stop, "reconnect": Reconnect, "logout": Logout,
                             "send": Send, "pair_phone": PairPhone, "status": GetStatus, "qr": GetQr,
                             "diagnostics": Diagnose, "discard_outbox": DiscardOutbox}
# Commands that only read: the actor answers them without republishing its status.
QUERIES = (GetStatus, GetQr, Diagnose)

# ---- told by the connection, the send path and the owner ---------------------------------------


@dataclasses.dataclass(frozen=True)
class ConnEvent:
    generation: int
    event: ConnectionEvent


@dataclasses.dataclass(frozen=True)
class ConnClosed:
    """The connection of `generation` is gone for good (its close future resolved)."""
    generation: int


@dataclasses.dataclass(frozen=True)
class SendDone:
    generation: int
    entry_id: str
    future: Future
    dispatch: int = 0         # which hand-over of the entry this answers


@dataclasses.dataclass(frozen=True)
class OwnershipLost:
    """The ownership backend can no longer vouch for this company: close at once."""
    reason: str


# ---- timers: one message type per kind -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RetryDue:
    """The backoff delay ran out: connect again."""
    ticket: int


@dataclasses.dataclass(frozen=True)
class BanOver:
    ticket: int


@dataclasses.dataclass(frozen=True)
class HealthTick:
    ticket: int


@dataclasses.dataclass(frozen=True)
class StableFor:
    """The connection of `generation` has been up for the backoff's stable period."""
    generation: int


@dataclasses.dataclass(frozen=True)
class PumpDue:
    """A send's retry delay ran out (on the connection of `generation`)."""
    generation: int


@dataclasses.dataclass(frozen=True)
class GraceOver:
    """The connection of `generation` was interrupted this long without coming back."""
    generation: int
    ticket: int


@dataclasses.dataclass(frozen=True)
class PairWatch:
    """The connection of `generation` paired this long ago: is it connected yet?"""
    generation: int
    ticket: int


@dataclasses.dataclass(frozen=True)
class LogoutDue:
    """WhatsApp confirmed the logout (`error` None), refused it, or it took too long
    (`error` says which): finish it either way."""
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class InjectedCrash:
    """Chaos tool: the actor raises while handling it, as a bug would."""
    reason: str = "injected crash"


# ---- to the supervisor ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChildExit:
    """Told to the supervisor when a session actor stops, normally or not."""
    company_id: str
    urn: str
    normal: bool
    reason: str
    traceback: str | None = None


def tell_quietly(ref: pykka.ActorRef, message: Any) -> None:
    """Tell an actor that may already be gone (timers and callbacks outlive actors)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass
