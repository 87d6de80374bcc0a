"""Ownership by Redis lease with a fencing token: one owner per company across processes and hosts.

A lease is a hash `{owner, token}` with a TTL; the token comes from a counter that never
expires, so every new owner gets a larger token than any before it. Acquire, renew and
release are each one Lua script (atomic, on the server), and renew and release succeed
only for the holder with its token.

WhatsApp cannot check tokens, so the gateway fences itself: the `LeaseKeeper` renews
every held lease on one thread, and a lease it could not renew in time is given up
(`on_lost`, which makes the actor close its connection) a safety margin *before* it can
expire on the server. The margin covers closing the connection and a clock running at
a slightly different rate from the Redis server's. The deadline counts from the moment
the last successful renew was *sent*, so a slow answer only makes us give up earlier.

Writes to shared state carry the token (see `FENCED_HSET` and supervision/shared.py):
the server refuses a write whose token is not the newest ever issued for the company.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

import redis

from .ownership import LostFn

log = logging.getLogger(__name__)

PREFIX = "switchboard"

# KEYS: lease, fence counter. ARGV: owner, ttl_ms. -> {1, token} or {0, pttl_ms, holder}
ACQUIRE = """
local cur = redis.call('HGET', KEYS[1], 'owner')
if cur == false then
  local token = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, token}
elseif cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('HGET', KEYS[1], 'token'))}
end
return {0, redis.call('PTTL', KEYS[1]), cur}
"""
# KEYS: lease. ARGV: owner, token, ttl_ms. -> 1 extended, 0 not ours (any more)
RENEW = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'token') == ARGV[2] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
"""
# KEYS: lease. ARGV: owner, token. -> 1 released, 0 not ours
RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'token') == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Fenced writes. KEYS: lease, fence counter, target. ARGV: owner, token, must_hold, ...
# Accepted only if the token is the newest ever issued for the company, and the lease is
# held by this owner (must_hold=1: a writer that has held the lease) or by nobody
# (must_hold=0: a writer that never held it and read the state at that token). So an
# owner whose lease expired, or was taken, writes nothing more. -> 1 written, 0 refused
_FENCE_GUARD = """
local newest = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) ~= newest then return 0 end
local cur = redis.call('HGET', KEYS[1], 'owner')
if ARGV[3] == '1' then
  if cur ~= ARGV[1] then return 0 end
elseif cur ~= false then return 0 end
"""
# ... then set (or, for an empty value, delete) the hash fields ARGV[4..] (name, value pairs)
FENCED_HSET = _FENCE_GUARD + """
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[3], ARGV[i])
  else redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
return 1
"""
# ... then append ARGV[4] to the list
FENCED_RPUSH = _FENCE_GUARD + """
redis.call('RPUSH', KEYS[3], ARGV[4])
return 1
"""
# ... then replace the list with ARGV[4..]
FENCED_REPLACE = _FENCE_GUARD + """
redis.call('DEL', KEYS[3])
for i = 4, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
return 1
"""


def lease_key(company_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:lease:{{{company_id}}}"         # hash tag: a company's keys share a cluster slot


def fence_key(company_id: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:fence:{{{company_id}}}"


def instance_of(owner: str) -> str:
    """The instance id in a lease owner (`instance/nonce`)."""
    return owner.split("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class LeasePolicy:
    ttl: float = 15.0             # seconds a lease lives on the server without renewal
    renew_every: float = 3.0      # seconds between renewals
    close_budget: float = 4.0     # seconds an owner allows for closing its connection
    drift: float = 0.02           # our clock may run this much slower than the server's

    def __post_init__(self) -> None:
        if not 0 < self.renew_every * 2 < self.fence_after:
            raise ValueError(f"lease ttl {self.ttl:g} s leaves no room for two renewals every "
                             f"{self.renew_every:g} s plus {self.close_budget:g} s to close")

    @property
    def fence_after(self) -> float:
        """Seconds after a renew was sent by which the owner must have given the lease up."""
        return self.ttl * (1 - self.drift) - self.close_budget

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)


class LeaseScripts:
    """The lease's Lua scripts registered on one client (EVALSHA, EVAL after NOSCRIPT)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.acquire = client.register_script(ACQUIRE)
        self.renew = client.register_script(RENEW)
        self.release = client.register_script(RELEASE)
        self.fenced_hset = client.register_script(FENCED_HSET)
        self.fenced_rpush = client.register_script(FENCED_RPUSH)
        self.fenced_replace = client.register_script(FENCED_REPLACE)


def new_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisLease:
    """The Ownership of one company by one session actor (see the module docstring).

    Not re-entrant across objects: each lease has its own owner id (`instance/nonce`), so
    a restarted actor cannot connect while its predecessor's link is still closing.
    """

    def __init__(self, keeper: LeaseKeeper, company_id: str) -> None:
        self.company_id = company_id
        self._keeper = keeper
        self.owner = f"{keeper.instance_id}/{uuid.uuid4().hex[:8]}"
        self.key = lease_key(company_id, keeper.prefix)
        self.fence = fence_key(company_id, keeper.prefix)
        self._lock = threading.Lock()
        self._token: int | None = None
        self.last_token: int | None = None      # the newest token this lease ever held (fenced writes)
        self.deadline = 0.0                     # monotonic: give up before this (see the module docstring)
        self._on_lost: LostFn | None = None
        self._problem = "the lease was never asked for"

    @property
    def held(self) -> bool:
        return self._token is not None and time.monotonic() < self.deadline

    @property
    def token(self) -> int | None:
        return self._token

    def acquire(self, on_lost: LostFn) -> bool:
        with self._lock:
            if self._token is not None:
                self._on_lost = on_lost
                return True
            sent = time.monotonic()
            try:
                answer = self._keeper.scripts.acquire(keys=[self.key, self.fence],
                                                      args=[self.owner, self._keeper.policy.ttl_ms])
            except redis.RedisError as exc:
                self._problem = f"Redis is unreachable, so the lease cannot be taken ({exc.__class__.__name__})"
                return False
            if int(answer[0]) != 1:
                holder = answer[2].decode() if isinstance(answer[2], bytes) else str(answer[2])
                self._problem = (f"instance {instance_of(holder)} holds this company's lease "
                                 f"(for {int(answer[1]) / 1000:.1f} s more unless renewed)")
                return False
            self._token = self.last_token = int(answer[1])
            self.deadline = sent + self._keeper.policy.fence_after
            self._on_lost = on_lost
        self._keeper.track(self)
        return True

    def release(self) -> None:
        with self._lock:
            token, self._token = self._token, None
        self._keeper.untrack(self)
        if token is None:
            return
        try:
            self._keeper.scripts.release(keys=[self.key], args=[self.owner, token])
        except redis.RedisError:
            log.warning("[%s] could not release the lease; it expires by itself", self.company_id)

    def describe(self) -> str:
        return self._problem

    def fence_args(self, seen: int) -> list:
        """The first ARGV of a fenced write (owner, token, must_hold) by the actor of this
        lease; `seen` is the fence counter as it was when the state was read."""
        if self.last_token is not None:
            return [self.owner, self.last_token, 1]
        return [self.owner, seen, 0]

    # ---- the keeper's side -------------------------------------------------------------------

    def renewed(self, token: int, sent: float) -> None:
        with self._lock:
            if self._token == token:
                self.deadline = sent + self._keeper.policy.fence_after

    def lose(self, token: int, reason: str) -> None:
        """Stop vouching for the company; the actor is told to close its connection."""
        with self._lock:
            if self._token != token:
                return
            self._token = None
            on_lost = self._on_lost
            self._problem = reason
        self._keeper.untrack(self)
        log.warning("[%s] lease lost: %s", self.company_id, reason)
        if on_lost is not None:
            on_lost(reason)


class LeaseKeeper:
    """One thread that renews every held lease of this instance, in one pipeline per round,
    and gives up each lease it could not renew before its deadline."""

    def __init__(self, client: redis.Redis, instance_id: str, policy: LeasePolicy = LeasePolicy(),
                 prefix: str = PREFIX, renew_client: redis.Redis | None = None) -> None:
        self.client = client                       # acquire, release, fenced writes (the actors' threads)
        # Renewals on their own connections: a crowd of actors busy with Redis must never
        # make a renewal wait for a connection, and so make the leases lapse.
        self.renew_client = renew_client or client
        self.scripts = LeaseScripts(client)
        self.instance_id = instance_id
        self.policy = policy
        self.prefix = prefix
        self._leases: dict[int, RedisLease] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self.rounds = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def lease(self, company_id: str, _company_dir: object = None) -> RedisLease:
        """An OwnershipFactory: `SessionContext(ownership_factory=keeper.lease)`."""
        return RedisLease(self, company_id)

    def track(self, lease: RedisLease) -> None:
        with self._lock:
            self._leases[id(lease)] = lease
        self._wake.set()

    def untrack(self, lease: RedisLease) -> None:
        with self._lock:
            self._leases.pop(id(lease), None)

    def held(self) -> list[RedisLease]:
        with self._lock:
            return list(self._leases.values())

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        self._thread.join(5)

    def _run(self) -> None:
        next_renew = time.monotonic()
        while not self._stopped.is_set():
            now = time.monotonic()
            if now >= next_renew:
                self._renew_all()
                next_renew = time.monotonic() + self.policy.renew_every
            self._fence_overdue()
            leases = self.held()
            wake_at = min([next_renew] + [lease.deadline for lease in leases])
            self._wake.wait(max(0.0, min(wake_at - time.monotonic(), self.policy.renew_every)))
            self._wake.clear()

    def _renew_all(self) -> None:
        leases = [(lease, lease.token) for lease in self.held()]
        leases = [(lease, token) for lease, token in leases if token is not None]
        if not leases:
            return
        sent = time.monotonic()
        try:
            pipe = self.renew_client.pipeline(transaction=False)
            for lease, token in leases:
                self.scripts.renew(keys=[lease.key], args=[lease.owner, token, self.policy.ttl_ms], client=pipe)
            answers = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            log.warning("renewing %d leases failed: %s", len(leases), self.last_error)
            return
        self.rounds += 1
        self.last_error = None
        for (lease, token), answer in zip(leases, answers):
            if isinstance(answer, Exception):
                continue                  # that one stays on its old deadline
            if int(answer) == 1:
                lease.renewed(token, sent)
            else:
                lease.lose(token, "another instance holds the lease now (it expired before we renewed it)")

    def _fence_overdue(self) -> None:
        now = time.monotonic()
        for lease in self.held():
            token = lease.token
            if token is not None and now >= lease.deadline:
                lease.lose(token, f"the lease could not be renewed in time (Redis: {self.last_error or 'no answer'}); "
                                  "closing before it can expire")
