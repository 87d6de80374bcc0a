"""What every session actor of one gateway shares: settings and the services it uses.

Nothing in here is shared mutable state of the actors': the status board has one
writer per company, and the rest are services (transport, scheduler, publish) or
factories for the parts each actor owns (limiter, ownership).
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Callable

from .backoff import BackoffPolicy
from .connection import Transport
from .ownership import FileLock, Ownership, OwnershipFactory
from .phone import validate_company_id
from .record import SessionRecord
from .ratelimit import Limiter, RateLimit, SlidingWindowLimiter
from .scheduler import Scheduler
from .status import StatusBoard


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    backoff: BackoffPolicy = BackoffPolicy()
    rate_limit: RateLimit = RateLimit()
    health_interval: float = 30.0      # seconds between health ticks
    connect_timeout: float = 90.0      # `starting` longer than this counts as a failed attempt
    logout_timeout: float = 10.0
    fsync: bool = False                # fsync every outbox write (survive power loss, slower)
    max_queued: int = 1000             # pending sends per company before new ones are refused
    # Longer than whatsmeow's own 75 s wait for the server's answer, and a little longer than
    # the neonize transport's 90 s (its answer says more): a send with no answer this long is
    # settled `unconfirmed` (it may have been delivered), never resent.
    send_timeout: float = 100.0
    close_wait: float = 15.0           # a stopping actor waits (and still listens) this long for its link to go
    reconnect_grace: float = 30.0      # an interrupted link may come back by itself this long
    # A keep-alive black hole: whatsmeow forces its own reconnect after 3 minutes; let it act first.
    keepalive_grace: float = 200.0
    pair_timeout: float = 60.0         # paired, but no Connected this long: reconnect with the stored credentials
    pair_code_fresh: float = 60.0      # a pairing code asked later into a QR session gets a fresh session
    pair_code_window: float = 160.0    # whatsmeow's QR session (60 s + 5 x 20 s): a pairing code's lifetime
    idempotency_keys: int = 1000       # Idempotency-Keys remembered per company after their send went out


Publish = Callable[[str, str, dict[str, Any]], None]           # (company_id, kind, data)
LimiterFactory = Callable[[str, RateLimit], Limiter]            # (company_id, limits)
RecordFactory = Callable[[str, Path, Ownership], Any]          # (company_id, company dir, its ownership)
JournalFactory = Callable[[str, Ownership], Any]                # (company_id, its ownership) -> a Journal


@dataclasses.dataclass
class SessionContext:
    data_dir: Path
    transport: Transport
    scheduler: Scheduler
    settings: SessionSettings
    publish: Publish
    status_board: StatusBoard = dataclasses.field(default_factory=StatusBoard)
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    limiter_factory: LimiterFactory | None = None          # None: in memory (no Redis)
    ownership_factory: OwnershipFactory = FileLock.for_company
    record_factory: RecordFactory | None = None            # None: session.json only (no shared state)
    outbox_journal_factory: JournalFactory | None = None   # None: outbox.jsonl in the company dir

    def make_limiter(self, company_id: str) -> Limiter:
        if self.limiter_factory is None:
            return SlidingWindowLimiter(self.settings.rate_limit)
        return self.limiter_factory(company_id, self.settings.rate_limit)

    def make_ownership(self, company_id: str, company_dir: Path) -> Ownership:
        return self.ownership_factory(company_id, company_dir)

    def make_record(self, company_id: str, company_dir: Path, ownership: Ownership) -> SessionRecord:
        if self.record_factory is None:
            return SessionRecord(company_dir, company_id)
        return self.record_factory(company_id, company_dir, ownership)

    def make_outbox_journal(self, company_id: str, ownership: Ownership) -> Any:
        """The outbox's store; None: the file in the company's directory."""
        if self.outbox_journal_factory is None:
            return None
        return self.outbox_journal_factory(company_id, ownership)

    def company_dir(self, company_id: str) -> Path:
        return self.data_dir / validate_company_id(company_id)
