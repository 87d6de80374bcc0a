"""Shared state for takeover: the company's record (desired state, resting state and
reason, linked phone) kept in Redis, so that whichever instance takes a company over
knows whether it should be connected and why it is down.

Every write is fenced (actors/lease.py `FENCED_HSET`): it carries the newest token this
record knows (the lease's, or the fence counter as loaded) and is refused when another
owner has taken the company since, so a frozen and resumed instance cannot overwrite
what the new owner wrote. The record is also written to session.json as before, which
is what a company without a record in Redis (embedded data moving to a cluster) starts
from.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis

from switchboard.actors.lease import PREFIX, LeaseScripts, RedisLease
from switchboard.actors.record import SessionRecord

log = logging.getLogger(__name__)

_FIELDS = {"desired": "desired", "state": "state", "last_error": "lastError", "phone": "phone"}


def record_key(company_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:record:{{{company_id}}}"


class SharedRecord:
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

    @property
    def desired(self) -> str | None:
        return self._data.get("desired")

    @property
    def state(self) -> str | None:
        return self._data.get("state")

    @property
    def last_error(self) -> str | None:
        return self._data.get("lastError")

    @property
    def phone(self) -> str | None:
        return self._data.get("phone")

    def update(self, **changes: Any) -> None:
        data = dict(self._data)
        for name, value in changes.items():
            data[_FIELDS[name]] = value
        if data == self._data:
            return
        self._data = data
        self._local.update(**changes)
        token = max(self._lease.last_token or 0, self._seen)
        args: list[Any] = [self._lease.owner, token]
        for name in changes:
            args += [_FIELDS[name], "" if data[_FIELDS[name]] is None else str(data[_FIELDS[name]])]
        try:
            written = self._scripts.fenced_hset(keys=[self._lease.key, self._lease.fence, self._key], args=args)
        except redis.RedisError as exc:
            log.warning("[%s] could not write the shared record (%s); kept locally", self._company_id, exc)
            return
        if not written:
            self.refused += 1
            log.warning("[%s] shared record write refused: another instance owns this company now (token %d)",
                        self._company_id, token)
