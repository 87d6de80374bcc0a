"""Shared state for takeover, kept in Redis so that whichever instance takes a company
over continues where the last owner stopped:

* `SharedRecord`: the company's record (desired state, resting state and reason, linked
  phone): should it be connected, and why is it down;
* `SharedJournal`: the outbox's journal (accepted sends not yet confirmed, and the
  idempotency keys), so a send accepted by an instance that dies is sent by the next
  owner, once, and a retried idempotency key is recognised there.

Every write is fenced (actors/lease.py): it carries the lease's token (or, for an actor
that never held the lease, the fence counter as it was when it read the state) and is
refused when the writer no longer holds the lease or another owner has taken it since,
so a frozen and resumed instance cannot overwrite what the new owner wrote, nor accept a
send. The record is also written to session.json as before, which is what a company
without a record in Redis (embedded data moving to a cluster) starts from.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import redis

from switchboard.actors.lease import PREFIX, LeaseScripts, RedisLease
from switchboard.actors.record import FIELDS as _FIELDS, RecordFields, SessionRecord

log = logging.getLogger(__name__)



def record_key(company_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:record:{{{company_id}}}"


def outbox_key(company_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:outbox:{{{company_id}}}"


class FencedWriteRefused(OSError):
    """This instance no longer owns the company: the shared state is not ours to change."""


class SharedRecord(RecordFields):
    """SessionRecord's interface, kept in Redis (and locally). Owned by one actor."""

    def __init__(self, scripts: LeaseScripts, company_id: str, company_dir: Path, lease: RedisLease,
                 prefix: str = PREFIX) -> None:
        self._scripts = scripts
        self._company_id = company_id
        self._lease = lease
        self._key = record_key(company_id, prefix)
        self._local = SessionRecord(company_dir, company_id)
        self.refused = 0
        self._seen = 0
        self._data = {wire: getattr(self._local, name) for name, wire in _FIELDS.items()}
        try:
            pipe = scripts.client.pipeline(transaction=False)
            pipe.hgetall(self._key)
            pipe.get(lease.fence)
            stored, fence = pipe.execute()
        except redis.RedisError as exc:
            log.warning("[%s] shared record unreadable (%s); using session.json", company_id, exc)
            return
        self._seen = int(fence or 0)
        if stored:
            self._data = {wire: (stored.get(wire.encode()) or b"").decode() or None for wire in _FIELDS.values()}

    def update(self, **changes: Any) -> None:
        data = self._changed(changes)
        if data is None:
            return
        self._data = data
        self._local.update(**changes)
        args: list[Any] = self._lease.fence_args(self._seen)
        for name in changes:
            args += [_FIELDS[name], "" if data[_FIELDS[name]] is None else str(data[_FIELDS[name]])]
        try:
            written = self._scripts.fenced_hset(keys=[self._lease.key, self._lease.fence, self._key], args=args)
        except redis.RedisError as exc:
            log.warning("[%s] could not write the shared record (%s); kept locally", self._company_id, exc)
            return
        if not written:
            self.refused += 1
            log.warning("[%s] shared record write refused: this instance no longer owns the company",
                        self._company_id)


class SharedJournal:
    """actors/journal.py's Journal interface over a Redis list, every write fenced.

    A write that Redis refuses (fenced) or cannot take (unreachable) raises OSError, as
    a full disk does for the file journal: the outbox then refuses the send (503) rather
    than accept what it could not make durable where the next owner can read it.
    """

    def __init__(self, scripts: LeaseScripts, company_id: str, lease: RedisLease, prefix: str = PREFIX) -> None:
        self._scripts = scripts
        self._company_id = company_id
        self._lease = lease
        self.key = outbox_key(company_id, prefix)
        self._seen = 0
        self.records_written = 0

    def read(self) -> Iterator[dict[str, Any]]:
        pipe = self._scripts.client.pipeline(transaction=False)
        pipe.lrange(self.key, 0, -1)
        pipe.get(self._lease.fence)
        try:
            items, fence = pipe.execute()
        except redis.RedisError as exc:
            raise OSError(f"the shared outbox is unreadable: {exc}") from exc
        self._seen = int(fence or 0)
        self.records_written = len(items)
        for item in items:
            try:
                record = json.loads(item)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def append(self, record: dict[str, Any]) -> None:
        self._write(self._scripts.fenced_rpush, [_dump(record)])
        self.records_written += 1

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        self._write(self._scripts.fenced_replace, [_dump(r) for r in records])
        self.records_written = len(records)

    def close(self) -> None:
        pass

    def _write(self, script: Any, values: list[str]) -> None:
        try:
            written = script(keys=[self._lease.key, self._lease.fence, self.key],
                             args=[*self._lease.fence_args(self._seen), *values])
        except redis.RedisError as exc:
            raise OSError(f"Redis did not take the write: {exc.__class__.__name__}") from exc
        if not written:
            raise FencedWriteRefused(f"session {self._company_id} is owned by another instance now")


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
