"""Webhook routes: a company's own webhook (its key or the admin's), and the dead letters (admin)."""
from __future__ import annotations

import re
from typing import Any

from bottle import request

from switchboard.actors.kinds import NAMES
from switchboard.actors.phone import validate_company_id
from switchboard.supervision.sinks.webhook import MAX_URL, SECRET_PATTERN, URL_PATTERN

from .auth import Principal
from .openapi import COMPANY_ID, body, op, query
from .plumbing import ApiError, Routes, int_query, json_body, ok
from .state import AppState

api = Routes("Webhooks")
_HOOK = "/api/whatsapp/sessions/<companyId>/webhook"
_KINDS = {"type": "array", "items": {"type": "string", "enum": sorted(NAMES)}, "minItems": 1, "maxItems": len(NAMES)}
_DEAD_ID = re.compile(r"[0-9a-f]{32}")


@api.put(_HOOK, doc=op("Set the company's own webhook (its events only, signed with its secret)", "Any",
                       errors=(404,), body=body({"url": {"type": "string", "maxLength": MAX_URL,
                                                         "pattern": URL_PATTERN},
                                                 "secret": {"type": "string", "pattern": SECRET_PATTERN},
                                                 "events": _KINDS}, ["url"])))
def put_webhook(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Create or replace it; events not yet delivered go to the new URL."""
    ctx.handle(companyId)
    payload = json_body()
    url, secret, kinds = payload.get("url"), payload.get("secret"), payload.get("events")
    if kinds is not None and (not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds)):
        raise ApiError(400, "'events' must be a list of event kinds, of: " + ", ".join(sorted(NAMES)))
    if secret is not None and not isinstance(secret, str):
        raise ApiError(400, "'secret' must be a string")
    try:
        config = ctx.board.delivery.set_webhook(companyId, url, secret, kinds)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return ok({"companyId": companyId, "webhook": config.public()})


@api.get(_HOOK, doc=op("The company's own webhook (never its secret)", "Any", errors=(400, 404)))
def get_webhook(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """The webhook's URL, events and whether a secret is set."""
    ctx.handle(companyId)
    config = ctx.board.delivery.webhook(companyId)
    if config is None:
        raise ApiError(404, f"session {companyId} has no webhook of its own")
    runner = ctx.board.delivery.runners.get(f"webhook-{companyId}")
    return ok({"companyId": companyId, "webhook": config.public(),
               "behind": runner.lag if runner is not None else None})


@api.delete(_HOOK, doc=op("Remove the company's own webhook", "Any", errors=(400, 404)))
def delete_webhook(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Stops its deliveries; what it had not delivered is dropped with it."""
    ctx.handle(companyId)
    if not ctx.board.delivery.delete_webhook(companyId):
        raise ApiError(404, f"session {companyId} has no webhook of its own")
    return ok({"companyId": companyId, "deleted": True})


@api.get("/api/webhooks/dead", access="admin",
         doc=op("Webhook deliveries that failed for good (newest last)", "Any", errors=(400,),
                params=[query("company", COMPANY_ID, "only this company"),
                        query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most; default 100")]))
def dead_letters(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """Each with its destination, event seq, kind, last error and attempts."""
    company = request.query.get("company") or None
    if company is not None:
        validate_company_id(company)
    limit = int_query("limit", 100, 1, 1000)
    listed = ctx.board.delivery.dead.list(company, limit)
    return ok({"deadLetters": listed, "count": len(listed), "total": ctx.board.delivery.dead.count()})


@api.post("/api/webhooks/dead/replay", access="admin",
          doc=op("Deliver dead letters again (those ids, that company's, or all)", "Any", status=202,
                 body=body({"ids": {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                                    "maxItems": 1000},
                            "companyId": COMPANY_ID}, []), body_required=False))
def replay(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """Queued at once; a replay that fails again stays a dead letter with its new error."""
    payload = json_body(required=False)
    ids = payload.get("ids")
    if ids is not None and (not isinstance(ids, list) or len(ids) > 1000
                            or not all(isinstance(i, str) and _DEAD_ID.fullmatch(i) for i in ids)):
        raise ApiError(400, "'ids' must be a list of at most 1000 dead letter ids (32 hex digits)")
    company = payload.get("companyId")
    if company is not None:
        validate_company_id(company)
    queued = ctx.board.delivery.dead.replay(ids, company)
    return ok({"replaying": queued, "count": len(queued)}, 202)
