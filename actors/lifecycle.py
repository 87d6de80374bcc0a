"""The lifecycle policy: the design's signal table, as data.

Which connection signal ends a connection, and what follows it:

| signal                                   | state          | afterwards                              |
| ---------------------------------------- | -------------- | --------------------------------------- |
| Interrupted (the transport reconnects)   | `reconnecting` | keep the link, sending paused; Connected |
|                                          |                | within the grace resumes, else close and |
|                                          |                | backoff                                  |
| Disconnected / ConnectFailure, retryable | `reconnecting` | backoff (capped), then connect again,    |
|                                          |                | without end; `reconnect_failed` told     |
|                                          |                | every max attempts                       |
| Disconnected / ConnectFailure, otherwise | `failed`       | an operator decides (start, reconnect);  |
|                                          |                | desired state kept: a restart retries    |
| LoggedOut (401 unlinked, 403 locked,     | `logged_out`   | credentials deleted; never reconnect;    |
| 406 banned)                              |                | lastError says which                     |
| Replaced (stream replaced, 440)          | `conflict`     | never reconnect by itself               |
| TemporaryBan                             | `banned`       | one attempt when the ban ends           |
| QrExhausted                              | `stopped`      | "QR expired"; the next start shows a QR |

Whether a drop is retryable is its typed `Cause` (actors/connection.py), set by the
transport. The delays themselves live in backoff.py.
"""
from __future__ import annotations

import dataclasses
import enum

from .connection import ConnectFailure, ConnectionEvent, Disconnected, LoggedOut, QrExhausted, Replaced, TemporaryBan

STATES = ("stopped", "starting", "qr", "connected", "reconnecting", "failed", "logged_out", "conflict", "banned")
# States from which the session comes back by itself: a send is queued, not refused.
RECOVERING = ("starting", "reconnecting")
# States a session stays in until someone acts; remembered across actor restarts.
RESTING = ("stopped", "failed", "logged_out", "conflict")


class After(enum.Enum):
    """What follows an ending signal."""
    RETRY = "retry"            # backoff, then connect again (or `failed` for a cause that cannot heal)
    WAIT_BAN = "wait_ban"      # one attempt once the ban is over
    NOTHING = "nothing"        # stay until an operator acts


@dataclasses.dataclass(frozen=True)
class Reaction:
    state: str                  # the state to enter
    error: str                  # lastError, formatted with the signal's reason and, for a ban, its delay
    after: After
    stay_down: bool = False     # desired state becomes "stopped": a restart must not reconnect
    forget: bool = False        # delete the stored credentials


POLICY: dict[type, Reaction] = {
    Disconnected: Reaction("reconnecting", "{reason}", After.RETRY),
    ConnectFailure: Reaction("reconnecting", "{reason}", After.RETRY),
    LoggedOut: Reaction("logged_out", "logged out: {reason}", After.NOTHING, stay_down=True, forget=True),
    Replaced: Reaction("conflict", "conflict: {reason}; not reconnecting (use reconnect to take over)",
                       After.NOTHING, stay_down=True),
    TemporaryBan: Reaction("banned", "temporarily banned ({reason}) for {delay:g} s", After.WAIT_BAN),
    QrExhausted: Reaction("stopped", "{reason}", After.NOTHING, stay_down=True),
}

_LOGGED_OUT = {
    403: "WhatsApp locked this account (403); the owner must unlock it in WhatsApp on the phone, "
         "then start the session and scan a new QR code",
    406: "WhatsApp banned this account (406); scanning a new QR code will not help: the owner must "
         "appeal to WhatsApp",
}


def reason_of(event: ConnectionEvent) -> str:
    """The signal's reason as lastError shows it: what happened, and what a person can do."""
    reason = getattr(event, "reason", "")
    if isinstance(event, LoggedOut):
        return _LOGGED_OUT.get(event.code, f"{reason}; start the session and scan a new QR code")
    code = getattr(event, "code", 0)          # 0: unknown
    if code and str(code) not in reason:
        return f"{reason} (code {code})"
    return reason

_REFUSALS = {
    "stopped": "session is stopped; start it first",
    "qr": "session is not linked yet; scan the QR code first",
    "failed": "session failed ({error}); reconnect it first",
    "logged_out": "session is {error}",
    "conflict": "another client took over this WhatsApp account; reconnect to take it back",
    "banned": "WhatsApp temporarily banned this account",
}


def refusal(state: str, last_error: str | None) -> str:
    """Why a send is refused in `state`, for a person."""
    if state == "logged_out" and not last_error:
        return "the phone unlinked this session; start it and scan a new QR code"
    return _REFUSALS.get(state, "session is {state}").format(state=state, error=last_error)


def accepts_sends(state: str) -> bool:
    """Connected, or coming back by itself (then the send waits in the outbox)."""
    return state == "connected" or state in RECOVERING
