"""The simulated WhatsApp's control API (admin only): scan a QR code, inject faults, write
to a company, read what a phone got, see every live connection.

Two places serve it: the gateway, when its transport is the in-process simulator
(`serve --transport simulated`), and `switchboard simulator` itself (`make_service_app`),
which adds its liveness and the address gateways link to. A gateway linked to a remote
simulator (`--simulator-url`) does not mount these routes: the service answers them,
with its own admin key, so there is one authority for a simulated WhatsApp that several
gateways share."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import bottle

from switchboard.actors.clock import iso
from switchboard.actors.payload import MAX_TEXT
from switchboard.actors.phone import normalize_phone, validate_company_id
from switchboard.actors.transports.simulated import FAULTS, LOGIN_OUTCOMES, SimulatedNetwork
from switchboard.actors.transports.simulated.ledger import HISTORY

from . import metrics as metrics_mod
from .auth import ApiKeys, Principal
from .openapi import COMPANY_ID, PHONE, body, build_spec, op, query
from .plumbing import ApiError, ApiPlugin, Routes, field, int_query, json_body, json_error_handler, mount, ok
from .state import AppState, HttpSettings

api = Routes("Simulator")


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
    return ok(_simulated(lambda: ctx.network.scan(companyId, phone)))


_SECONDS = {"type": "number", "minimum": 0, "maximum": 86400}
_WITH_FIELDS = ("no-lid", "login", "logout", "reject")
# One schema per kind of fault, so that a schema-valid body is always a valid fault.
_FAULT_BODY = {"oneOf": [
    body({"fault": {"type": "string", "enum": [f for f in FAULTS if f not in _WITH_FIELDS]}, "seconds": _SECONDS},
         ["fault"]),
    body({"fault": {"type": "string", "enum": ["no-lid"]}, "seconds": _SECONDS,
          "phone": {**PHONE, "description": "the number that is not on WhatsApp (seconds 0: it is again)"}},
         ["fault", "phone"]),
    body({"fault": {"type": "string", "enum": ["login"]},
          "outcome": {"type": "string", "enum": list(LOGIN_OUTCOMES), "description": "how the QR login ends"}},
         ["fault", "outcome"]),
    body({"fault": {"type": "string", "enum": ["reject"]}, "seconds": _SECONDS,
          "code": {"type": "integer", "minimum": 400, "maximum": 599,
                   "description": "the connect failure code (405: client outdated)"}}, ["fault", "code"]),
    body({"fault": {"type": "string", "enum": ["logout"]},
          "code": {"type": "integer", "enum": [401, 403, 406],
                   "description": "unlinked (401, default), locked (403), banned (406)"}}, ["fault"]),
]}


@api.post("/api/simulator/companies/<companyId>/faults", access="admin",
          doc=op("Inject a fault (see actors/transports/simulated/faults.py); 404 for a company the simulator "
                 "never saw, or one without what the fault needs (a live link, a QR code on screen)", "Any",
                 errors=(404,), body=_FAULT_BODY))
def fault(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """Drop, refuse, slow down, interrupt, log out, ban or replace the company's connection, ..."""
    payload = json_body()
    kind = field(payload, "fault", max_len=20)
    seconds = payload.get("seconds", 30)
    phone = field(payload, "phone", required=False, max_len=100)
    outcome = field(payload, "outcome", required=False, max_len=40)
    code = payload.get("code")
    return ok(_simulated(lambda: ctx.network.fault(companyId, kind, seconds, phone=phone, outcome=outcome,
                                                   code=code)))


@api.post("/api/simulator/inbound", access="admin",
          doc=op("Someone writes to a company's account", "Any", errors=(404,),
                 body=body({"companyId": COMPANY_ID, "from": PHONE, "text": {"type": "string", "maxLength": MAX_TEXT},
                            "id": {"type": "string", "maxLength": 200},
                            "pushName": {"type": "string", "maxLength": 200},
                            "asLid": {"type": "boolean", "description": "the sender arrives as its LID (@lid), "
                                                                        "without the phone alternate"}},
                           ["companyId", "from", "text"])))
def inbound(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """Deliver an incoming message to a company (the network checks the sender)."""
    payload = json_body()
    company_id = validate_company_id(payload.get("companyId"))
    sender = field(payload, "from")
    text = field(payload, "text", max_len=MAX_TEXT)
    message_id = field(payload, "id", required=False, max_len=200)
    push_name = field(payload, "pushName", required=False, max_len=200) or ""
    as_lid = payload.get("asLid", False)
    if not isinstance(as_lid, bool):
        raise ApiError(400, "'asLid' must be true or false")
    delivered = _simulated(lambda: ctx.network.deliver_inbound(company_id, sender, text, message_id, push_name,
                                                               as_lid=as_lid))
    return ok({"companyId": company_id, "id": delivered})


@api.get("/api/simulator/phones/<phone>/messages", access="admin",
         doc=op("What a phone received, in order", "Any", errors=(400,)))
def phone_messages(ctx: AppState, _principal: Principal, phone: str) -> dict[str, Any]:
    """Every message a phone number received."""
    phone = normalize_phone(phone)
    received = ctx.network.messages(phone)
    return ok({"phone": phone, "messages": received, "total": len(received)})


@api.get("/api/simulator/connections", access="admin",
         doc=op("Live connections per company and account, the most seen at once, and the last changes", "Any",
                errors=(400,), params=[query("history", {"type": "integer", "minimum": 0, "maximum": HISTORY},
                                             "how many of the last connection changes to list (default 200)")]))
def connections(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """Live connections per company and per account, and the last `history` changes."""
    return ok(ctx.network.connections(int_query("history", 200, 0, HISTORY)))


# ---- the service's own routes (`switchboard simulator`) -------------------------------------

service_api = Routes("Simulator service")


@service_api.get("/health", access="public", doc=op("Liveness of the simulator (no API key)", "Any", errors=(503,)))
def service_health(ctx: SimulatorState, _principal: None) -> dict[str, Any]:
    if ctx.draining.is_set():
        raise ApiError(503, "shutting down", status="draining")
    return ok({"status": "ok", "timestamp": iso(time.time()), "simulator": True})


@service_api.get("/api/simulator/link", access="public",
                 doc=op("Where gateways open their links (one TCP socket per company, newline-delimited JSON)",
                        "Any"))
def link_address(ctx: SimulatorState, _principal: None) -> dict[str, Any]:
    host, port = ctx.link
    return ok({"host": host, "port": port, "protocol": "switchboard-simulator", "version": 1})


@service_api.get("/openapi.json", doc=op("This document", "Any"))
def service_openapi(ctx: SimulatorState, _principal: Principal) -> bytes:
    bottle.response.content_type = "application/json"
    return ctx.spec_bytes


class SimulatorState:
    """What the routes and the plugin need from the service (AppState's shape, no board)."""

    def __init__(self, network: SimulatedNetwork, keys: ApiKeys, link: tuple[str, int],
                 settings: HttpSettings | None = None) -> None:
        self.network = network
        self.keys = keys
        self.link = link
        self.settings = settings or HttpSettings(sse_max_streams=0)
        self.ask_timeout = 5.0
        self.counters = metrics_mod.Counters()
        self.request_times = metrics_mod.RequestTimes()
        self.draining = threading.Event()
        self.spec_bytes = b"{}"

    def begin_shutdown(self) -> None:
        self.draining.set()


def make_service_app(network: SimulatedNetwork, admin_key: str, link: tuple[str, int],
                     data_dir: Path) -> bottle.Bottle:
    """The WSGI app of `switchboard simulator`: the control API, its liveness and link address."""
    state = SimulatorState(network, ApiKeys(Path(data_dir) / "simulator-api-keys.json", admin_key), link)
    mounted = [*service_api, *api]
    state.spec_bytes = json.dumps(build_spec(mounted), indent=1).encode()
    app = bottle.Bottle(catchall=True, autojson=True)
    app.switchboard = state
    app.default_error_handler = json_error_handler
    for code in (400, 401, 403, 404, 405, 413, 415, 500):
        app.error(code)(json_error_handler)
    app.install(ApiPlugin(state))        # type: ignore[arg-type]
    mount(app, mounted)
    return app
