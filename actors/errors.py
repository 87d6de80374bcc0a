"""The errors a session answers a request with (the HTTP layer maps each to a status)."""
from __future__ import annotations

from .phone import InvalidInput        # 400: bad input; re-exported so callers need one import

__all__ = ["InvalidInput", "OutboxUnavailable", "SessionUnavailable"]


class SessionUnavailable(Exception):
    """The session cannot take this request in its current state (HTTP 409)."""

    def __init__(self, message: str, *, state: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.state = state
        self.retry_after_ms = retry_after_ms


class OutboxUnavailable(Exception):
    """The outbox could not store the send durably (disk full, I/O error): nothing accepted."""
