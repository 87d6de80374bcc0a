"""Event routes: live Server-Sent Event streams and the supervisor log."""
from __future__ import annotations

import re
from typing import Any, Iterator

from bottle import request, response

from switchboard.actors.kinds import NAMES, EventKind
from switchboard.actors.phone import validate_company_id
from switchboard.supervision.events import parse_since, read_log

from .auth import Principal
from .openapi import COMPANY_ID, op, query
from .plumbing import ApiError, Routes, int_query, not_found, ok
from .sse import StreamsFull, parse_last_event_id
from .state import AppState

api = Routes("Events")
_KIND = "(" + "|".join(re.escape(kind.value) for kind in EventKind) + ")"
_STREAM = {"description": "text/event-stream: `id:` (the event's position in the durable event log: resume with "
                          "Last-Event-ID, also after a restart), `event:` ("
                          + ", ".join(kind.value for kind in EventKind) + "; `reset` when the id asked for is no "
                          "longer in the log), `data:` JSON; `: ping` heartbeats",
           "content": {"text/event-stream": {"schema": {"type": "string"}}}}
_STREAM_PARAMS = [query("events", {"type": "string", "pattern": f"^{_KIND}(,{_KIND})*$"},
                        "only these event kinds, comma-separated"),
                  query("lastEventId", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                        "resume after this event id (same as the Last-Event-ID header)"),
                  {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}}]


def _kinds() -> frozenset[str] | None:
    """The `events` filter: known kinds only, or None for every kind."""
    raw = request.query.get("events")
    if not raw:
        return None
    kinds = frozenset(k.strip() for k in raw.split(",") if k.strip())
    if not kinds or not kinds <= NAMES:
        raise ApiError(400, "'events' must be a comma-separated list of event kinds, of: "
                       + ", ".join(kind.value for kind in EventKind))
    return kinds


def event_stream(ctx: AppState, principal: Principal, company_id: str | None) -> Iterator[str]:
    """An SSE stream of one company's events (None: all that this key may see)."""
    kinds = _kinds()
    if company_id is None and not principal.admin:
        company_id = principal.company_id
    last = parse_last_event_id(request.environ.get("HTTP_LAST_EVENT_ID"), request.query.get("lastEventId"))
    client_gone = request.environ.get("waitress.client_disconnected") or (lambda: False)
    keys, key_id = ctx.keys, principal.key_id

    def disconnected() -> bool:
        # the client went away, or its key was revoked (AppState also wakes such streams at once)
        return client_gone() or keys.lookup(key_id) is None
    address = request.environ.get("REMOTE_ADDR") or "-"
    ctx.shares.open_stream(principal, address)          # a fair share per client address (limits.py)
    try:
        stream = ctx.streams.open(company_id=company_id, kinds=kinds, last_event_id=last, disconnected=disconnected,
                                  tenant=None if principal.admin else principal.key_id)
    except StreamsFull as exc:
        ctx.shares.close_stream(principal, address)
        raise ApiError(503, str(exc), {"Retry-After": "5"}, retryAfter=5000) from None
    except BaseException:
        ctx.shares.close_stream(principal, address)
        raise
    stream = ctx.shares.stream_wrapper(principal, address, stream)
    response.content_type = "text/event-stream; charset=utf-8"
    response.set_header("Cache-Control", "no-cache")
    response.set_header("X-Accel-Buffering", "no")
    return stream


@api.get("/api/whatsapp/events", doc=op("Live events of every session (a tenant key: its own)", _STREAM,
                                        errors=(400, 503), params=_STREAM_PARAMS))
def all_events(ctx: AppState, principal: Principal) -> Iterator[str]:
    """Every session's events (a tenant key: its own company's)."""
    return event_stream(ctx, principal, None)


@api.get("/api/whatsapp/sessions/<companyId>/events",
         doc=op("Live events of one session", _STREAM, errors=(400, 404, 503), params=_STREAM_PARAMS))
def session_events(ctx: AppState, principal: Principal, companyId: str) -> Iterator[str]:
    """One session's events."""
    ctx.handle(companyId)
    return event_stream(ctx, principal, companyId)


@api.get("/api/supervisor/log",
         doc=op("The supervisor log (lifecycle and supervision events)", "Log", errors=(400, 404),
                params=[query("since", {"oneOf": [
                            {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,6})?[smhd]?$"},
                            {"type": "string", "format": "date-time"}]},
                              "ISO time, Unix seconds, or 30s/10m/2h/1d back from now"),
                        query("company", COMPANY_ID, "only this company"),
                        query("limit", {"type": "integer", "minimum": 1, "maximum": 5000},
                              "at most this many (the newest); default 200")]))
def supervisor_log(ctx: AppState, principal: Principal) -> dict[str, Any]:
    """Records of the supervisor log, filtered (a tenant key: its own company only)."""
    company = request.query.get("company") or None
    if company is not None:
        validate_company_id(company)
    if not principal.admin:
        if company not in (None, principal.company_id):
            raise not_found(company)
        company = principal.company_id
    try:
        since = parse_since(request.query.get("since") or None)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    limit = int_query("limit", 200, 1, ctx.settings.log_limit_max)
    records = read_log(ctx.board.data_dir / "supervisor.log", company=company, since=since, limit=limit)
    return ok({"records": records, "count": len(records)})
