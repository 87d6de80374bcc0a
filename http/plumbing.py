"""What every route has in common, in one place.

* `Routes`: a module's route table. `@api.get(path, access=..., doc=op(...))` registers a
  route and its OpenAPI operation together, so the document is built from the routes
  and can never describe a route that does not exist (or miss one).
* `ApiPlugin`: a Bottle plugin (`app.install(...)`) for what no route should repeat:
  the body limit, authentication by access level (public / any key / admin), the
  companyId check, the tenant check (another tenant's company answers 404 exactly as
  a missing one), exceptions as JSON errors, and the time each request takes.
* Request helpers (`json_body`, `string`, `field`, `int_query`) and the answer shapes (`ok`, errors).

A route is `fn(ctx, principal, **url_args)`: `ctx` is the AppState, `principal` the
caller's key (None on a public route).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

import bottle
import pykka
from bottle import HTTPError, HTTPResponse, request, response

from switchboard.actors.connection import SendError
from switchboard.actors.phone import InvalidInput, validate_company_id
from switchboard.actors.ratelimit import RateLimited
from switchboard.actors.errors import OutboxUnavailable, SessionUnavailable

from .auth import CSRF_HEADER, ApiKeys, Principal, WebSessions, cookie_value, presented_key
from .limits import TooMany
from .openapi import Operation

if TYPE_CHECKING:
    from .state import AppState

log = logging.getLogger(__name__)

ACCESS_LEVELS = ("public", "any", "admin")


class ApiError(Exception):
    """An answer other than success: status, message, extra headers and JSON fields."""

    def __init__(self, http_status: int, message: str, headers: dict[str, str] | None = None, /,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = http_status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def not_found(company_id: str) -> ApiError:
    """The one answer for a session that is missing or belongs to another tenant, in the
    replaced system's exact words (old clients match on them)."""
    return ApiError(404, f"Session not found for company {company_id}")


def check_visible(principal: Principal | None, company_id: str) -> None:
    """A tenant key sees only its own company; any other answers as if it did not exist."""
    request.environ["switchboard.company"] = company_id      # for error_for's "Authentication required"
    if principal is not None and not principal.may_access(company_id):
        raise not_found(company_id)


# ---- the route table ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Route:
    method: str
    rule: str                          # Bottle's rule: /api/whatsapp/sessions/<companyId>
    callback: Callable[..., Any]
    access: str                        # public | any | admin
    doc: Operation
    tag: str
    html: bool = False                 # errors as an HTML page for a person (the QR page), not JSON


class Routes:
    """The routes of one module, each with its access level and OpenAPI operation."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._routes: list[Route] = []

    def route(self, method: str, rule: str, *, doc: Operation, access: str = "any", html: bool = False) -> Callable:
        if access not in ACCESS_LEVELS:
            raise ValueError(f"access must be one of {ACCESS_LEVELS}, not {access!r}")

        def register(fn: Callable) -> Callable:
            self._routes.append(Route(method, rule, fn, access, doc, doc.tag or self.tag, html))
            return fn
        return register

    def get(self, rule: str, *, doc: Operation, access: str = "any", html: bool = False) -> Callable:
        return self.route("GET", rule, doc=doc, access=access, html=html)

    def post(self, rule: str, *, doc: Operation, access: str = "any") -> Callable:
        return self.route("POST", rule, doc=doc, access=access)

    def put(self, rule: str, *, doc: Operation, access: str = "any") -> Callable:
        return self.route("PUT", rule, doc=doc, access=access)

    def delete(self, rule: str, *, doc: Operation, access: str = "any") -> Callable:
        return self.route("DELETE", rule, doc=doc, access=access)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)


def mount(app: bottle.Bottle, routes: list[Route]) -> None:
    """Add the routes to the app; the plugin reads `access` from each route's config."""
    for r in routes:
        app.route(r.rule, r.method, r.callback, name=f"{r.method} {r.rule}", access=r.access, html=r.html,
                  uploads=r.doc.uploads)


# ---- the plugin -----------------------------------------------------------------------

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def authenticate(keys: ApiKeys, access: str, web: WebSessions | None = None) -> Principal | None:
    """The caller's principal for a route of this access level (None when public): from
    the key header, else from the dashboard cookie (state-changing requests with the
    cookie must carry its X-CSRF-Token)."""
    if access == "public":
        return None
    presented = presented_key(request.environ)
    principal = keys.authenticate(presented)
    if principal is None and not presented and web is not None:
        cookie = cookie_value(request.environ)
        principal = web.principal(cookie, keys) if cookie else None
        if principal is not None and request.method not in _SAFE_METHODS and \
                not web.csrf_ok(cookie, request.environ.get(CSRF_HEADER)):
            raise ApiError(403, "missing or wrong X-CSRF-Token (sign in to the dashboard again)")
    if principal is None:
        if presented:
            raise ApiError(401, "invalid API key", {"WWW-Authenticate": "Bearer"})
        raise ApiError(401, "API key required: send X-Api-Key: KEY or Authorization: Bearer KEY",
                       {"WWW-Authenticate": "Bearer"})
    if access == "admin" and not principal.admin:
        raise ApiError(403, "this endpoint needs the admin API key")
    return principal


class ApiPlugin:
    """The cross-cutting concerns of every route (see the module docstring)."""

    name = "switchboard"
    api = 2

    def __init__(self, state: AppState) -> None:
        self.state = state

    def apply(self, callback: Callable, route: bottle.Route) -> Callable:
        # Everything that depends only on the route is decided here, once; the wrapper
        # below is the whole per-request cost.
        state = self.state
        keys = state.keys
        # optional: a state without them (the simulator service's) has no dashboard and no shares
        web = getattr(state, "web", None)
        shares = getattr(state, "shares", None)
        body_limit = state.settings.body_limit
        # A route that takes uploads (issue 13) allows a larger multipart body, and only that.
        upload_limit = getattr(state.settings, "upload_limit", 0) if route.config.get("uploads") else 0
        access = route.config.get("access", "any")
        html = route.config.get("html", False)
        has_company = "<companyId>" in route.rule
        times = state.request_times
        cell = times.cell(route.name or route.rule)
        clock = time.perf_counter

        def wrapper(**kwargs: Any) -> Any:
            started = clock()
            try:
                limit = body_limit
                if upload_limit and request.content_type.startswith("multipart/form-data"):
                    limit = upload_limit
                if request.content_length > limit:
                    raise ApiError(413, f"request body is larger than {limit} bytes")
                principal = authenticate(keys, access, web)
                if has_company:
                    validate_company_id(kwargs["companyId"])
                    check_visible(principal, kwargs["companyId"])
                if shares is None or (principal is not None and principal.admin):   # the admin: exempt
                    return callback(state, principal, **kwargs)
                with shares.request(principal, request.environ.get("REMOTE_ADDR") or "-"):
                    return callback(state, principal, **kwargs)
            except Exception as exc:
                answer = error_for(exc, state)
                raise (html_error(answer) if html else answer) from None
            finally:
                times.add(cell, clock() - started)
        return wrapper


def error_for(exc: BaseException, state: AppState) -> HTTPResponse:
    """The JSON answer for an exception: one table from exception to status."""
    if isinstance(exc, HTTPResponse):
        return exc
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, exc.headers, **exc.extra)
    if isinstance(exc, TooMany):
        return error_response(429, str(exc), retry_headers(exc.retry_after_ms), retryAfter=exc.retry_after_ms,
                              scope="client")
    if isinstance(exc, InvalidInput):
        return error_response(400, str(exc))
    if isinstance(exc, RateLimited):
        state.counters.rate_limit_refused(exc.scope)
        # the replaced system's text and shape; what and when beside it
        return error_response(429, "Rate limit exceeded", retry_headers(exc.retry_after_ms),
                              retryAfter=exc.retry_after_ms, scope=exc.scope, detail=str(exc))
    if isinstance(exc, SessionUnavailable) and exc.state == "qr":
        # the replaced system's answer to a send before the phone is linked: the QR code to scan
        company = request.environ.get("switchboard.company")
        return error_response(409, "Authentication required", retry_headers(exc.retry_after_ms),
                              qrCode=state.qr_data_url(company) if company and hasattr(state, "qr_data_url") else None,
                              status="qr", detail=str(exc))
    if isinstance(exc, SessionUnavailable):
        if exc.state == "restarting":
            return error_response(503, str(exc), retry_headers(exc.retry_after_ms or 1000),
                                  retryAfter=exc.retry_after_ms or 1000, status="restarting")
        extra = {"retryAfter": exc.retry_after_ms} if exc.retry_after_ms else {}
        return error_response(409, str(exc), retry_headers(exc.retry_after_ms), status=exc.state, **extra)
    if isinstance(exc, OutboxUnavailable):
        return error_response(503, str(exc), {"Retry-After": "5"}, retryAfter=5000)
    if isinstance(exc, pykka.Timeout):
        return error_response(503, f"session actor did not answer within {state.ask_timeout:g} s",
                              {"Retry-After": "1"}, retryAfter=1000)
    if isinstance(exc, pykka.ActorDeadError):
        return error_response(503, "session actor is not running; retry shortly", {"Retry-After": "1"},
                              retryAfter=1000)
    if isinstance(exc, SendError):
        return error_response(502 if not exc.retryable else 503, f"WhatsApp did not take the request: {exc}")
    log.error("unexpected error in %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal server error")


# ---- answers --------------------------------------------------------------------------

def ok(payload: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
    """A success answer: `{"success": true, ...payload}`."""
    if status != 200:
        response.status = status
    return {"success": True, **(payload or {})}


def error_response(http_status: int, message: str, headers: dict[str, str] | None = None, /,
                   **extra: Any) -> HTTPResponse:
    body = json.dumps({"success": False, "error": message, **extra}, ensure_ascii=False, default=str)
    return HTTPResponse(body, http_status, headers={"Content-Type": "application/json", "Cache-Control": "no-store",
                                               **(headers or {})})


def html_error(answer: HTTPResponse) -> HTTPResponse:
    """A JSON error answer as the QR page's HTML error page (same status and headers)."""
    from . import qr as qr_mod         # the page's look lives with the page
    try:
        message = json.loads(answer.body).get("error", "")
    except (TypeError, ValueError, AttributeError):
        message = ""
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
    return HTTPResponse(qr_mod.error_page(answer.status_code, str(message)), answer.status_code,
                        headers={**headers, "Content-Type": "text/html; charset=utf-8"})


def retry_headers(ms: int | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(ms / 1000)))} if ms else {}


def json_error_handler(err: HTTPError) -> str:
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


# ---- reading a request ----------------------------------------------------------------

JSON_TYPES = ("application/json",)


def json_body(required: bool = True) -> dict[str, Any]:
    """The request's JSON object (the plugin has already enforced the body limit)."""
    env = request.environ
    length = request.content_length
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


def string(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """A field's presence and JSON type only: for values whose rules belong to the domain
    (a phone number, a message text), which the actor checks and explains."""
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string")
    return value


def field(body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 1000) -> str | None:
    """A string field the gateway keeps as it is (a name, an id): present when required,
    a string, at most `max_len` characters, valid Unicode."""
    value = string(body, name, required=required)
    if value is None:
        return None
    if len(value) > max_len:
        raise ApiError(400, f"'{name}' is longer than {max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:      # lone surrogates: JSON allows them, UTF-8 does not
        raise ApiError(400, f"'{name}' is not valid Unicode text") from None
    return value


def int_query(name: str, default: int, low: int, high: int) -> int:
    """A whole number from the query string, in [low, high]; ASCII digits only."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(400, f"'{name}' must be a whole number from {low} to {high}")
    return int(raw)
