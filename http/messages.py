"""Send routes: two current shapes and the old webhook one, all through `send()`.

Validate once: this layer checks that the recipient and the text are present and are
strings; what makes a phone number, a text or an Idempotency-Key valid is the actor's
rule, and its InvalidInput answers 400 with its own message.
"""
from __future__ import annotations

import concurrent.futures
from typing import Any

from bottle import request

from switchboard.actors.phone import validate_company_id
from switchboard.actors.errors import SessionUnavailable

from .auth import Principal
from .openapi import COMPANY_ID, MESSAGE, PHONE, body, op, response
from .plumbing import ApiError, Routes, check_visible, json_body, ok, string
from .state import AppState

api = Routes("Messages")
_ERRORS = (404, 409, 429, 502, 503)
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                "description": "a retry with the same key does not send twice"}
_QUEUED = {202: response("Sent", "accepted into the outbox; sent once connected (queued: true), or "
                                 "status unconfirmed: it may have reached WhatsApp but no answer says so, and "
                                 "it is not resent")}


def send(ctx: AppState, company_id: str, to: str, text: str) -> dict[str, Any]:
    """Hand the send to the actor; answer 200 once WhatsApp took it, 202 while it waits in
    the outbox (reconnecting, or no ack within send_wait), or 202 `unconfirmed` when it
    may have reached WhatsApp with no answer saying so: it is not resent (the same
    Idempotency-Key answers the same again; a new key sends a new message)."""
    receipt = ctx.ask(ctx.handle(company_id), "send", to, text,
                      idempotency_key=request.environ.get("HTTP_IDEMPOTENCY_KEY"))
    base = {"id": receipt.id, "to": receipt.to, "companyId": company_id}
    queued = {**base, "queued": True, "messageId": None, "status": "queued"}
    if receipt.queued and receipt.message_id is None:
        return ok(queued, 202)
    message_id = receipt.message_id
    if message_id is None:
        try:
            message_id = receipt.delivered.result(timeout=ctx.settings.send_wait)
        except (concurrent.futures.TimeoutError, SessionUnavailable):
            return ok(queued, 202)
        except Exception as exc:         # the send failed for good (SendError, or a transport's own error)
            if getattr(exc, "unconfirmed", False):
                return ok({**base, "queued": False, "messageId": None, "status": "unconfirmed",
                           "error": str(exc)}, 202)
            raise ApiError(502, f"WhatsApp did not take the message: {exc}", id=receipt.id) from None
    return ok({**base, "queued": False, "messageId": message_id, "status": "sent"})


def _send_body(ctx: AppState, company_id: str, recipient: str) -> dict[str, Any]:
    payload = json_body()
    return send(ctx, company_id, string(payload, recipient), string(payload, "message"))


@api.post("/api/whatsapp/sessions/<companyId>/messages",
          doc=op("Send a text message (recipient in `to`)", "Sent", errors=_ERRORS, params=[_IDEMPOTENCY],
                 extra=_QUEUED, body=body({"to": PHONE, "message": MESSAGE}, ["to", "message"]),
                 description="200 with messageId once WhatsApp took it; 202 queued when the session is "
                             "reconnecting (delivered in order once connected)"))
def messages(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Send `message` to `to`."""
    return _send_body(ctx, companyId, "to")


@api.post("/api/whatsapp/sessions/<companyId>/send",
          doc=op("Send a text message (recipient in `phone`)", "Sent", errors=_ERRORS, params=[_IDEMPOTENCY],
                 extra=_QUEUED, body=body({"phone": PHONE, "message": MESSAGE}, ["phone", "message"])))
def send_phone(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Send `message` to `phone`."""
    return _send_body(ctx, companyId, "phone")


@api.post("/webhook/whatsapp/baileys/send",
          doc=op("Send (the old webhook shape)", "Sent", errors=_ERRORS, params=[_IDEMPOTENCY], extra=_QUEUED,
                 body=body({"companyId": COMPANY_ID, "phone": PHONE, "message": MESSAGE},
                           ["companyId", "phone", "message"])))
def webhook_send(ctx: AppState, principal: Principal) -> dict[str, Any]:
    """The replaced system's send: the company in the body, not the path."""
    payload = json_body()
    company_id = validate_company_id(payload.get("companyId"))
    check_visible(principal, company_id)
    return send(ctx, company_id, string(payload, "phone"), string(payload, "message"))
