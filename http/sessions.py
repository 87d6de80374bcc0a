"""Session routes: list, create, show, status, health, the lifecycle commands, delete."""
from __future__ import annotations

import threading
from typing import Any, Callable

from bottle import request

from switchboard.actors.kinds import EventKind
from switchboard.actors.phone import validate_company_id
from switchboard.supervision.board import SessionHandle
from switchboard.supervision.health import recommendations

from .auth import Principal
from .openapi import COMPANY_ID, EMPTY_BODY, body, op, query, response
from .plumbing import ApiError, Routes, json_body, not_found, ok
from .qr_routes import qr_payload
from .state import AppState

api = Routes("Sessions")
_SESSION_ERRORS = (400, 404, 503)
_COMMAND_ERRORS = (404, 409, 503)


def start_with_qr(ctx: AppState, company_id: str, session: SessionHandle) -> dict[str, Any]:
    """Start; if the session is connecting, wait briefly for its first QR code (or a
    connection with stored credentials), then answer the status and the QR, if any."""
    settled = threading.Event()

    def on_event(event: Any) -> None:
        if event.kind == EventKind.QR or event.data.get("state") not in ("starting", None):
            settled.set()
    unsubscribe = ctx.board.on_event(on_event, kinds=(EventKind.QR, EventKind.STATE), company_id=company_id)
    try:
        status = ctx.ask(session, "start")
        if status["status"] == "starting" and settled.wait(ctx.settings.qr_wait):
            status = ctx.ask(session, "status")
    finally:
        unsubscribe()
    code = ctx.ask(session, "qr") if status["status"] == "qr" else None
    return {**status, **qr_payload(ctx, company_id, code)}


@api.get("/api/whatsapp/sessions", doc=op("All sessions (a tenant key sees its own)", "SessionList"))
def list_sessions(ctx: AppState, principal: Principal) -> dict[str, Any]:
    """Every session's published status (a tenant: only its own), in the replaced system's
    shape: `count`, `sessions` and `metrics` (message totals that never go down)."""
    statuses = ctx.board.statuses()
    company = None if principal.admin else principal.company_id
    if company is not None:
        statuses = [s for s in statuses if s.get("companyId") == company]
    sent, received = ctx.totals.totals(company)
    metrics = {"totalSessions": len(statuses),
               "activeConnections": sum(1 for s in statuses if s.get("status") == "connected"),
               "messagesSent": sent, "messagesReceived": received}
    return ok({"count": len(statuses), "sessions": statuses, "metrics": metrics, "total": len(statuses)})


@api.post("/api/whatsapp/sessions",
          doc=op("Create and start a session; answers its status and the QR code when one is shown",
                 "StatusWithQr", status=201, errors=(409, 503), body=body({"companyId": COMPANY_ID}, ["companyId"]),
                 extra={200: response("StatusWithQr", "the session existed; started")}))
def create_session(ctx: AppState, principal: Principal) -> dict[str, Any]:
    """Create (201) or start an existing (200) session, with its first QR code."""
    company_id = validate_company_id(json_body().get("companyId"))
    if not principal.may_access(company_id):
        raise ApiError(403, f"this API key cannot manage company {company_id}")
    created = not ctx.board.exists(company_id)
    result = start_with_qr(ctx, company_id, ctx.create(company_id))
    return ok({**result, "created": created}, 201 if created else 200)


@api.get("/api/whatsapp/sessions/<companyId>",
         doc=op("A session's status and diagnostics", "Diagnostics", errors=_SESSION_ERRORS))
def show_session(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Status and diagnostics, from the actor."""
    return ok(ctx.ask(ctx.handle(companyId), "diagnostics"))


@api.get("/api/whatsapp/sessions/<companyId>/status", doc=op("A session's status", "Status", errors=_SESSION_ERRORS))
def session_status(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """The status: the actor's own published copy when it is idle or briefly busy (no
    thread hand-off); an ask with the timeout when it may be stuck."""
    status = ctx.board.live_status(companyId, ctx.ask_timeout) or ctx.ask(ctx.handle(companyId), "status")
    return ok({**status, "health": old_health(status)})


def old_health(status: dict[str, Any]) -> dict[str, Any]:
    """The replaced system's `health` object of a status answer (its clients read
    `health.healthy`); the phone as the JID it showed."""
    phone = status.get("phoneNumber")
    return {"healthy": bool(status.get("connected")),
            "phoneNumber": f"{phone.lstrip('+')}@s.whatsapp.net" if phone else None}


@api.get("/api/whatsapp/sessions/<companyId>/health",
         doc=op("Diagnostics with plain-language recommendations", "SessionHealth", errors=_SESSION_ERRORS))
def session_health(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Diagnostics and what to do about them."""
    diagnostics = ctx.ask(ctx.handle(companyId), "diagnostics")
    healthy, advice = recommendations(diagnostics)
    return ok({"companyId": companyId, "healthy": healthy, "status": diagnostics["status"],
               "recommendations": advice, "diagnostics": diagnostics})


@api.post("/api/whatsapp/sessions/<companyId>/initialize",
          doc=op("Create if needed, start, and answer the QR code (waits up to 2 s for it)", "StatusWithQr",
                 errors=(409, 503), body=EMPTY_BODY, body_required=False))
def initialize(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Create if needed and start; answers the status and the first QR code."""
    json_body(required=False)
    return ok(start_with_qr(ctx, companyId, ctx.create(companyId)))


def _command(action: str) -> Callable:
    def command(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
        json_body(required=False)
        return ok(ctx.ask(ctx.handle(companyId), action))
    command.__name__ = action
    command.__doc__ = f"The session's {action} command; answers its status."
    return command


for _action, _summary in (("start", "Start (connect with stored credentials, or show a QR code)"),
                          ("stop", "Stop; credentials and outbox are kept"),
                          ("reconnect", "Drop whatever is there and connect now (also takes over after a conflict)"),
                          ("logout", "Unlink the device on WhatsApp's side and delete the credentials")):
    api.post(f"/api/whatsapp/sessions/<companyId>/{_action}",
             doc=op(_summary, "Status", errors=_COMMAND_ERRORS, body=EMPTY_BODY, body_required=False))(
        _command(_action))


@api.delete("/api/whatsapp/sessions/<companyId>",
            doc=op("Log out (unless logout=false), stop and delete the session and its files", "Removed",
                   errors=_SESSION_ERRORS,
                   params=[query("logout", {"type": "string", "enum": ["true", "false"]},
                                 "false keeps the device linked on the phone")]))
def delete_session(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Log out (unless ?logout=false), stop, and delete the session and its files."""
    flag = request.query.get("logout", "true").lower()
    if flag not in ("true", "false", "1", "0", "yes", "no"):     # a typo must not unlink the phone
        raise ApiError(400, "'logout' must be true or false")
    keep_device = flag in ("false", "0", "no")
    ctx.handle(companyId)
    try:
        removed = ctx.board.remove(companyId, logout=not keep_device)
    except RuntimeError as exc:          # the actor did not stop: its files are kept
        raise ApiError(503, str(exc), {"Retry-After": "30"}, retryAfter=30_000) from None
    if not removed:
        raise not_found(companyId)
    return ok({"companyId": companyId, "removed": True, "loggedOut": not keep_device})
