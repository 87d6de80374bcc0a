"""The Connection interface every transport implements, and the events it emits.

A SessionActor owns exactly one Connection at a time. Connections call `emit(event)`
from their own threads; the actor wraps `emit` so that it only `tell`s the event,
tagged with the connection's generation, into the actor's mailbox.

A drop or a failed connect carries a typed `Cause`, set by the transport from what it
knows (a code, an exit status), so nothing downstream reads error text to decide.
"""
from __future__ import annotations

import dataclasses
import enum
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Protocol

from .payload import Payload


class Cause(str, enum.Enum):
    """Why a link dropped or could not be made. The value is the metrics label."""
    UNREACHABLE = "unreachable"              # no route, DNS, refused, dial error
    DROPPED = "dropped"                      # an established link went away
    KEEPALIVE = "keepalive"                  # pings unanswered for too long
    TIMED_OUT = "timed_out"                  # no connect (or no answer) within the deadline
    PROCESS_EXITED = "process_exited"        # the transport's own process died
    OPEN_FAILED = "could_not_open"           # the transport could not even start connecting
    HEALTH_CHECK = "health_check"            # the actor found the link dead
    OWNER_BUSY = "owner_busy"                # another owner (process, host) holds the company
    SERVICE_UNAVAILABLE = "service_unavailable"   # WhatsApp answered 5xx
    CLIENT_OUTDATED = "client_outdated"      # WhatsApp refuses this client version (405)
    REJECTED = "rejected"                    # forbidden, bad user agent, any other refusal

    @property
    def retryable(self) -> bool:
        """Whether trying again can help without an operator."""
        return self not in (Cause.CLIENT_OUTDATED, Cause.REJECTED)

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class QrCode:
    """A QR code to show the user; `expires_in` seconds from now the next one replaces it.
    `hint`: something the user must know about the last scan (e.g. the phone could not
    link), empty for a plain new code."""
    code: str
    expires_in: float
    hint: str = ""


@dataclasses.dataclass(frozen=True)
class QrExhausted:
    """The QR login ended without a link (every code expired, or pairing failed). The
    connection is over; `reason` says why, for people ("QR expired" when every code ran
    out; a transport that knows better says so)."""
    reason: str = "QR expired"


@dataclasses.dataclass(frozen=True)
class Paired:
    """The phone scanned the QR (or entered the pairing code); `phone` is its number."""
    phone: str


@dataclasses.dataclass(frozen=True)
class Connected:
    """Authenticated and online: sending works from now on."""
    phone: str


@dataclasses.dataclass(frozen=True)
class Disconnected:
    """The link dropped (or never came up): `reason` for people, `cause` for code."""
    reason: str
    cause: Cause = Cause.DROPPED

    @property
    def retryable(self) -> bool:
        return self.cause.retryable


@dataclasses.dataclass(frozen=True)
class Interrupted:
    """The link dropped and the transport is reconnecting by itself (whatsmeow does, in the
    same process, after 0, 2, 4 ... s; a keep-alive black hole is reported the same way).
    Sending pauses; a later Connected ends the interruption. If none comes within the
    actor's grace, the actor closes this connection and reconnects with its own backoff."""
    reason: str
    cause: Cause = Cause.DROPPED


@dataclasses.dataclass(frozen=True)
class LoggedOut:
    """WhatsApp ended this device's session. Credentials are gone; never reconnect.
    `code` is WhatsApp's (401 unlinked, 403 locked, 406 banned); `kind` the same for code:
    "unlinked" (the phone removed the device: link again), "locked" or "banned" (the
    account itself: linking again will not help until the owner sorts it out)."""
    reason: str = "device removed"
    code: int = 401
    kind: str = "unlinked"

    @property
    def locked(self) -> bool:
        return self.code == 403

    @property
    def banned(self) -> bool:
        return self.code == 406


@dataclasses.dataclass(frozen=True)
class Replaced:
    """Another client opened the same credentials (stream replaced, 440)."""
    reason: str = "stream replaced by another client"


@dataclasses.dataclass(frozen=True)
class TemporaryBan:
    """WhatsApp refuses this account for `expires_in` seconds."""
    expires_in: float
    reason: str = "temporary ban"


@dataclasses.dataclass(frozen=True)
class ConnectFailure:
    """WhatsApp refused the connection. Forbidden or outdated clients are not retryable.
    `code`: WhatsApp's numeric reason (0 if unknown)."""
    reason: str
    cause: Cause = Cause.REJECTED
    code: int = 0

    @property
    def retryable(self) -> bool:
        return self.cause.retryable


@dataclasses.dataclass(frozen=True)
class IncomingMessage:
    """A message someone sent to this company's account, already normalised."""
    id: str
    chat: str                 # chat JID: the sender's for 1:1, the group's for groups
    phone: str                # sender's phone number (digits)
    text: str
    timestamp: float          # Unix seconds
    push_name: str = ""
    is_group: bool = False
    # issue 13 (identity, groups): optional, so a transport that knows less still works.
    participant: str = ""     # a group message's sender JID (phone or LID form); "" for 1:1
    lid: str = ""             # the sender's LID JID (`<digits>@lid`), when known
    # issue 13 (inbound variety): text | media | edit | revoke | reaction | location | contact,
    # and what that kind carries (INCOMING_KINDS below; plain JSON values).
    kind: str = "text"
    content: dict = dataclasses.field(default_factory=dict)

    # Set by a transport whose client acknowledges messages (the simulator service): called
    # once the message is in the event log (actors/inbound.py), so one the gateway never
    # logged is delivered again. Local to this process: never on the wire.
    ack: Callable[[], None] | None = dataclasses.field(default=None, compare=False, repr=False,
                                                       metadata={"local": True})

    @property
    def event_kind(self) -> str:
        """The event it is published as: `message` for text and media, its own kind otherwise."""
        return INCOMING_KINDS.get(self.kind, "message")

    def details(self) -> dict:
        """What the event shows beyond the basic fields: the sender in both forms, in a
        group the participant, and the kind with its content."""
        return {"phoneJid": f"{self.phone}@s.whatsapp.net" if self.phone else None, "lid": self.lid or None,
                "participant": self.participant or None, "kind": self.kind,
                **{k: v for k, v in self.content.items() if k not in _BASIC_FIELDS}}


# What each kind carries (besides the basic fields) and the event kind it is published as.
#   media     mediaType (image|video|audio|document|sticker), mime, size, caption, fileName
#             (+ seconds, voiceNote); `text` is the caption       -> message
#   edit      targetId (the edited message), text (the new text) -> message.edit
#   revoke    targetId (deleted for everyone)                      -> message.revoke
#   reaction  targetId, emoji, removed (an empty emoji)             -> message.reaction
#   location  latitude, longitude, name, address, live             -> message.location
#   contact   contacts: [{displayName, vcard}]                     -> message.contact
INCOMING_KINDS = {"edit": "message.edit", "revoke": "message.revoke", "reaction": "message.reaction",
                  "location": "message.location", "contact": "message.contact"}
_BASIC_FIELDS = frozenset({"id", "chat", "phone", "text", "timestamp", "pushName", "isGroup", "kind",
                           "phoneJid", "lid", "participant"})


@dataclasses.dataclass(frozen=True)
class Receipt:
    """Delivery or read receipt for messages this company sent."""
    message_ids: tuple[str, ...]
    chat: str
    kind: str                 # delivered | read | played | ...
    timestamp: float


ConnectionEvent = (QrCode | QrExhausted | Paired | Connected | Disconnected | Interrupted | LoggedOut
                   | Replaced | TemporaryBan | ConnectFailure | IncomingMessage | Receipt)

EmitFn = Callable[[ConnectionEvent], None]


class SendError(Exception):
    """A send that failed. Three outcomes, because a resend can reach the recipient twice:
    - `retryable`: provably nothing left (not connected, failed before the request); the
      entry stays in the outbox and is tried again;
    - `unconfirmed`: the request may have reached WhatsApp (no answer in time, the link
      died mid-request); never resent by itself, reported as `unconfirmed`;
    - neither: WhatsApp refused it; reported as failed.
    `code` names the failure for code (e.g. NOT_ON_WHATSAPP), "" when there is no name."""

    NOT_ON_WHATSAPP = "not_on_whatsapp"      # the number has no WhatsApp account

    def __init__(self, message: str, *, retryable: bool, unconfirmed: bool = False,
                 code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable and not unconfirmed
        self.unconfirmed = unconfirmed
        self.code = code


class PairingCode(str):
    """A pairing code (the 8 characters the user types on the phone) that also knows how
    long it stays usable: `expires_in` seconds from when it was made."""

    expires_in: float

    def __new__(cls, code: str, expires_in: float) -> "PairingCode":
        self = super().__new__(cls, code)
        self.expires_in = float(expires_in)
        return self

    def __reduce__(self) -> tuple:
        return (PairingCode, (str(self), self.expires_in))


@dataclasses.dataclass(frozen=True)
class LogoutResult:
    """How a logout went: `told_whatsapp` False means WhatsApp never heard of it (offline,
    or its answer failed), so the phone still lists this device until it is removed there;
    `reason` says why, for people."""
    told_whatsapp: bool
    reason: str = ""


class Connection(Protocol):
    """One attempt at a live link to WhatsApp for one company.

    Nothing here blocks the caller: `open` starts connecting and returns at once, and
    everything that follows arrives as events; commands return futures. `close` is
    idempotent and returns at once too, with a future that resolves (to None) once the
    link is gone for good: no socket, no process left. Until then the connection may
    still emit what it had already received (IncomingMessage, Receipt), which WhatsApp
    will not send again; after it, nothing.
    """

    def open(self) -> None: ...

    def close(self) -> Future:
        """Start closing; the future resolves when the link is gone (already done if it is)."""
        ...

    def alive(self) -> bool:
        """False once the link is gone for good (closed, or its process died)."""
        ...

    def send(self, jid: str, payload: Payload) -> Future:
        """Resolves to the WhatsApp message id, or fails with SendError."""
        ...

    def pair_phone(self, phone: str) -> Future:
        """Resolves to an 8-character pairing code (needs a QR session in progress); a
        PairingCode (a str) also carries its `expires_in`."""
        ...

    def logout(self) -> Future:
        """Unlinks this device on WhatsApp's side; resolves to a LogoutResult (None from a
        transport that always tells WhatsApp). A failed future also means WhatsApp was not
        told: either way the session forgets its credentials and says the device may still
        be listed on the phone."""
        ...


class Transport(Protocol):
    """Makes connections for companies. One per gateway."""

    name: str
    # True when a send goes out under the payload's own `id` (the outbox's stable WhatsApp
    # message id), so a repeat is the same message to WhatsApp and recipients take it once.
    # neonize 0.5.2 cannot pin the id (send_message takes none): False there.
    pins_message_ids: bool = False

    def connect(self, company_id: str, company_dir: Path, emit: EmitFn) -> Connection: ...

    def forget(self, company_id: str, company_dir: Path) -> None:
        """Delete the stored credentials of a company (after logout)."""
        ...

    def close(self) -> None:
        """Release what the transport itself holds (threads, processes); waits, bounded,
        for the links still closing, so that none outlives the gateway."""
        ...
