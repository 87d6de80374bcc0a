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
    send_timeout: float = 60.0         # a send with no answer this long is tried again
    close_wait: float = 15.0           # a stopping actor waits this long for its link to be gone
    idempotency_keys: int = 1000       # Idempotency-Keys remembered per company after their send went out


Publish = Callable[[str, str, dict[str, Any]], None]           # (company_id, kind, data)
LimiterFactory = Callable[[str, RateLimit], Limiter]            # (company_id, limits)


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

    def make_limiter(self, company_id: str) -> Limiter:
        if self.limiter_factory is None:
            return SlidingWindowLimiter(self.settings.rate_limit)
        return self.limiter_factory(company_id, self.settings.rate_limit)

    def make_ownership(self, company_id: str, company_dir: Path) -> Ownership:
        return self.ownership_factory(company_id, company_dir)

    def company_dir(self, company_id: str) -> Path:
        return self.data_dir / validate_company_id(company_id)
