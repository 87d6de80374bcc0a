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


# Media kinds a send may carry and their size limits (WhatsApp's own, issue 13).
MEDIA_LIMITS = {"image": 16 * 2 ** 20, "video": 64 * 2 ** 20, "audio": 16 * 2 ** 20, "document": 100 * 2 ** 20}


@dataclasses.dataclass(frozen=True)
class Media:
    """A media send: a file the gateway already stored in the company's directory (the
    transport is only ever given this local file), with its kind and what it shows."""
    media_type: str           # image | video | audio | document
    file: str                 # absolute path of the stored file
    sha256: str
    mime: str
    size: int
    caption: str = ""
    file_name: str = ""
    id: str | None = dataclasses.field(default=None, compare=False)   # as Text.id
    kind = "media"

    def as_record(self) -> dict[str, Any]:
        return {"type": self.kind, "mediaType": self.media_type, "file": self.file, "sha256": self.sha256,
                "mime": self.mime, "size": self.size, "caption": self.caption, "fileName": self.file_name}

    def digest_source(self) -> str:
        return f"media\n{self.media_type}\n{self.sha256}\n{self.caption}\n{self.file_name}"


Payload = Text | Media


def from_record(record: dict[str, Any]) -> Payload:
    """The payload an outbox line stored (lines from before payloads hold a bare "text")."""
    kind = record.get("type", "text")
    if kind == "text":
        return Text(record["text"])
    if kind == "media":
        return Media(record["mediaType"], record["file"], record["sha256"], record["mime"], int(record["size"]),
                     record.get("caption", ""), record.get("fileName", ""))
    raise ValueError(f"unknown payload type {kind!r}")


def fingerprint(to: str, payload: Payload) -> str:
    """What an idempotency key is bound to, to tell a retry of the same message from a new
    message reusing its key: the recipient and the content (for text, the same digest as
    before payloads existed, so keys stored by an older outbox still match)."""
    return hashlib.sha256(f"{to}\n{payload.digest_source()}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
