"""What a send carries. Text today; media joins as another payload type, and only the
payload, one connection method and the HTTP layer change for it.

Validation of a payload's content lives here, once: the HTTP layer checks JSON types,
the actor builds the payload, and a bad one raises InvalidInput (HTTP 400).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from .phone import InvalidInput

MAX_TEXT = 65536


@dataclasses.dataclass(frozen=True)
class Text:
    text: str
    # The WhatsApp message id to send it under, chosen by the outbox (sending.py): a resend
    # after a crash reuses it, so WhatsApp takes it once (None: the transport picks one).
    id: str | None = dataclasses.field(default=None, compare=False)
    kind = "text"

    @classmethod
    def of(cls, value: Any) -> Text:
        """A checked text payload: non-blank, at most MAX_TEXT characters, valid Unicode."""
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput("'message' is required and must not be empty")
        if len(value) > MAX_TEXT:
            raise InvalidInput(f"'message' is longer than {MAX_TEXT} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("message text is not valid Unicode (lone surrogate)") from None
        return cls(value)

    def as_record(self) -> dict[str, Any]:
        return {"type": self.kind, "text": self.text}

    def digest_source(self) -> str:
        """The content an idempotency key is bound to (other kinds prefix their kind)."""
        return self.text


Payload = Text                  # a union once media exists: Text | Media


def from_record(record: dict[str, Any]) -> Payload:
    """The payload an outbox line stored (lines from before payloads hold a bare "text")."""
    kind = record.get("type", "text")
    if kind == "text":
        return Text(record["text"])
    raise ValueError(f"unknown payload type {kind!r}")


def fingerprint(to: str, payload: Payload) -> str:
    """What an idempotency key is bound to, to tell a retry of the same message from a new
    message reusing its key: the recipient and the content (for text, the same digest as
    before payloads existed, so keys stored by an older outbox still match)."""
    return hashlib.sha256(f"{to}\n{payload.digest_source()}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
