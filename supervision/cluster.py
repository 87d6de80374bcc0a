"""Distributed mode: several gateway instances share the companies through Redis.

The Cluster is what one instance adds to its Switchboard when `--redis-url` is given:

* ownership by Redis lease with fencing (actors/lease.py) instead of a lock file;
* the company's record shared in Redis with fenced writes (shared.py);
* membership (membership.py) and placement (placement.py): a coordinator thread
  advertises this instance every round, reads the live members and the registry of
  companies (`switchboard:companies`), and starts here the companies assigned to it
  whose lease is free, hands over (at most `max_moves` a round) the ones it runs but
  that now belong elsewhere, and stops its actors of companies another instance holds;
* the owner lookup the HTTP router forwards by (http/routing.py).

When Redis is unreachable a round fails and changes nothing: the actors keep their
connections for as long as their leases allow, then close them (self-fencing).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from switchboard.actors.kinds import EventKind
from switchboard.actors.lease import PREFIX, LeaseKeeper, LeasePolicy, RedisLease, instance_of, lease_key, \
    new_instance_id

from .membership import Membership
from .placement import Assignments, Member, owner_for, plan
from .shared import SharedJournal, SharedRecord, outbox_key, record_key

if TYPE_CHECKING:
    from .board import Switchboard

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    redis_url: str
    url: str = ""                      # where other instances reach this one (http://host:port)
    instance_id: str | None = None     # default: host-pid-random
    capacity: int = 1000               # placement weight: companies this instance is sized for
    lease: LeasePolicy = LeasePolicy()
    tick: float = 1.0                  # seconds between coordinator rounds
    member_ttl: float | None = None    # default: half the lease TTL (a dead member is noticed first)
    max_moves: int = 20                # companies handed over per round (a join moves them gently)
    drain_timeout: float = 5.0         # a company being handed over waits this long for its sends to settle
    prefix: str = PREFIX


class OwnerUnreachable(Exception):
    """The company's lease is held by an instance that is no longer a live member."""


class Cluster:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.id = settings.instance_id or new_instance_id()
        timeout = min(1.0, settings.lease.renew_every / 2)
        # Three pools, so that none can starve another: the coordinator and routing; the
        # lease renewals; the session actors (leases, fenced writes), where a thread waits
        # for a free connection rather than failing when thousands start at once.
        self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        renewals = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        actors = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=64, timeout=2.0, socket_timeout=timeout,
            socket_connect_timeout=timeout))
        self.clients = (self.client, renewals, actors)
        self.keeper = LeaseKeeper(actors, self.id, settings.lease, settings.prefix, renew_client=renewals)
        member_ttl = settings.member_ttl or max(1.0, settings.lease.ttl / 2)
        self.membership = Membership(self.client, Member(self.id, settings.url, settings.capacity), member_ttl,
                                     settings.prefix)
        self.members: dict[str, Member] = {}
        self.board: Switchboard | None = None
        self.rounds = 0
        self.last_error: str | None = None
        self.moves: list[tuple[float, str, str]] = []        # (time, company, "take"/"hand_over"/"evict")
        self._registry = f"{settings.prefix}:companies"
        self._assignments = Assignments()
        self.moving: dict[str, float] = {}       # company -> since when it is being handed over
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe = None

    # ---- what the Switchboard is built with -----------------------------------------------

    def lease(self, company_id: str, company_dir: Path) -> RedisLease:
        return self.keeper.lease(company_id, company_dir)

    def record(self, company_id: str, company_dir: Path, lease: RedisLease) -> SharedRecord:
        return SharedRecord(self.keeper.scripts, company_id, company_dir, lease, self.settings.prefix)

    def outbox(self, company_id: str, lease: RedisLease) -> SharedJournal:
        return SharedJournal(self.keeper.scripts, company_id, lease, self.settings.prefix)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self, board: Switchboard) -> None:
        """Join: register the companies found in the data directory, then coordinate."""
        self.board = board
        self._unsubscribe = board.on_event(self._on_event, kinds=(EventKind.SPAWNED, EventKind.REMOVED))
        local = [p.name for p in board.data_dir.iterdir() if (p / "session.json").is_file()] \
            if board.data_dir.is_dir() else []
        try:
            if local:
                self.client.sadd(self._registry, *local)
            self.round()
        except redis.RedisError as exc:
            self.last_error = str(exc)
            log.warning("cluster: Redis unreachable at start (%s); retrying every round", exc)
        self._thread = threading.Thread(target=self._run, name="cluster-coordinator", daemon=True)
        self._thread.start()

    def leave(self) -> None:
        """Stop coordinating and leave the member list (the leases go as the actors stop)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        try:
            self.membership.leave()
        except redis.RedisError:
            pass

    def close(self) -> None:
        self.keeper.close()
        for client in self.clients:
            client.close()

    # ---- the coordinator ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.wait(self.settings.tick):
            try:
                self.round()
            except redis.RedisError as exc:
                self.last_error = f"{exc.__class__.__name__}: {exc}"
                log.warning("cluster round failed: %s", self.last_error)
            except Exception:
                log.exception("cluster round failed")

    def round(self) -> None:
        board = self.board
        if self.membership.me.url:          # a member only once others can reach it
            self.membership.heartbeat()
        members = self.membership.live()
        self.members = {m.id: m for m in members}
        companies = [c.decode() for c in self.client.smembers(self._registry)]
        local = board.company_ids()
        everything = sorted(set(companies) | set(local))
        holders = self.holders(everything)
        todo = plan(self.id, companies, local, holders, members, self.settings.max_moves,
                    self._assignments.for_members(members))
        now = time.time()
        for company_id in todo.evict:
            self._move(now, company_id, "evict")
        self._hand_over(now, todo.hand_over)
        for company_id in todo.take:
            try:
                board.session(company_id)
            except Exception as exc:
                log.warning("cluster: could not take up %s: %s", company_id, exc)
                continue
            self.moves.append((now, company_id, "take"))
        self._kick_waiting(local, holders, todo.assigned)
        self.moves = self.moves[-1000:]
        self.rounds += 1
        self.last_error = None

    def _hand_over(self, now: float, due: list[str]) -> None:
        """Hand companies over gently: first they take no new requests here (503, retry:
        after the move they reach the new owner), then, once nothing of theirs is queued or
        in flight (or after `drain_timeout`), the actor stops and its lease goes. A send in
        flight when its link closes has an unknown outcome: the new owner would send it
        again."""
        due_set = set(due)
        for company_id in list(self.moving):
            if company_id not in due_set:            # placement changed its mind: it stays
                del self.moving[company_id]
        for company_id in due:
            if company_id not in self.moving and len(self.moving) < self.settings.max_moves:
                self.moving[company_id] = time.monotonic()
        for company_id, since in list(self.moving.items()):
            status = self.board.ctx.status_board.get(company_id) or {}
            if status.get("queued", 0) == 0 or time.monotonic() - since > self.settings.drain_timeout:
                del self.moving[company_id]
                self._move(now, company_id, "hand_over")

    def _move(self, now: float, company_id: str, why: str) -> None:
        try:
            self.board.hand_over(company_id)
        except Exception as exc:
            log.warning("cluster: could not hand over %s: %s", company_id, exc)
            return
        self.moves.append((now, company_id, why))
        self.board.bus.publish(company_id, EventKind.GATEWAY, {"action": why, "instance": self.id})

    def _kick_waiting(self, local: list[str], holders: dict[str, str | None], assigned: dict[str, str]) -> None:
        """Reconcile the sessions of ours that nobody holds a lease for:

        * one that waits for its lease (Redis was down, or the last owner was still
          closing) connects now that the lease is free, instead of at its backoff;
        * one that is stopped here while the shared record says it should run was started
          elsewhere after our actor read the record (two instances briefly had an actor
          for it, the other one then handed it over): ours is stale, so it goes, and the
          next round starts a fresh one from the shared state."""
        free = [c for c in local if holders.get(c) is None and assigned.get(c) == self.id]
        if not free:
            return
        pipe = self.client.pipeline(transaction=False)
        for company_id in free:
            pipe.hget(record_key(company_id, self.settings.prefix), "desired")
        desired = dict(zip(free, pipe.execute()))
        for company_id in free:
            status = self.board.ctx.status_board.get(company_id) or {}
            try:
                if status.get("status") == "reconnecting" and "lease" in (status.get("lastError") or ""):
                    self.board.session(company_id, create=False).ask("reconnect", timeout=self.board.ask_timeout)
                elif status.get("status") == "stopped" and desired[company_id] == b"running":
                    self._move(time.time(), company_id, "refresh")
            except Exception as exc:
                log.info("cluster: could not wake %s: %s", company_id, exc)

    def holders(self, company_ids: list[str]) -> dict[str, str | None]:
        """company -> the instance holding its lease (None: nobody), in one round trip."""
        if not company_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for company_id in company_ids:
            pipe.hget(lease_key(company_id, self.settings.prefix), "owner")
        owners = pipe.execute()
        return {c: instance_of(o.decode()) if o else None for c, o in zip(company_ids, owners)}

    def _on_event(self, event: Any) -> None:
        """Keep the registry of companies: created ones join it, deleted ones leave it."""
        try:
            if event.kind == EventKind.SPAWNED:
                self.client.sadd(self._registry, event.company_id)
            elif event.kind == EventKind.REMOVED:
                pipe = self.client.pipeline(transaction=False)
                pipe.srem(self._registry, event.company_id)
                pipe.delete(record_key(event.company_id, self.settings.prefix))
                pipe.delete(outbox_key(event.company_id, self.settings.prefix))
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("cluster: registry not updated for %s (%s)", event.company_id, exc)

    # ---- routing and operations -----------------------------------------------------------

    def owner_of(self, company_id: str) -> Member | None:
        """The member that should answer for the company: its lease holder, else the one
        placement assigns it to. None: this instance (or nobody knows better)."""
        try:
            holder = self.client.hget(lease_key(company_id, self.settings.prefix), "owner")
        except redis.RedisError:
            return None
        if holder:
            instance = instance_of(holder.decode())
            if instance == self.id:
                return None
            member = self.members.get(instance)
            if member is None:
                raise OwnerUnreachable(f"instance {instance} holds session {company_id} but is not alive; "
                                       f"it is taken over within {self.settings.lease.ttl:g} s")
            return member
        target = owner_for(company_id, self.members.values())
        return None if target is None or target.id == self.id else target

    def advertise(self, url: str) -> None:
        """Where other instances reach this one (known once the HTTP server listens); until
        then this instance is not a member, and placement assigns it nothing."""
        self.settings = dataclasses.replace(self.settings, url=url)
        self.membership.me = dataclasses.replace(self.membership.me, url=url)

    def drain(self, member_id: str, draining: bool = True) -> None:
        self.membership.set_draining(member_id, draining)

    def describe(self) -> dict[str, Any]:
        """This instance's view of the cluster, for the admin API."""
        held = len(self.keeper.held())
        return {"instance": self.id, "url": self.settings.url, "rounds": self.rounds, "lastError": self.last_error,
                "leasesHeld": held, "sessions": len(self.board.company_ids()) if self.board else 0,
                "leaseTtlSeconds": self.settings.lease.ttl,
                "members": [{"id": m.id, "url": m.url, "capacity": m.capacity, "draining": m.draining}
                            for m in self.members.values()]}
