"""Supervisor: spawns one SessionActor per company and restarts the ones that crash.

One-for-one: a crash restarts only that company's actor, after a backoff, and a
company that crashes too often (restart intensity) is parked as `failed` with the
reason while every other company keeps running. The map of live actor refs is
published as an immutable dict (`Directory.refs`) so that the HTTP layer and proxies
look actors up without going through the supervisor's mailbox.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import shutil
import threading
import time
from typing import Any, Callable

import pykka

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.phone import validate_company_id
from switchboard.actors.context import SessionContext
from switchboard.actors.kinds import EventKind
from switchboard.actors.messages import ChildExit
from switchboard.actors.ownership import FileLock
from switchboard.actors.messages import tell_quietly
from switchboard.actors.session import SessionActor

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    backoff: BackoffPolicy = BackoffPolicy(base=0.5, factor=2.0, cap=10.0, jitter=0.2)
    max_restarts: int = 5          # per company ...
    period: float = 60.0           # ... within this many seconds, else the company is parked
    sweep_interval: float = 2.0    # safety net: find actors that died without reporting
    shutdown_timeout: float = 30.0 # every session must have stopped by then


class Directory:
    """company id -> live ActorRef, swapped whole on every change (reads need no lock)."""

    def __init__(self) -> None:
        self.refs: dict[str, pykka.ActorRef] = {}
        self.restarting: dict[str, float] = {}       # company id -> when the restart is due
        self.parked: dict[str, str] = {}             # company id -> why no actor can run for it
        self._changed = threading.Condition()

    def publish(self, refs: dict[str, pykka.ActorRef], restarting: dict[str, float],
                parked: dict[str, str] | None = None) -> None:
        with self._changed:
            self.refs, self.restarting, self.parked = refs, restarting, dict(parked or {})
            self._changed.notify_all()

    def wait_for(self, company_id: str, timeout: float,
                 dead: pykka.ActorRef | None = None) -> pykka.ActorRef | None:
        """The live ref; if the company is being restarted (or its ref is `dead`, one that
        was found dead but not yet replaced), wait up to `timeout` for the new one."""
        def settled() -> bool:
            ref = self.refs.get(company_id)
            if ref is not None:
                return ref is not dead
            return company_id not in self.restarting

        if not settled() and timeout > 0:
            with self._changed:
                self._changed.wait_for(settled, timeout)
        ref = self.refs.get(company_id)
        return None if ref is dead else ref


@dataclasses.dataclass(frozen=True)
class RestartChild:
    company_id: str
    generation: int


@dataclasses.dataclass(frozen=True)
class Sweep:
    pass


@dataclasses.dataclass
class _Child:
    company_id: str
    ref: pykka.ActorRef | None = None
    status: str = "running"          # running | backoff | stopping | parked (no actor could run)
    runs_parked: bool = False        # the running actor is a parked one (state failed)
    dead_since: float | None = None  # when the sweep first found the actor dead
    generation: int = 0
    attempt: int = 0
    started_at: float = 0.0
    restarts: collections.deque = dataclasses.field(default_factory=collections.deque)
    last_reason: str | None = None


class Supervisor(pykka.ThreadingActor):
    def __init__(self, ctx: SessionContext, directory: Directory, policy: RestartPolicy = RestartPolicy(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._ctx = ctx
        self._directory = directory
        self._policy = policy
        self._clock = clock
        self._children: dict[str, _Child] = {}
        self._order: list[str] = []
        self._restart_due: dict[str, float] = {}

    def on_start(self) -> None:
        self._ctx.scheduler.call_later(self._policy.sweep_interval, self._tell, Sweep())

    def on_stop(self) -> None:
        """Stop every session at once (each closes its connection in parallel), then
        wait for all of them within one overall deadline."""
        stopping = []
        for company_id in reversed(self._order):
            child = self._children.get(company_id)
            if child is None or child.ref is None:
                continue
            child.status = "stopping"
            stopping.append((company_id, child.ref.stop(block=False)))
        deadline = time.monotonic() + self._policy.shutdown_timeout
        for company_id, future in stopping:
            try:
                future.get(timeout=max(0.1, deadline - time.monotonic()))
            except pykka.Timeout:
                log.error("session %s did not stop in time (its thread is leaked)", company_id)
        self._children.clear()
        self._publish_refs()

    # ---- public API (through the proxy) ------------------------------------------------

    def ensure(self, company_id: str) -> bool:
        """Make sure the company has a session actor. True if it was created now."""
        validate_company_id(company_id)
        child = self._children.get(company_id)
        if child is not None and child.status != "parked":
            return False
        self._spawn(child or _Child(company_id))
        return True

    def restore(self, stagger: float = 0.0) -> list[str]:
        """Spawn an actor for every company that has a directory; each resumes what it was
        doing, the n-th one connecting `n * stagger` seconds after the first."""
        restored = []
        if self._ctx.data_dir.is_dir():
            for path in sorted(self._ctx.data_dir.iterdir()):
                if (path / "session.json").is_file() and path.name not in self._children:
                    try:
                        validate_company_id(path.name)
                    except ValueError:
                        continue
                    self._spawn(_Child(path.name), start_delay=len(restored) * stagger)
                    restored.append(path.name)
        return restored

    def detach(self, company_id: str) -> pykka.ActorRef | None:
        """Forget a company; the caller stops the returned actor (never inside this mailbox)."""
        child = self._children.pop(company_id, None)
        if company_id in self._order:
            self._order.remove(company_id)
        self._publish_refs()
        if child is None:
            return None
        child.status = "stopping"
        child.generation += 1
        return child.ref

    def remove_files(self, company_id: str) -> bool:
        """Delete a detached company's files; False (nothing deleted) if it has an actor
        again (created anew while it was being removed).

        owner.lock goes last, and only if it can be taken: a link of an earlier actor that
        is still closing keeps its lock, and with it the file, so that a new actor cannot
        create a fresh owner.lock beside a live connection."""
        validate_company_id(company_id)
        if company_id in self._children:
            return False
        company_dir = self._ctx.company_dir(company_id)
        lock = FileLock.for_company(company_id, company_dir)
        if company_dir.is_dir():
            for path in company_dir.iterdir():
                if path == lock.path:
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if lock.acquire(lambda _reason: None):
                try:
                    shutil.rmtree(company_dir, ignore_errors=True)
                finally:
                    lock.release()
        self._ctx.status_board.drop(company_id)
        self._ctx.publish(company_id, EventKind.REMOVED, {})
        return True

    def children(self) -> dict[str, dict[str, Any]]:
        return {cid: {"status": c.status, "restarts": len(c.restarts), "lastReason": c.last_reason}
                for cid, c in self._children.items()}

    # ---- messages ------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildExit):
            self._on_child_exit(message)
        elif isinstance(message, RestartChild):
            child = self._children.get(message.company_id)
            if child and child.status == "backoff" and child.generation == message.generation:
                self._spawn(child)
        elif isinstance(message, Sweep):
            now = self._clock()
            for child in list(self._children.values()):
                if child.status == "running" and child.ref is not None and not child.ref.is_alive():
                    # pykka marks a crashed actor dead before its on_failure has closed the
                    # connection and reported; only an actor still dead a sweep later is lost.
                    if child.dead_since is None:
                        child.dead_since = now
                    elif now - child.dead_since >= self._policy.sweep_interval:
                        self._on_child_exit(ChildExit(child.company_id, child.ref.actor_urn, False,
                                                      "found dead by the supervisor's sweep"))
            self._ctx.scheduler.call_later(self._policy.sweep_interval, self._tell, Sweep())
        return None

    def _spawn(self, child: _Child, parked_reason: str | None = None, start_delay: float = 0.0) -> None:
        self._children[child.company_id] = child
        if child.company_id not in self._order:
            self._order.append(child.company_id)
        child.runs_parked, child.dead_since = parked_reason is not None, None
        try:
            child.ref = SessionActor.start(child.company_id, self._ctx, supervisor=self.actor_ref,
                                           parked_reason=parked_reason, start_delay=start_delay)
        except Exception as exc:          # e.g. no thread could be started: retry later, stay alive
            log.exception("could not start the session actor of %s", child.company_id)
            child.ref, child.status = None, "backoff"
            child.generation += 1
            self._ctx.publish(child.company_id, EventKind.CRASHED, {"error": f"could not start: {exc!r}"})
            self._ctx.scheduler.call_later(self._policy.backoff.cap, self._tell,
                                           RestartChild(child.company_id, child.generation))
            self._publish_refs()
            return
        child.status, child.started_at = "running", self._clock()
        self._publish_refs()
        self._ctx.publish(child.company_id, EventKind.SPAWNED, {"attempt": child.attempt,
                                                                 "parked": bool(parked_reason)})

    def _on_child_exit(self, exit_: ChildExit) -> None:
        child = self._children.get(exit_.company_id)
        if child is None or child.ref is None or child.ref.actor_urn != exit_.urn:
            return   # a report from an earlier incarnation
        if child.status == "stopping" or exit_.normal:
            return
        if child.status != "running":
            return
        now = self._clock()
        child.last_reason = exit_.reason
        self._ctx.publish(child.company_id, EventKind.CRASHED, {"error": exit_.reason, "traceback": exit_.traceback})
        if child.runs_parked:
            # Even the parked actor, which connects nothing, crashed: stop trying.
            reason = f"cannot run even parked (last error: {exit_.reason}); start it again once fixed"
            child.status, child.ref, child.last_reason = "parked", None, reason
            self._ctx.publish(child.company_id, EventKind.GAVE_UP, {"error": reason})
            self._publish_refs()
            return
        while child.restarts and now - child.restarts[0] > self._policy.period:
            child.restarts.popleft()
        if len(child.restarts) >= self._policy.max_restarts:
            reason = (f"crashed {len(child.restarts) + 1} times within {self._policy.period:g} s; parked "
                      f"(last error: {exit_.reason})")
            self._ctx.publish(child.company_id, EventKind.GAVE_UP, {"error": reason})
            child.restarts.clear()
            child.attempt = 0
            self._spawn(child, parked_reason=reason)
            return
        child.restarts.append(now)
        if now - child.started_at >= self._policy.backoff.stable_after:
            child.attempt = 0
        delay = self._policy.backoff.delay(child.attempt, self._ctx.rng)
        child.attempt += 1
        child.generation += 1
        child.status = "backoff"
        self._restart_due[child.company_id] = time.time() + delay
        self._publish_refs()
        self._ctx.publish(child.company_id, EventKind.RESTARTING, {"delaySeconds": round(delay, 3),
                                                           "attempt": child.attempt})
        self._ctx.scheduler.call_later(delay, self._tell, RestartChild(child.company_id, child.generation))

    def _publish_refs(self) -> None:
        self._restart_due = {cid: due for cid, due in self._restart_due.items()
                             if cid in self._children and self._children[cid].status == "backoff"}
        self._directory.publish({cid: c.ref for cid, c in self._children.items()
                                 if c.status == "running" and c.ref is not None}, dict(self._restart_due),
                                {cid: c.last_reason or "parked" for cid, c in self._children.items()
                                 if c.status == "parked"})

    def _tell(self, message: Any) -> None:
        tell_quietly(self.actor_ref, message)
