"""The durable outbox: sends accepted but not yet confirmed by WhatsApp, in order.

Records: {"op": "add", ...entry} when a send is accepted, {"op": "sending", "id"} just
before it is handed to the connection, {"op": "returned", "id"} when the connection
proved it did not go out (it may be handed over again), {"op": "done", "id",
"messageId"} once WhatsApp took it, {"op": "failed", "id", "error"} when it can never
go out, {"op": "unconfirmed", "id", "error"} when it may have reached WhatsApp but no
answer says so. Replaying the file gives the pending sends and the idempotency keys in
use. An entry still `sending` at replay (the gateway ended mid-send) is unconfirmed:
never handed over again by itself, because neonize cannot pin WhatsApp's message id
and a resend could reach the recipient twice.
"""
from __future__ import annotations

import collections
import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

from .journal import Journal
from .payload import Payload, fingerprint, from_record

INTERRUPTED_SEND = ("the gateway stopped while WhatsApp had not answered this send; it may have been "
                    "delivered and is not resent")
KEYS_KEPT = 1000          # idempotency keys remembered after their send went out
COMPACT_EVERY = 2000      # records appended before the file is rewritten


@dataclasses.dataclass
class OutboxEntry:
    id: str
    to: str                       # phone digits
    jid: str
    payload: Payload
    key: str | None = None
    accepted_at: float = dataclasses.field(default_factory=time.time)
    attempts: int = 0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to, self.payload)

    def as_record(self) -> dict[str, Any]:
        return {"id": self.id, "to": self.to, "jid": self.jid, "payload": self.payload.as_record(),
                "key": self.key, "accepted_at": self.accepted_at, "attempts": self.attempts}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> OutboxEntry:
        """Raises KeyError/TypeError/ValueError on a record it cannot read."""
        record = dict(record)
        # Lines written before payloads existed carry the text itself.
        payload = from_record(record.pop("payload") if "payload" in record else {"text": record.pop("text")})
        return cls(payload=payload, **record)


@dataclasses.dataclass(frozen=True)
class KeyedResult:
    id: str
    message_id: str | None        # None while the send is pending
    error: str | None = None
    fingerprint: str | None = None    # of the message the key was first used for
    unconfirmed: bool = False         # the outcome is unknown: `error` says why


class Outbox:
    def __init__(self, path: Path, *, fsync: bool = False, journal: Any = None, keys_kept: int = KEYS_KEPT,
                 resend_interrupted: bool = False) -> None:
        self.keys_kept = keys_kept     # the idempotency window: keys remembered per company
        # `journal`: another store with Journal's interface (distributed mode: Redis)
        self._journal = journal if journal is not None else Journal(path, fsync=fsync)
        self._pending: collections.OrderedDict[str, OutboxEntry] = collections.OrderedDict()
        self._keys: collections.OrderedDict[str, KeyedResult] = collections.OrderedDict()
        self._sending: set[str] = set()           # pending entries handed to a connection
        for record in self._journal.read():
            self._replay(record)
        # Handed over before the last stop and never answered: the outcome is unknown, unless
        # the transport sends under the entry's own message id (`resend_interrupted`): then a
        # repeat is the same message, and the entry is simply handed over again.
        if resend_interrupted:
            self._sending.clear()
        self.recovered_unconfirmed: list[str] = [entry_id for entry_id in self._pending if entry_id in self._sending]
        for entry_id in self.recovered_unconfirmed:
            self.unconfirmed(entry_id, INTERRUPTED_SEND)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._pending

    def get(self, entry_id: str) -> OutboxEntry | None:
        return self._pending.get(entry_id)

    def head(self) -> OutboxEntry | None:
        return next(iter(self._pending.values()), None)

    def pending(self) -> list[OutboxEntry]:
        return list(self._pending.values())

    def by_key(self, key: str) -> KeyedResult | None:
        return self._keys.get(key)

    def add(self, entry: OutboxEntry) -> None:
        """Durably accept a send. Raises OSError (and keeps nothing) if the disk refuses."""
        self._journal.append({"op": "add", **entry.as_record()})
        self._pending[entry.id] = entry
        if entry.key:
            self._remember(entry.key, KeyedResult(entry.id, None, None, entry.fingerprint))

    def sending(self, entry_id: str) -> None:
        """It is about to be handed to the connection: from now on its outcome may be
        unknown. If the disk refuses the record it goes out anyway (a crash before its
        answer could then send it twice, as a lost "done" record could)."""
        if entry_id in self._pending and entry_id not in self._sending:
            self._sending.add(entry_id)
            self._append_or_keep({"op": "sending", "id": entry_id})

    def returned(self, entry_id: str) -> None:
        """The connection proved it did not go out: it may be handed over again."""
        if entry_id in self._sending:
            self._sending.discard(entry_id)
            self._append_or_keep({"op": "returned", "id": entry_id})

    def unconfirmed(self, entry_id: str, error: str) -> None:
        """It may have reached WhatsApp, and nothing says whether: it leaves the outbox
        (never resent by itself), its key remembers that the outcome is unknown."""
        self._settle(entry_id, None, error, unconfirmed=True)

    def done(self, entry_id: str, message_id: str) -> None:
        """WhatsApp took it: it leaves the outbox, its key remembers the message id."""
        self._settle(entry_id, message_id, None)

    def failed(self, entry_id: str, error: str) -> None:
        """It can never go out: it leaves the outbox, its key remembers why."""
        self._settle(entry_id, None, error)

    def _settle(self, entry_id: str, message_id: str | None, error: str | None, *, unconfirmed: bool = False) -> None:
        entry = self._pending.pop(entry_id, None)
        self._sending.discard(entry_id)
        if entry is None:
            return
        if entry.key:
            self._remember(entry.key, KeyedResult(entry.id, message_id, error, entry.fingerprint, unconfirmed))
        if error is None:
            self._append_or_keep({"op": "done", "id": entry_id, "messageId": message_id})
        else:
            self._append_or_keep({"op": "unconfirmed" if unconfirmed else "failed", "id": entry_id, "error": error})

    def close(self) -> None:
        self._journal.close()

    def _append_or_keep(self, record: dict) -> None:
        # A lost "done" record means one duplicate send after a restart, never a lost
        # message: the entry is simply still pending in the file.
        try:
            self._journal.append(record)
            # Compact once the dead records outweigh the live ones, never on every write.
            if self._journal.records_written >= COMPACT_EVERY + 2 * (len(self._pending) + len(self._keys)):
                self._compact()
        except OSError:
            pass

    def _compact(self) -> None:
        records = [{"op": "key", "key": k, "id": r.id, "messageId": r.message_id, "error": r.error,
                    "fingerprint": r.fingerprint, "unconfirmed": r.unconfirmed}
                   for k, r in self._keys.items() if r.message_id is not None or r.error is not None]
        records += [{"op": "add", **e.as_record()} for e in self._pending.values()]
        records += [{"op": "sending", "id": entry_id} for entry_id in self._pending if entry_id in self._sending]
        self._journal.rewrite(records)

    def _remember(self, key: str, result: KeyedResult) -> None:
        self._keys[key] = result
        self._keys.move_to_end(key)
        while len(self._keys) > self.keys_kept + len(self._pending):
            self._keys.popitem(last=False)

    def _replay(self, record: dict) -> None:
        op = record.pop("op", None)
        if op == "add":
            try:
                entry = OutboxEntry.from_record(record)
            except (KeyError, TypeError, ValueError):
                return
            self._pending[entry.id] = entry
            if entry.key:
                self._remember(entry.key, KeyedResult(entry.id, None, None, entry.fingerprint))
        elif op == "sending":
            if record.get("id") in self._pending:
                self._sending.add(record["id"])
        elif op == "returned":
            self._sending.discard(record.get("id"))
        elif op in ("done", "failed", "unconfirmed"):
            self._sending.discard(record.get("id"))
            entry = self._pending.pop(record.get("id"), None)
            if entry and entry.key:
                self._remember(entry.key, KeyedResult(entry.id, record.get("messageId"), record.get("error"),
                                                      entry.fingerprint, op == "unconfirmed"))
        elif op == "key":
            self._remember(record["key"], KeyedResult(record["id"], record.get("messageId"), record.get("error"),
                                                      record.get("fingerprint"), bool(record.get("unconfirmed"))))
