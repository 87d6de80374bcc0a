"""Membership: each instance advertises itself in Redis, and reads who else is alive.

An instance writes `switchboard:member:<id>` (its id, URL and capacity, as JSON) with a
TTL and refreshes it every round; its id is also in the set `switchboard:members`. A
member whose key has expired is dead: it is dropped from the set by whoever notices.
A drain flag `switchboard:drain:<id>` (set from any instance) makes placement move the
member's companies away; the member stays alive and keeps answering requests.
"""
from __future__ import annotations

import json
import time

import redis

from .placement import Member

PREFIX = "switchboard"
DRAIN_TTL = 7 * 24 * 3600      # a forgotten drain flag does not outlive a week


class Membership:
    def __init__(self, client: redis.Redis, me: Member, ttl: float, prefix: str = PREFIX) -> None:
        self.client = client
        self.me = me
        self.ttl = ttl
        self.prefix = prefix
        self._set = f"{prefix}:members"

    def _key(self, member_id: str) -> str:
        return f"{self.prefix}:member:{member_id}"

    def _drain_key(self, member_id: str) -> str:
        return f"{self.prefix}:drain:{member_id}"

    def heartbeat(self) -> None:
        info = json.dumps({"id": self.me.id, "url": self.me.url, "capacity": self.me.capacity,
                           "heartbeat": time.time()})
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self._key(self.me.id), info, px=int(self.ttl * 1000))
        pipe.sadd(self._set, self.me.id)
        pipe.execute()

    def live(self) -> list[Member]:
        """Every member whose heartbeat has not expired, with its drain flag."""
        ids = sorted(m.decode() for m in self.client.smembers(self._set))
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([self._key(i) for i in ids])
        pipe.mget([self._drain_key(i) for i in ids])
        infos, drains = pipe.execute()
        members, dead = [], []
        for member_id, info, drain in zip(ids, infos, drains):
            if info is None:
                dead.append(member_id)
                continue
            try:
                data = json.loads(info)
                members.append(Member(member_id, str(data["url"]), int(data["capacity"]), draining=drain is not None))
            except (ValueError, KeyError, TypeError):
                continue                  # not written by an instance: not a member
        if dead:
            self.client.srem(self._set, *dead)
        return members

    def leave(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self._key(self.me.id))
        pipe.srem(self._set, self.me.id)
        pipe.delete(self._drain_key(self.me.id))
        pipe.execute()

    def set_draining(self, member_id: str, draining: bool) -> None:
        if draining:
            self.client.set(self._drain_key(member_id), "1", ex=DRAIN_TTL)
        else:
            self.client.delete(self._drain_key(member_id))
