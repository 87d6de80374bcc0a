"""What every route shares: the HTTP settings and `AppState` (the board, the keys, the
counters and streams), plus the three ways a route reaches a session."""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from switchboard.supervision.board import SessionHandle, Switchboard

from . import metrics as metrics_mod
from . import qr as qr_mod
from .auth import ApiKeys, PageTokens, WebSessions, load_or_create_secret
from .limits import Shares
from .plumbing import not_found
from .sse import EventStreams
from .totals import Totals


@dataclasses.dataclass
class HttpSettings:
    ask_timeout: float | None = None      # every actor call; None: the board's ask_timeout
    send_wait: float = 5.0                # how long a send to a connected session waits for WhatsApp's ack
    qr_wait: float = 2.0                  # how long initialize waits for the first QR code
    body_limit: int = 512 * 1024          # bytes; larger bodies answer 413
    sse_max_streams: int = 8
    sse_heartbeat: float = 15.0
    simulator: bool | None = None         # mount /api/simulator; None: when the transport is simulated
    log_limit_max: int = 5000
    # fair shares (limits.py); the admin key is exempt
    max_requests_per_key: int = 4         # requests in progress per tenant key
    max_requests_per_address: int = 8     # requests in progress per client address (tenant keys and no key)
    max_streams_per_address: int = 4      # event streams per client address


class AppState:
    """What the routes share; `app.switchboard` in the app returned by make_app."""

    def __init__(self, board: Switchboard, config: Any, keys: ApiKeys, settings: HttpSettings) -> None:
        self.board = board
        self.config = config              # the gateway's Config when served (None when embedded)
        self.keys = keys
        self.settings = settings
        self.ask_timeout: float = settings.ask_timeout if settings.ask_timeout is not None else board.ask_timeout
        self.counters = metrics_mod.Counters()
        self.request_times = metrics_mod.RequestTimes()
        self.streams = EventStreams(board, max_streams=settings.sse_max_streams, heartbeat=settings.sse_heartbeat)
        self.registry = metrics_mod.make_registry(board, self.counters, lambda: self.streams.count,
                                                 self.request_times)
        # one persisted secret: QR page links and dashboard cookies outlive a restart
        secret = load_or_create_secret(board.data_dir / "web.secret")
        self.page_tokens = PageTokens(secret)
        self.web = WebSessions(secret)
        self.shares = Shares(per_key=settings.max_requests_per_key, per_address=settings.max_requests_per_address,
                             streams_per_address=settings.max_streams_per_address)
        self.totals = Totals(board.data_dir / "totals.json")
        self.draining = threading.Event()
        self.started_at = time.time()
        self.simulator: bool = board.network is not None if settings.simulator is None else settings.simulator
        self.spec_bytes = b"{}"               # the OpenAPI document, set by make_app once the routes are known
        self._unsubscribe = board.on_event(self.counters.on_event)
        self._unsubscribe_totals = board.on_event(self.totals.on_event)
        keys.on_revoke(self._revoked)

    def _revoked(self, key_id: str) -> None:
        """A revoked key loses its open event streams at once (requests check it anyway)."""
        close = getattr(self.streams, "close_tenant", None)
        if close is not None:
            close(key_id)

    @property
    def network(self) -> Any:
        """The in-process simulated WhatsApp (the simulator routes' target), or None."""
        return self.board.network

    # ---- reaching a session ---------------------------------------------------------------

    def handle(self, company_id: str) -> SessionHandle:
        """An existing session, or 404."""
        if not self.board.exists(company_id):
            raise not_found(company_id)
        return SessionHandle(self.board, company_id)

    def create(self, company_id: str) -> SessionHandle:
        """The session, created if it does not exist yet."""
        return self.board.session(company_id, create=True)

    def ask(self, session: SessionHandle, method: str, *args: Any, **kwargs: Any) -> Any:
        """One actor call, bounded by the ask timeout (pykka.Timeout answers 503)."""
        return session.ask(method, *args, timeout=self.ask_timeout, **kwargs)

    def qr_data_url(self, company_id: str) -> str | None:
        """The current QR code as a PNG data URL, or None (no session, no code, no answer)."""
        try:
            code = self.ask(self.handle(company_id), "qr")
        except Exception:
            return None
        return qr_mod.data_url(code["code"]) if code else None

    # ---- lifecycle ------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """Called by the server on SIGTERM: /health says draining, event streams end."""
        self.draining.set()
        self.streams.close_all()

    def close(self) -> None:
        self.begin_shutdown()
        self._unsubscribe()
        self._unsubscribe_totals()
        self.totals.flush()
