"""The simulated WhatsApp's control API (admin only), mounted only when the transport is
simulated: scan a QR code, inject faults, write to a company, read what a phone got."""
from __future__ import annotations

from typing import Any, Callable

from switchboard.actors.payload import MAX_TEXT
from switchboard.actors.phone import normalize_phone, validate_company_id

from .auth import Principal
from .openapi import COMPANY_ID, PHONE, body, op
from .plumbing import ApiError, Routes, field, json_body, ok
from .state import AppState

api = Routes("Simulator")
_FAULTS = ["drop", "refuse", "latency", "logout", "ban", "replace"]


def _simulated(fn: Callable[[], Any]) -> Any:
    """The network's LookupError (no such company, no QR shown) is a 404."""
    try:
        return fn()
    except LookupError as exc:
        raise ApiError(404, str(exc).strip("'\"")) from None


@api.post("/api/simulator/companies/<companyId>/scan", access="admin",
          doc=op("The phone `phone` scans the company's QR code (without `phone`: the phone a pairing code was "
                 "requested for enters it)", "Any", errors=(404,), body=body({"phone": PHONE}, []),
                 body_required=False))
def scan(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """A phone scans the QR code (or enters the pairing code it asked for)."""
    phone = field(json_body(required=False), "phone", required=False)
    phone = normalize_phone(phone) if phone is not None else None
    return ok(_simulated(lambda: ctx.board.network.scan(companyId, phone)))


@api.post("/api/simulator/companies/<companyId>/faults", access="admin",
          doc=op("Inject a fault", "Any", errors=(404,),
                 body=body({"fault": {"type": "string", "enum": _FAULTS},
                            "seconds": {"type": "number", "minimum": 0, "maximum": 86400}}, ["fault"])))
def fault(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Drop, refuse, slow down, log out, ban or replace the company's connection."""
    payload = json_body()
    kind = field(payload, "fault", max_len=20)
    seconds = payload.get("seconds", 30)
    return ok(_simulated(lambda: ctx.board.network.fault(companyId, kind, seconds)))


@api.post("/api/simulator/inbound", access="admin",
          doc=op("Someone writes to a company's account", "Any", errors=(404,),
                 body=body({"companyId": COMPANY_ID, "from": PHONE, "text": {"type": "string", "maxLength": MAX_TEXT},
                            "id": {"type": "string", "maxLength": 200},
                            "pushName": {"type": "string", "maxLength": 200}}, ["companyId", "from", "text"])))
def inbound(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """Deliver an incoming message to a company (the network checks the sender)."""
    payload = json_body()
    company_id = validate_company_id(payload.get("companyId"))
    sender = field(payload, "from")
    text = field(payload, "text", max_len=MAX_TEXT)
    message_id = field(payload, "id", required=False, max_len=200)
    push_name = field(payload, "pushName", required=False, max_len=200) or ""
    delivered = _simulated(lambda: ctx.board.network.deliver_inbound(company_id, sender, text, message_id, push_name))
    return ok({"companyId": company_id, "id": delivered})


@api.get("/api/simulator/phones/<phone>/messages", access="admin",
         doc=op("What a phone received, in order", "Any", errors=(400,)))
def phone_messages(ctx: AppState, _principal: Principal, phone: str) -> dict[str, Any]:
    """Every message a phone number received."""
    phone = normalize_phone(phone)
    received = ctx.board.network.messages(phone)
    return ok({"phone": phone, "messages": received, "total": len(received)})


@api.get("/api/simulator/connections", access="admin",
         doc=op("Live connections per company and account, and the most seen at once", "Any"))
def connections(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """Live connections per company and per account."""
    return ok(ctx.board.network.connections())
