"""The Python embedding: a context-managed gateway in-process, with proxies to its sessions.

    with Switchboard(data_dir="data", transport="simulated") as board:
        board.on_message(lambda message: print(message.phone, message.text))
        session = board.session("962302")
        session.start().get(timeout=5)
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pykka

from switchboard.actors.connection import Transport
from switchboard.actors.context import SessionContext, SessionSettings
from switchboard.actors.errors import SessionUnavailable
from switchboard.actors.kinds import EventKind
from switchboard.actors.lifecycle import STATES
from switchboard.actors.messages import COMMANDS
from switchboard.actors.ownership import FileLock, OwnershipFactory
from switchboard.actors.phone import validate_company_id
from switchboard.actors.scheduler import Scheduler
from switchboard.actors.transports.simulated import SimulatedNetwork, SimulatedTransport

from .delivery import Delivery
from .eventlog import LogSettings
from .events import Event, EventBus
from .sinks import Sink, SinkFactory
from .supervisor import Directory, RestartPolicy, Supervisor

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InboundMessage:
    company_id: str
    id: str
    phone: str
    text: str
    chat: str
    push_name: str
    timestamp: float
    is_group: bool

    @classmethod
    def from_event(cls, event: Event) -> InboundMessage:
        d = event.data
        return cls(event.company_id or "", d["id"], d["phone"], d["text"], d["chat"], d.get("pushName", ""),
                   d["timestamp"], d.get("isGroup", False))


class SessionHandle:
    """A proxy for one company's session that survives actor restarts: every call looks
    up the live actor, waiting briefly if the supervisor is restarting it."""

    def __init__(self, board: Switchboard, company_id: str) -> None:
        self._board = board
        self.company_id = company_id

    def __getattr__(self, name: str) -> Callable[..., pykka.Future]:
        if name not in COMMANDS:
            raise AttributeError(name)
        return lambda *args, **kwargs: self.call(name, *args, **kwargs)

    def call(self, method: str, *args: Any, wait: float | None = None, **kwargs: Any) -> pykka.Future:
        """Ask the live actor. An actor that died before handling the call did not run
        it, so the call is retried once on its replacement; with no live actor the
        future fails with SessionUnavailable."""
        message = COMMANDS[method](*args, **kwargs)
        wait = self._board.restart_wait if wait is None else wait
        directory = self._board.directory
        ref = directory.wait_for(self.company_id, wait)
        if ref is None:
            return _failed(self._unavailable())
        first = ref.ask(message, block=False)

        def get(timeout: float | None) -> Any:
            started = time.monotonic()
            try:
                return first.get(timeout=timeout)
            except pykka.ActorDeadError:
                pass
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            replacement = directory.wait_for(self.company_id, min(wait, left) if left is not None else wait,
                                             dead=ref)
            if replacement is None:
                raise self._unavailable()
            try:
                return replacement.ask(message, block=True, timeout=left)
            except pykka.ActorDeadError:
                raise self._unavailable() from None

        future = pykka.ThreadingFuture()
        future.set_get_hook(get)
        return future

    def ask(self, method: str, *args: Any, timeout: float, **kwargs: Any) -> Any:
        """`call(...).get(timeout)` with one future fewer on the common path: a plain ask
        of the live actor; only if there is none, or it died before answering, the call
        goes through `call` (waiting for the restarted actor, retrying once)."""
        ref = self._board.directory.refs.get(self.company_id)
        if ref is not None:
            started = time.monotonic()
            try:
                return ref.ask(COMMANDS[method](*args, **kwargs), timeout=timeout)
            except pykka.ActorDeadError:
                timeout = max(0.01, timeout - (time.monotonic() - started))
        return self.call(method, *args, **kwargs).get(timeout=timeout)

    def _unavailable(self) -> SessionUnavailable:
        return SessionUnavailable(f"session {self.company_id} is restarting or not running",
                                  state="restarting", retry_after_ms=1000)

    def wait_for(self, *states: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until the session is in one of `states`; returns its status.
        Raises TimeoutError with the last status otherwise."""
        return self._board.wait_for_state(self.company_id, states, timeout)

    def __repr__(self) -> str:
        return f"<SessionHandle {self.company_id}>"


class Switchboard:
    def __init__(self, data_dir: str | Path = "data", transport: str | Transport = "simulated", *,
                 settings: SessionSettings | None = None, restart_policy: RestartPolicy | None = None,
                 network: SimulatedNetwork | None = None, restore: bool = True, ask_timeout: float = 5.0,
                 restart_wait: float = 2.0, transport_options: dict[str, Any] | None = None,
                 sinks: Iterable[SinkFactory] = (), redis_url: str | None = None,
                 restore_stagger: float | None = None, ownership: OwnershipFactory | None = None,
                 cluster: Any = None, log_settings: LogSettings | None = None, webhook_retry: Any = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.settings = settings or SessionSettings()
        self.restart_policy = restart_policy or RestartPolicy()
        self.ask_timeout = ask_timeout
        self.restart_wait = restart_wait
        self._restore = restore
        self.transport = _make_transport(transport, network, transport_options or {})
        self.network: SimulatedNetwork | None = getattr(self.transport, "network", None)
        # Each neonize session is a process; the spawner's start gate (at most one start-up
        # per CPU at once) sets the pace of a restore, and this floor of 0.02 s between
        # first attempts keeps it under 50 new WhatsApp dials a second on any machine.
        self.restore_stagger = restore_stagger if restore_stagger is not None else \
            (0.02 if self.transport.name == "neonize" else 0.0)
        self.directory = Directory()
        self.scheduler: Scheduler | None = None
        self.bus: EventBus | None = None
        self.ctx: SessionContext | None = None
        self._supervisor: pykka.ActorRef | None = None
        self.started_at: float | None = None
        self._sink_factories = tuple(sinks)
        self.sinks: list[Sink] = []
        self.log_settings = log_settings
        self.webhook_retry = webhook_retry
        self.delivery: Delivery | None = None
        self.redis_url = redis_url
        self.redis = None
        self.ownership = ownership          # None: a lock file per company (embedded mode)
        self.cluster = cluster              # supervision/cluster.py's Cluster when distributed
        if cluster is not None:             # leases, a shared record, and placement decides what runs here
            self.ownership = cluster.lease
            self._restore = False
        self._remove_locks: dict[str, threading.Lock] = {}    # one removal at a time per company
        self._remove_locks_guard = threading.Lock()

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> Switchboard:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.scheduler = Scheduler()
        retry = {"webhook_retry": self.webhook_retry} if self.webhook_retry is not None else {}
        self.delivery = Delivery(self.data_dir, self.log_settings, **retry)
        self.bus = EventBus(self.data_dir / "supervisor.log", event_log=self.delivery.log)
        self.delivery.start(self._sink_factories)      # before any session: every event has its reader
        self.sinks = [runner.sink for runner in self.delivery.runners.values()]
        self.ctx = SessionContext(self.data_dir, self.transport, self.scheduler, self.settings, self.bus.publish,
                                  limiter_factory=self._redis_limiter_factory(),
                                  ownership_factory=self.ownership or FileLock.for_company,
                                  record_factory=self.cluster.record if self.cluster is not None else None,
                                  outbox_journal_factory=self.cluster.outbox if self.cluster is not None else None)
        self._supervisor = Supervisor.start(self.ctx, self.directory, self.restart_policy)
        self.started_at = time.time()
        self.bus.publish(None, EventKind.GATEWAY, {"action": "started", "transport": self.transport.name})
        if self._restore:
            self.supervisor.restore(self.restore_stagger).get(timeout=30)
        if self.cluster is not None:
            self.cluster.start(self)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every session (connections closed, children ended), then every thread."""
        if self.cluster is not None:
            self.cluster.leave()            # take nothing more up; the leases go as the sessions stop
        if self._supervisor is not None:
            try:
                self._supervisor.stop(block=True, timeout=timeout)
            except pykka.Timeout:
                log.error("the supervisor did not stop within %s s", timeout)
            self._supervisor = None
        self.transport.close()
        if self.bus is not None:
            self.bus.publish(None, EventKind.GATEWAY, {"action": "stopped"})
            self.bus.close()
        if self.delivery is not None:
            self.delivery.close()       # sinks stop; what they did not deliver waits after their cursors
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.redis is not None:
            self.redis.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Switchboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _redis_limiter_factory(self):
        if not self.redis_url:
            return None
        import redis

        from switchboard.actors.redis_limiter import RedisLimiter
        # Short timeouts: an actor asks Redis on its own thread and must not hang on it.
        self.redis = redis.Redis.from_url(self.redis_url, socket_timeout=0.25, socket_connect_timeout=0.25)
        return lambda company_id, limit: RedisLimiter(self.redis, company_id, limit)

    @property
    def supervisor(self):
        if self._supervisor is None:
            raise RuntimeError("the switchboard is not running")
        return self._supervisor.proxy()

    # ---- sessions -----------------------------------------------------------------------

    def session(self, company_id: str, *, create: bool = True) -> SessionHandle:
        """The handle of a company's session; creates the (stopped) session if needed."""
        validate_company_id(company_id)
        if create and (company_id not in self.directory.refs or company_id in self.directory.parked):
            self.supervisor.ensure(company_id).get(timeout=self.ask_timeout)
        return SessionHandle(self, company_id)

    def exists(self, company_id: str) -> bool:
        d = self.directory
        return company_id in d.refs or company_id in d.restarting or company_id in d.parked

    def company_ids(self) -> list[str]:
        d = self.directory
        return sorted(set(d.refs) | set(d.restarting) | set(d.parked))

    def remove(self, company_id: str, *, logout: bool = True) -> bool:
        """Log out (unless told not to), give up its pending sends, stop the actor, and
        delete the company's files. The files stay if the actor could not be stopped: its
        connection may still be alive, and its owner.lock must keep guarding it."""
        validate_company_id(company_id)
        with self._removing(company_id):     # a second DELETE waits, then finds nothing to remove
            return self._remove(company_id, logout)

    def _remove(self, company_id: str, logout: bool) -> bool:
        if not self.exists(company_id):
            return False
        handle = SessionHandle(self, company_id)
        try:
            if logout:
                handle.logout().get(timeout=self.ask_timeout)
            handle.call("discard_outbox", "session deleted").get(timeout=self.ask_timeout)
        except pykka.Timeout:
            raise                # a stuck actor: remove nothing, let the caller answer at once
        except SessionUnavailable:
            pass                 # no live actor (parked, restarting): nothing to log out
        except Exception:
            log.warning("preparing %s for removal failed; removing anyway", company_id, exc_info=True)
        ref = self.supervisor.detach(company_id).get(timeout=self.ask_timeout)
        if ref is not None:
            try:
                ref.stop(block=True, timeout=30)
            except pykka.Timeout:
                raise RuntimeError(f"session {company_id} did not stop within 30 s; its files were kept") from None
        if not self.supervisor.remove_files(company_id).get(timeout=self.ask_timeout):
            raise SessionUnavailable(f"session {company_id} was created again while it was being deleted; "
                                     "it is running and its files were kept", state="recreated")
        if self.delivery is not None:
            self.delivery.delete_webhook(company_id)
        return True

    def hand_over(self, company_id: str) -> bool:
        """Stop the company's actor here and keep its files: another instance takes it over
        (distributed mode). Returns at once; the actor closes its connection and releases
        its lease on its own thread."""
        ref = self.supervisor.detach(company_id).get(timeout=self.ask_timeout)
        if ref is None:
            return False
        ref.stop(block=False)
        return True

    def _removing(self, company_id: str) -> threading.Lock:
        with self._remove_locks_guard:
            return self._remove_locks.setdefault(company_id, threading.Lock())

    def live_status(self, company_id: str, max_busy: float) -> dict[str, Any] | None:
        """The status the session's actor published after its last message, when that is
        what an ask would answer: the actor is alive and not stuck in a message for longer
        than `max_busy` seconds. None otherwise (then ask it, and let the timeout speak).
        The actor publishes before it replies, so a caller reads its own writes."""
        ref = self.directory.refs.get(company_id)
        if ref is None or not ref.is_alive() or self.ctx is None:
            return None
        return self.ctx.status_board.live(company_id, max_busy)

    def statuses(self) -> list[dict[str, Any]]:
        """Every session's last published status (no actor is asked)."""
        return [self._snapshot(cid) for cid in self.company_ids()]

    def metrics(self) -> dict[str, Any]:
        """Global figures, derived from the sessions' states (never kept as counters)."""
        statuses = self.statuses()
        by_state = collections.Counter(s["status"] for s in statuses)
        return {
            "totalSessions": len(statuses),
            "activeConnections": by_state.get("connected", 0),
            "sessionsByState": {state: by_state.get(state, 0) for state in (*STATES, "restarting")},
            "messagesSent": sum(s.get("messagesSent", 0) for s in statuses),
            "messagesReceived": sum(s.get("messagesReceived", 0) for s in statuses),
            "queuedMessages": sum(s.get("queued", 0) for s in statuses),
            "reconnecting": by_state.get("reconnecting", 0),
            "uptimeSeconds": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "transport": self.transport.name,
        }

    def _snapshot(self, company_id: str) -> dict[str, Any]:
        """What a reader sees: the session's own status, or what the supervisor knows of it."""
        published = self.ctx.status_board.get(company_id) if self.ctx else None
        directory = self.directory
        if company_id in directory.restarting:
            return {**(published or {}), "companyId": company_id, "status": "restarting", "connected": False,
                    "lastError": "session actor crashed; restarting"}
        if company_id in directory.parked and company_id not in directory.refs:
            return {"companyId": company_id, "status": "failed", "connected": False,
                    "lastError": directory.parked[company_id]}
        return published or {"companyId": company_id, "status": "stopped", "connected": False}

    def wait_for_state(self, company_id: str, states: Iterable[str], timeout: float) -> dict[str, Any]:
        wanted = frozenset(states)
        changed = threading.Condition()

        def wake(_event: Event) -> None:
            with changed:
                changed.notify_all()
        unsubscribe = self.on_event(wake, kinds=(EventKind.STATE, EventKind.SPAWNED, EventKind.RESTARTING,
                                                 EventKind.GAVE_UP), company_id=company_id)
        try:
            deadline = time.monotonic() + timeout
            with changed:
                while True:
                    status = self._snapshot(company_id)
                    if status["status"] in wanted:
                        return status
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"{company_id} is {status['status']}, not {'/'.join(sorted(wanted))}, "
                                           f"after {timeout:g} s (last error: {status.get('lastError')})")
                    changed.wait(left)
        finally:
            unsubscribe()

    # ---- events -------------------------------------------------------------------------

    def on_event(self, callback: Callable[[Event], None], kinds: Iterable[str] | None = None,
                 company_id: str | None = None) -> Callable[[], None]:
        """Call `callback(event)` for every event (of `kinds`, of `company_id`). Returns unsubscribe."""
        wanted = frozenset(kinds) if kinds else None

        def deliver(event: Event) -> None:
            if (wanted is None or event.kind in wanted) and (company_id is None or event.company_id == company_id):
                callback(event)
        return self.bus.subscribe(deliver)

    def on_message(self, callback: Callable[[InboundMessage], None],
                   company_id: str | None = None) -> Callable[[], None]:
        """Call `callback(message)` once for every incoming message."""
        return self.on_event(lambda event: callback(InboundMessage.from_event(event)), (EventKind.MESSAGE,),
                             company_id)


def _failed(error: Exception) -> pykka.Future:
    future = pykka.ThreadingFuture()
    try:
        raise error
    except type(error):
        future.set_exception()
    return future


def _make_transport(transport: str | Transport, network: SimulatedNetwork | None,
                    options: dict[str, Any]) -> Transport:
    if not isinstance(transport, str):
        return transport
    if transport == "simulated":
        if options.get("simulator_url"):
            # `switchboard simulator` over sockets: no in-process network (board.network is None)
            from switchboard.actors.transports.simulated.remote import RemoteTransport
            return RemoteTransport(options["simulator_url"])
        return SimulatedTransport(network or SimulatedNetwork(**options))
    if transport == "neonize":
        # Imported here: the neonize transport spawns child processes; the gateway never imports neonize.
        from switchboard.actors.transports.neonize import NeonizeTransport
        return NeonizeTransport(**options)
    raise ValueError(f"unknown transport {transport!r}: neonize or simulated")
