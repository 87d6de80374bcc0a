"""The event vocabulary: every kind of event a session or the supervisor publishes.

One home for the names, so the publishers, the supervisor log, the webhook defaults,
the metrics and the HTTP filters cannot drift apart. `EventKind` is a `str` enum: a kind
compares equal to its wire name, which is what subscribers and clients see.
"""
from __future__ import annotations

import enum


class EventKind(str, enum.Enum):
    # a session's traffic and lifecycle
    MESSAGE = "message"                 # an incoming message
    RECEIPT = "receipt"                 # delivered / read / played, for messages we sent
    SENT = "message.sent"               # WhatsApp took a send
    FAILED = "message.failed"           # a send failed for good
    UNCONFIRMED = "message.unconfirmed"  # a send may have reached WhatsApp, no answer says so; not resent
    STATE = "state"                     # the lifecycle state changed (or a retry was scheduled)
    QR = "qr"                           # a new QR code to show
    PAIRED = "paired"                   # the phone linked this device
    RECONNECT_FAILED = "reconnect_failed"   # WHATSAPP_MAX_RECONNECT_ATTEMPTS reached (and every as many after)
    # supervision
    SPAWNED = "spawned"
    CRASHED = "crashed"
    RESTARTING = "restarting"
    GAVE_UP = "gave_up"
    REMOVED = "removed"
    GATEWAY = "gateway"                 # the gateway itself started or stopped

    def __str__(self) -> str:
        return self.value


# Written to the supervisor log: supervision and lifecycle, not message traffic.
LOGGED = frozenset({EventKind.STATE, EventKind.SPAWNED, EventKind.CRASHED, EventKind.RESTARTING,
                    EventKind.GAVE_UP, EventKind.REMOVED, EventKind.PAIRED, EventKind.GATEWAY,
                    EventKind.RECONNECT_FAILED, EventKind.UNCONFIRMED})
# What a webhook receives unless it names its kinds.
WEBHOOK_DEFAULT = (EventKind.MESSAGE, EventKind.STATE, EventKind.QR, EventKind.PAIRED, EventKind.SENT,
                   EventKind.FAILED, EventKind.RECEIPT, EventKind.UNCONFIRMED, EventKind.RECONNECT_FAILED)
NAMES = frozenset(kind.value for kind in EventKind)
