"""The HTTP API: a thin Bottle app over the Switchboard facade.

Every route validates its input, makes one actor call with a timeout, and renders JSON
in the shapes of the system this replaces (`{"success": true, ...}` and
`{"success": false, "error": "...", "retryAfter": ms}`). There is no business logic here:
what a state allows, queueing, rate limits and idempotency live in the SessionActor.
Every error, including Bottle's own 404/405 and an unexpected exception, is answered as
JSON; a traceback never reaches a client.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import math
import re
import threading
import time
from typing import Any, Callable

import bottle
import pykka
from bottle import HTTPError, HTTPResponse, request, response

from switchboard.actors.connection import SendError
from switchboard.actors.phone import InvalidInput, normalize_phone, validate_company_id
from switchboard.actors.ratelimit import RateLimited
from switchboard.actors.session import MAX_TEXT, OutboxUnavailable, SessionUnavailable
from switchboard.supervision.board import SessionHandle
from switchboard.supervision.events import parse_since, read_log

from . import metrics as metrics_mod
from . import qr as qr_mod
from .auth import ApiKeys, PageTokens, Principal, presented_key
from .openapi import build_spec
from .sse import EventStreams, StreamsFull, parse_last_event_id

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)
_KINDS = re.compile(r"[a-z_.]{1,30}")


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


class ApiError(Exception):
    def __init__(self, http_status: int, message: str, headers: dict[str, str] | None = None, /,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = http_status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class AppState:
    """What the routes share; `app.switchboard` in the app returned by make_app."""

    def __init__(self, board: Any, config: Any, keys: ApiKeys, settings: HttpSettings) -> None:
        self.board = board
        self.config = config
        self.keys = keys
        self.settings = settings
        self.ask_timeout = settings.ask_timeout if settings.ask_timeout is not None else board.ask_timeout
        self.counters = metrics_mod.Counters()
        self.streams = EventStreams(board, max_streams=settings.sse_max_streams, heartbeat=settings.sse_heartbeat)
        self.registry = metrics_mod.make_registry(board, self.counters, lambda: self.streams.count)
        self.page_tokens = PageTokens()
        self.draining = threading.Event()
        self.started_at = time.time()
        self.simulator = board.network is not None if settings.simulator is None else settings.simulator
        self._unsubscribe = board.on_event(self.counters.on_event)
        self.spec_bytes = json.dumps(build_spec(simulator=self.simulator), indent=1).encode()

    def begin_shutdown(self) -> None:
        """Called by the server on SIGTERM: /health says draining, event streams end."""
        self.draining.set()
        self.streams.close_all()

    def close(self) -> None:
        self.begin_shutdown()
        self._unsubscribe()


# ---- rendering ----------------------------------------------------------------------------

def _error_response(http_status: int, message: str, headers: dict[str, str] | None = None, /,
                    **extra: Any) -> HTTPResponse:
    body = json.dumps({"success": False, "error": message, **extra}, ensure_ascii=False, default=str)
    return HTTPResponse(body, http_status, headers={"Content-Type": "application/json", "Cache-Control": "no-store",
                                               **(headers or {})})


def _retry_headers(ms: int | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(ms / 1000)))} if ms else {}


def _json_error_handler(err: HTTPError) -> str:
    """Bottle's own errors (404, 405, 500 from an uncaught exception, ...), as JSON."""
    response.content_type = "application/json"
    status = err.status_code
    if status >= 500:
        message = "internal server error"
    elif status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed here; allowed: {err.headers.get('Allow', '')}"
    else:
        message = str(err.body or err.status_line)
    return json.dumps({"success": False, "error": message})


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- the app ------------------------------------------------------------------------------

def make_app(board: Any, config: Any = None, keys: ApiKeys | None = None,
             settings: HttpSettings | None = None) -> bottle.Bottle:
    if keys is None:
        raise ValueError("make_app needs the API keys (switchboard.http.auth.ApiKeys)")
    settings = settings or HttpSettings()
    state = AppState(board, config, keys, settings)
    app = bottle.Bottle(catchall=True, autojson=True)
    app.switchboard = state
    app.default_error_handler = _json_error_handler
    for code in (400, 401, 403, 404, 405, 413, 415, 500, 502, 503):
        app.error(code)(_json_error_handler)

    body_limit = settings.body_limit
    ask_timeout = state.ask_timeout

    # ---- plumbing shared by the routes --------------------------------------------------

    def map_exception(exc: BaseException) -> HTTPResponse:
        if isinstance(exc, HTTPResponse):
            return exc
        if isinstance(exc, ApiError):
            return _error_response(exc.status, exc.message, exc.headers, **exc.extra)
        if isinstance(exc, InvalidInput):
            return _error_response(400, str(exc))
        if isinstance(exc, RateLimited):
            state.counters.rate_limit_refused(exc.scope)
            return _error_response(429, str(exc), _retry_headers(exc.retry_after_ms), retryAfter=exc.retry_after_ms,
                                   scope=exc.scope)
        if isinstance(exc, SessionUnavailable):
            if exc.state == "restarting":
                return _error_response(503, str(exc), _retry_headers(exc.retry_after_ms or 1000),
                                       retryAfter=exc.retry_after_ms or 1000, status="restarting")
            extra = {"retryAfter": exc.retry_after_ms} if exc.retry_after_ms else {}
            return _error_response(409, str(exc), _retry_headers(exc.retry_after_ms), status=exc.state, **extra)
        if isinstance(exc, OutboxUnavailable):
            return _error_response(503, str(exc), {"Retry-After": "5"}, retryAfter=5000)
        if isinstance(exc, pykka.Timeout):
            return _error_response(503, f"session actor did not answer within {ask_timeout:g} s",
                                   {"Retry-After": "1"}, retryAfter=1000)
        if isinstance(exc, pykka.ActorDeadError):
            return _error_response(503, "session actor is not running; retry shortly", {"Retry-After": "1"},
                                   retryAfter=1000)
        if isinstance(exc, SendError):
            return _error_response(502 if not exc.retryable else 503, f"WhatsApp did not take the request: {exc}")
        log.error("unexpected error in %s %s", request.method, request.path, exc_info=exc)
        return _error_response(500, "internal server error")

    def authenticate(access: str) -> Principal | None:
        if access == "public":
            return None
        principal = keys.authenticate(presented_key(request.environ))
        if principal is None:
            if presented_key(request.environ):
                raise ApiError(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
            raise ApiError(401, "API key required: send X-Api-Key: KEY or Authorization: Bearer KEY",
                           {"WWW-Authenticate": "Bearer"})
        if access == "admin" and not principal.admin:
            raise ApiError(403, "this endpoint needs the admin API key")
        return principal

    def route(method: str, path: str, access: str = "any") -> Callable:
        """Register `fn(principal, **url_args)`; `companyId` in the URL is validated and
        checked against the key (another tenant's company answers 404, as if absent)."""
        def register(fn: Callable) -> Callable:
            def callback(**kwargs: Any) -> Any:
                try:
                    if request.content_length > body_limit:
                        raise ApiError(413, f"request body is larger than {body_limit} bytes")
                    principal = authenticate(access)
                    company_id = kwargs.get("companyId")
                    if company_id is not None:
                        validate_company_id(company_id)
                        if principal is not None and not principal.may_access(company_id):
                            raise ApiError(404, f"session {company_id} not found")
                    return fn(principal, **kwargs)
                except Exception as exc:
                    raise map_exception(exc) from None
            app.route(path, method, callback, name=f"{method} {path}")
            return fn
        return register

    def json_body(required: bool = True) -> dict[str, Any]:
        env = request.environ
        length = request.content_length
        if length > body_limit:
            raise ApiError(413, f"request body is larger than {body_limit} bytes")
        ctype = env.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if length <= 0 and not required:
            return {}
        if ctype not in JSON_TYPES:
            raise ApiError(415, "Content-Type must be application/json")
        raw = env["wsgi.input"].read(length) if length > 0 else b""
        if not raw:
            raise ApiError(400, "request body must be a JSON object")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
        except RecursionError:
            raise ApiError(400, "invalid JSON: nested too deeply") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    def field(body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 1000) -> str | None:
        value = body.get(name)
        if value is None:
            if required:
                raise ApiError(400, f"'{name}' is required")
            return None
        if not isinstance(value, str):
            raise ApiError(400, f"'{name}' must be a string")
        if len(value) > max_len:
            raise ApiError(400, f"'{name}' is longer than {max_len} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:      # lone surrogates: JSON allows them, UTF-8 does not
            raise ApiError(400, f"'{name}' is not valid Unicode text") from None
        return value

    def handle(company_id: str) -> SessionHandle:
        if not board.exists(company_id):
            raise ApiError(404, f"session {company_id} not found")
        return SessionHandle(board, company_id)

    def ask(session: SessionHandle, method: str, *args: Any, **kwargs: Any) -> Any:
        return session.ask(method, *args, timeout=ask_timeout, **kwargs)

    def create(company_id: str) -> SessionHandle:
        return board.session(company_id, create=True)

    def ok(payload: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
        if status != 200:
            response.status = status
        return {"success": True, **(payload or {})}

    def qr_payload(company_id: str, code: dict[str, Any] | None) -> dict[str, Any]:
        if not code:
            return {"qr": None, "qrDataUrl": None, "qrExpiresAt": None}
        return {"qr": code["code"], "qrDataUrl": qr_mod.data_url(code["code"]), "qrExpiresAt": code["expiresAt"],
                "pageUrl": f"/qr/{company_id}?token={state.page_tokens.issue(company_id)}"}

    def start_with_qr(company_id: str, session: SessionHandle) -> dict[str, Any]:
        """Start; if the session is connecting, wait briefly for its first QR code (or a
        connection with stored credentials), then answer the status and the QR, if any."""
        settled = threading.Event()

        def on_event(event: Any) -> None:
            if event.kind == "qr" or event.data.get("state") not in ("starting", None):
                settled.set()
        unsubscribe = board.on_event(on_event, kinds=("qr", "state"), company_id=company_id)
        try:
            status = ask(session, "start")
            if status["status"] == "starting" and settled.wait(settings.qr_wait):
                status = ask(session, "status")
        finally:
            unsubscribe()
        code = ask(session, "qr") if status["status"] == "qr" else None
        return {**status, **qr_payload(company_id, code)}

    def send(principal: Principal | None, company_id: str, to: str | None, text: str | None) -> dict[str, Any]:
        if to is None:
            raise ApiError(400, "recipient phone number is required")
        phone = normalize_phone(to)
        if text is None or not text.strip():
            raise ApiError(400, "'message' is required and must not be empty")
        if len(text) > MAX_TEXT:
            raise ApiError(400, f"'message' is longer than {MAX_TEXT} characters")
        key = request.environ.get("HTTP_IDEMPOTENCY_KEY")
        if key is not None and not 1 <= len(key) <= 200:
            raise ApiError(400, "Idempotency-Key must be 1-200 characters")
        receipt = ask(handle(company_id), "send", phone, text, idempotency_key=key or None)
        base = {"id": receipt.id, "to": receipt.to, "companyId": company_id}
        if receipt.queued and receipt.message_id is None:
            return ok({**base, "queued": True, "messageId": None, "status": "queued"}, 202)
        message_id = receipt.message_id
        if message_id is None:
            try:
                message_id = receipt.delivered.result(timeout=settings.send_wait)
            except concurrent.futures.TimeoutError:
                return ok({**base, "queued": True, "messageId": None, "status": "queued"}, 202)
            except SessionUnavailable:
                return ok({**base, "queued": True, "messageId": None, "status": "queued"}, 202)
            except Exception as exc:         # the send failed for good (SendError, or a transport's own error)
                raise ApiError(502, f"WhatsApp did not take the message: {exc}", id=receipt.id) from None
        return ok({**base, "queued": False, "messageId": message_id, "status": "sent"})

    def int_query(name: str, default: int, low: int, high: int) -> int:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
            raise ApiError(400, f"'{name}' must be a whole number from {low} to {high}")
        return int(raw)

    # ---- health and documents ------------------------------------------------------------

    @route("GET", "/health", access="public")
    def health(_principal):
        if state.draining.is_set():
            raise ApiError(503, "shutting down", status="draining")
        return ok({"status": "ok", "timestamp": _iso(time.time()),
                   "uptimeSeconds": round(time.time() - state.started_at, 1)})

    @route("GET", "/openapi.json")
    def openapi(_principal):
        response.content_type = "application/json"
        return state.spec_bytes

    @route("GET", "/metrics", access="admin")
    def prometheus(_principal):
        response.content_type = metrics_mod.CONTENT_TYPE
        return metrics_mod.exposition(state.registry)

    # ---- sessions -----------------------------------------------------------------------------

    @route("GET", "/api/whatsapp/sessions")
    def list_sessions(principal):
        statuses = board.statuses()
        if not principal.admin:
            statuses = [s for s in statuses if s.get("companyId") == principal.company_id]
        return ok({"sessions": statuses, "total": len(statuses)})

    @route("POST", "/api/whatsapp/sessions")
    def create_session(principal):
        company_id = validate_company_id(json_body().get("companyId"))
        if not principal.may_access(company_id):
            raise ApiError(403, f"this API key cannot manage company {company_id}")
        created = not board.exists(company_id)
        result = start_with_qr(company_id, create(company_id))
        return ok({**result, "created": created}, 201 if created else 200)

    @route("GET", "/api/whatsapp/sessions/<companyId>")
    def show_session(_principal, companyId):
        return ok(ask(handle(companyId), "diagnostics"))

    @route("GET", "/api/whatsapp/sessions/<companyId>/status")
    def session_status(_principal, companyId):
        # The actor's own published status when it is idle or briefly busy (no thread
        # hand-off); an ask with the timeout when it may be stuck.
        return ok(board.live_status(companyId, ask_timeout) or ask(handle(companyId), "status"))

    @route("POST", "/api/whatsapp/sessions/<companyId>/initialize")
    def initialize(_principal, companyId):
        json_body(required=False)
        return ok(start_with_qr(companyId, create(companyId)))

    def lifecycle_command(action: str) -> Callable:
        def command(_principal, companyId):
            json_body(required=False)
            return ok(ask(handle(companyId), action))
        command.__name__ = action
        return command

    for action in ("start", "stop", "reconnect", "logout"):
        route("POST", f"/api/whatsapp/sessions/<companyId>/{action}")(lifecycle_command(action))

    @route("DELETE", "/api/whatsapp/sessions/<companyId>")
    def delete(_principal, companyId):
        keep_device = request.query.get("logout", "true").lower() in ("false", "0", "no")
        handle(companyId)
        try:
            removed = board.remove(companyId, logout=not keep_device)
        except RuntimeError as exc:          # the actor did not stop: its files are kept
            raise ApiError(503, str(exc), {"Retry-After": "30"}, retryAfter=30_000) from None
        if not removed:
            raise ApiError(404, f"session {companyId} not found")
        return ok({"companyId": companyId, "removed": True, "loggedOut": not keep_device})

    @route("POST", "/api/whatsapp/sessions/<companyId>/messages")
    def messages(principal, companyId):
        body = json_body()
        return send(principal, companyId, field(body, "to"), field(body, "message", max_len=MAX_TEXT))

    @route("POST", "/api/whatsapp/sessions/<companyId>/send")
    def send_phone(principal, companyId):
        body = json_body()
        return send(principal, companyId, field(body, "phone"), field(body, "message", max_len=MAX_TEXT))

    @route("POST", "/webhook/whatsapp/baileys/send")
    def webhook_send(principal):
        body = json_body()
        company_id = validate_company_id(body.get("companyId"))
        if not principal.may_access(company_id):
            raise ApiError(404, f"session {company_id} not found")
        return send(principal, company_id, field(body, "phone"), field(body, "message", max_len=MAX_TEXT))

    @route("GET", "/api/whatsapp/sessions/<companyId>/health")
    def session_health(_principal, companyId):
        diagnostics = ask(handle(companyId), "diagnostics")
        advice = recommendations(diagnostics)
        return ok({"companyId": companyId, "healthy": advice[0], "status": diagnostics["status"],
                   "recommendations": advice[1], "diagnostics": diagnostics})

    @route("GET", "/api/whatsapp/metrics", access="admin")
    def json_metrics(_principal):
        counts = state.counters.snapshot()
        return ok({**board.metrics(), "rateLimited": sum(counts["rate_limited"].values()),
                   "reconnectsByReason": counts["reconnects"], "eventStreams": state.streams.count})

    # ---- QR and pairing -------------------------------------------------------------------

    def current_qr(company_id: str) -> dict[str, Any]:
        session = handle(company_id)
        code = ask(session, "qr")
        if code is None:
            status = ask(session, "status")
            hint = {"connected": "the session is already linked and connected",
                    "starting": "the session is connecting; try again in a moment"}.get(
                status["status"], "start the session (initialize) to get a QR code")
            raise ApiError(409, f"no QR code available: {hint}", status=status["status"])
        return code

    @route("GET", "/api/whatsapp/sessions/<companyId>/qr")
    def qr_json(_principal, companyId):
        code = current_qr(companyId)
        return ok({"companyId": companyId, **qr_payload(companyId, code)})

    def qr_image(render: Callable[[str, int], Any], content_type: str) -> Callable:
        def image(_principal, companyId):
            scale = int_query("scale", qr_mod.DEFAULT_SCALE, 1, qr_mod.MAX_SCALE)
            code = current_qr(companyId)
            response.content_type = content_type
            response.set_header("Cache-Control", "no-store")
            return render(code["code"], scale)
        image.__name__ = f"qr_{render.__name__}"
        return image

    route("GET", "/api/whatsapp/sessions/<companyId>/qr.png")(qr_image(qr_mod.png, "image/png"))
    route("GET", "/api/whatsapp/sessions/<companyId>/qr.svg")(qr_image(qr_mod.svg, "image/svg+xml"))

    @route("GET", "/qr/<companyId>", access="public")
    def qr_page(_principal, companyId):
        # A browser cannot send headers: this one page also takes a signed, expiring
        # `?token=` (from the `pageUrl` of the QR answers) instead of the API key.
        if not state.page_tokens.check(companyId, request.query.get("token")):
            principal = authenticate("any")
            if not principal.may_access(companyId):
                raise ApiError(404, f"session {companyId} not found")
        session = handle(companyId)
        status = ask(session, "status")
        code = ask(session, "qr") if status["status"] == "qr" else None
        response.content_type = "text/html; charset=utf-8"
        response.set_header("Cache-Control", "no-store")
        response.set_header("Referrer-Policy", "no-referrer")
        response.set_header("Content-Security-Policy",
                            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'")
        return qr_mod.page(companyId, status, code["code"] if code else None)

    @route("POST", "/api/whatsapp/sessions/<companyId>/pairing-code")
    def pairing_code(_principal, companyId):
        phone = normalize_phone(field(json_body(), "phone"))
        future = ask(handle(companyId), "pair_phone", phone)
        try:
            code = future.result(timeout=ask_timeout)
        except concurrent.futures.TimeoutError:
            raise ApiError(503, f"no pairing code within {ask_timeout:g} s", {"Retry-After": "1"},
                           retryAfter=1000) from None
        except SendError as exc:
            if exc.retryable:
                raise ApiError(503, f"could not get a pairing code: {exc}", {"Retry-After": "2"},
                               retryAfter=2000) from None
            raise ApiError(409, f"could not get a pairing code: {exc}") from None
        return ok({"companyId": companyId, "phone": phone, "code": code,
                   "hint": "On the phone: WhatsApp > Linked devices > Link with phone number, enter this code"})

    # ---- events and the supervisor log -------------------------------------------------

    def event_stream(principal: Principal, company_id: str | None):
        kinds = None
        if request.query.get("events"):
            kinds = frozenset(k.strip() for k in request.query.get("events").split(",") if k.strip())
            if not kinds or not all(_KINDS.fullmatch(k) for k in kinds):
                raise ApiError(400, "'events' must be a comma-separated list of event kinds")
        if company_id is None and not principal.admin:
            company_id = principal.company_id
        last = parse_last_event_id(request.environ.get("HTTP_LAST_EVENT_ID"), request.query.get("lastEventId"))
        disconnected = request.environ.get("waitress.client_disconnected") or (lambda: False)
        try:
            stream = state.streams.open(company_id=company_id, kinds=kinds, last_event_id=last,
                                        disconnected=disconnected)
        except StreamsFull as exc:
            raise ApiError(503, str(exc), {"Retry-After": "5"}, retryAfter=5000) from None
        response.content_type = "text/event-stream; charset=utf-8"
        response.set_header("Cache-Control", "no-cache")
        response.set_header("X-Accel-Buffering", "no")
        return stream

    @route("GET", "/api/whatsapp/events")
    def all_events(principal):
        return event_stream(principal, None)

    @route("GET", "/api/whatsapp/sessions/<companyId>/events")
    def session_events(principal, companyId):
        handle(companyId)
        return event_stream(principal, companyId)

    @route("GET", "/api/supervisor/log")
    def supervisor_log(principal):
        company = request.query.get("company") or None
        if company is not None:
            validate_company_id(company)
        if not principal.admin:
            if company not in (None, principal.company_id):
                raise ApiError(404, f"session {company} not found")
            company = principal.company_id
        try:
            since = parse_since(request.query.get("since") or None)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        limit = int_query("limit", 200, 1, settings.log_limit_max)
        records = read_log(board.data_dir / "supervisor.log", company=company, since=since, limit=limit)
        return ok({"records": records, "count": len(records)})

    # ---- API keys (admin) ------------------------------------------------------------------

    @route("POST", "/api/keys", access="admin")
    def create_key(_principal):
        body = json_body()
        company_id = validate_company_id(body.get("companyId"))
        record, key = keys.create(company_id, field(body, "name", required=False, max_len=100))
        return ok({**record, "key": key,
                   "note": "store this key now: it is shown only once (the server keeps only its hash)"}, 201)

    @route("GET", "/api/keys", access="admin")
    def list_keys(_principal):
        listed = keys.list()
        return ok({"keys": listed, "total": len(listed)})

    @route("DELETE", "/api/keys/<keyId>", access="admin")
    def delete_key(_principal, keyId):
        if not re.fullmatch(r"[0-9a-f]{16}", keyId) or not keys.revoke(keyId):
            raise ApiError(404, f"API key {keyId} not found")
        return ok({"id": keyId, "revoked": True})

    # ---- the simulator's control API (simulated transport only) ------------------------

    if state.simulator:
        network = board.network

        def simulated(fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except LookupError as exc:
                raise ApiError(404, str(exc).strip("'\"")) from None

        @route("POST", "/api/simulator/companies/<companyId>/scan", access="admin")
        def sim_scan(_principal, companyId):
            # without "phone": the number a pairing code was requested for (the phone "enters the code")
            phone = field(json_body(required=False), "phone", required=False)
            phone = normalize_phone(phone) if phone is not None else None
            return ok(simulated(lambda: network.scan(companyId, phone)))

        @route("POST", "/api/simulator/companies/<companyId>/faults", access="admin")
        def sim_fault(_principal, companyId):
            body = json_body()
            fault = field(body, "fault", max_len=20)
            seconds = body.get("seconds", 30)
            return ok(simulated(lambda: network.fault(companyId, fault, seconds)))

        @route("POST", "/api/simulator/inbound", access="admin")
        def sim_inbound(_principal):
            body = json_body()
            company_id = validate_company_id(body.get("companyId"))
            sender = normalize_phone(field(body, "from"))
            text = field(body, "text", max_len=MAX_TEXT)
            message_id = field(body, "id", required=False, max_len=200)
            push_name = field(body, "pushName", required=False, max_len=200) or ""
            delivered = simulated(lambda: network.deliver_inbound(company_id, sender, text, message_id, push_name))
            return ok({"companyId": company_id, "id": delivered})

        @route("GET", "/api/simulator/phones/<phone>/messages", access="admin")
        def sim_messages(_principal, phone):
            received = network.messages(normalize_phone(phone))
            return ok({"phone": normalize_phone(phone), "messages": received, "total": len(received)})

        @route("GET", "/api/simulator/connections", access="admin")
        def sim_connections(_principal):
            return ok(network.connections())

    return app


# ---- health advice ----------------------------------------------------------------------------

STALE_STARTING_SECONDS = 120


def recommendations(d: dict[str, Any]) -> tuple[bool, list[str]]:
    """(healthy, plain-language advice) for one session's diagnostics."""
    state = d.get("status")
    advice: list[str] = []
    alive = d.get("connectionAlive")
    healthy = state == "connected" and bool(alive)
    if state == "connected" and not alive:
        advice.append("Stale session: it says connected but its connection is gone. The next health check "
                      "reconnects it; call reconnect to do it now.")
    elif state == "qr":
        advice.append("Needs a QR scan: open the QR page or GET .../qr.png and scan it in WhatsApp > Linked "
                      "devices, or request a pairing code.")
    elif state == "starting":
        advice.append("Connecting. If it stays like this for minutes, check the network or proxy, then reconnect.")
    elif state == "stopped":
        if d.get("lastError") == "QR expired":
            advice.append("Needs a new QR: nobody scanned the last codes in time. Call initialize and scan the new "
                          "code.")
        else:
            advice.append("Stopped on request. Call start (or initialize) to connect.")
    elif state == "reconnecting":
        advice.append(f"Reconnecting after: {d.get('lastError')}. Next attempt at {d.get('nextRetryAt')} "
                      f"(attempt {d.get('reconnectAttempts')}). Nothing to do unless it keeps failing.")
    elif state == "failed":
        advice.append(f"Failed: {d.get('lastError')}. Fix the cause (network, proxy, client version), then call "
                      "reconnect.")
    elif state == "logged_out":
        advice.append("Logged out: the phone unlinked this device (or logout was called). Call initialize and "
                      "scan a new QR code.")
    elif state == "conflict":
        advice.append("Conflict: another client (WhatsApp Web, another gateway or a copy of this one) took over "
                      "this account. Close the other client, then call reconnect; this gateway never fights back "
                      "by itself.")
    elif state == "banned":
        advice.append(f"Temporarily banned by WhatsApp until {d.get('nextRetryAt')}; one attempt follows then. "
                      "Send less, and only to people who expect your messages.")
    elif state == "restarting":
        advice.append("The session actor crashed and is being restarted; see the supervisor log.")
    attempts = d.get("reconnectAttempts") or 0
    total_reconnects = sum((d.get("reconnectsByReason") or {}).values())
    if attempts >= 3 or total_reconnects >= 5:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted((d.get("reconnectsByReason") or {}).items()))
        advice.append(f"Too many reconnects ({attempts} in a row, {total_reconnects} in total; {reasons}). "
                      "Check the network and the proxy; look for another client using the same account.")
    if d.get("queued") and state != "connected":
        advice.append(f"{d['queued']} message(s) wait in the outbox; they go out in order once connected.")
    if healthy and not advice:
        advice.append("Healthy: connected and authenticated.")
    return healthy, advice
