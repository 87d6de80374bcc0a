"""The OpenAPI 3 document served at `/openapi.json`.

Written by hand, next to the routes rather than generated from them, so that a test can
check the two against each other in both directions (every route documented, every
documented operation routed) and schemathesis can check the answers against it.
"""
from __future__ import annotations

import copy
from typing import Any

VERSION = "0.1.0"
COMPANY_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,50}$", "minLength": 1, "maxLength": 50,
              "example": "962302"}
PHONE = {"type": "string", "maxLength": 100, "example": "79001234567",
         "pattern": r"^(\+?[ ()\-.]*([0-9][ ()\-.]*){7,15}|[0-9]{7,15}(:[0-9]+)?@(s\.whatsapp\.net|c\.us))$",
         "description": "7-15 digits, written with +, spaces, dashes, parentheses, or as a JID "
                        "(79001234567@s.whatsapp.net)"}
NULLABLE_STRING = {"type": "string", "nullable": True}
MESSAGE = {"type": "string", "minLength": 1, "maxLength": 65536, "pattern": r"\S",
           "description": "the text; not only whitespace"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": ["success", *(required or [])],
            "properties": {"success": {"type": "boolean", "enum": [True]}, **properties}}


STATUS_PROPS: dict[str, Any] = {
    "companyId": COMPANY_ID,
    "status": {"type": "string", "enum": ["stopped", "starting", "qr", "connected", "reconnecting", "failed",
                                          "logged_out", "conflict", "banned", "restarting"]},
    "connected": {"type": "boolean"},
    "phoneNumber": {**NULLABLE_STRING, "example": "+79686484488"},
    "connectedAt": {**NULLABLE_STRING, "format": "date-time"},
    "lastError": NULLABLE_STRING,
    "reconnectAttempts": {"type": "integer", "minimum": 0},
    "nextRetryAt": {**NULLABLE_STRING, "format": "date-time"},
    "qrAvailable": {"type": "boolean"},
    "queued": {"type": "integer", "minimum": 0},
    "messagesSent": {"type": "integer", "minimum": 0},
    "messagesReceived": {"type": "integer", "minimum": 0},
}
STATUS_REQUIRED = ["companyId", "status", "connected"]
QR_PROPS = {
    "qr": {**NULLABLE_STRING, "description": "the raw QR string (render it yourself), or null"},
    "qrDataUrl": {**NULLABLE_STRING, "description": "the QR code as a data:image/png;base64 URL"},
    "qrExpiresAt": {**NULLABLE_STRING, "format": "date-time"},
    "pageUrl": {"type": "string", "description": "a browser page with the QR code, valid for 15 minutes "
                                                 "without an API key"},
}
SEND_PROPS = {
    "id": {"type": "string", "description": "the outbox id of this send"},
    "to": {"type": "string", "description": "the recipient's digits"},
    "companyId": COMPANY_ID,
    "queued": {"type": "boolean"},
    "messageId": {**NULLABLE_STRING, "description": "WhatsApp's message id once sent"},
    "status": {"type": "string", "enum": ["sent", "queued"]},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["success", "error"],
              "properties": {"success": {"type": "boolean", "enum": [False]}, "error": {"type": "string"},
                             "retryAfter": {"type": "integer", "description": "milliseconds to wait"},
                             "status": {"type": "string", "description": "the session state, when it matters"},
                             "scope": {"type": "string", "enum": ["company", "recipient"]}}},
    "Status": _ok(STATUS_PROPS, STATUS_REQUIRED),
    "StatusWithQr": _ok({**STATUS_PROPS, **QR_PROPS, "created": {"type": "boolean"}}, STATUS_REQUIRED),
    "Diagnostics": _ok({**STATUS_PROPS, "transport": {"type": "string"}, "connectionAlive": {"type": "boolean"},
                        "reconnectsByReason": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "ownershipLockHeld": {"type": "boolean"},
                        "connectedForSeconds": {"type": "number", "nullable": True}}, STATUS_REQUIRED),
    "SessionList": _ok({"sessions": {"type": "array", "items": {
        "type": "object", "required": ["companyId", "status"], "properties": STATUS_PROPS}},
        "total": {"type": "integer"}}, ["sessions", "total"]),
    "Sent": _ok(SEND_PROPS, ["id", "to", "queued", "messageId", "status"]),
    "Health": _ok({"status": {"type": "string", "enum": ["ok"]}, "timestamp": {"type": "string"},
                   "uptimeSeconds": {"type": "number"}}, ["status"]),
    "SessionHealth": _ok({"companyId": COMPANY_ID, "healthy": {"type": "boolean"}, "status": {"type": "string"},
                          "recommendations": {"type": "array", "items": {"type": "string"}},
                          "diagnostics": {"type": "object"}}, ["companyId", "healthy", "recommendations"]),
    "Metrics": _ok({"totalSessions": {"type": "integer"}, "activeConnections": {"type": "integer", "minimum": 0},
                    "sessionsByState": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "messagesSent": {"type": "integer"}, "messagesReceived": {"type": "integer"},
                    "queuedMessages": {"type": "integer"}, "reconnecting": {"type": "integer"},
                    "uptimeSeconds": {"type": "number"}, "transport": {"type": "string"},
                    "rateLimited": {"type": "integer"},
                    "reconnectsByReason": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "eventStreams": {"type": "integer"}},
                   ["totalSessions", "activeConnections", "messagesSent", "messagesReceived"]),
    "Qr": _ok({"companyId": COMPANY_ID, **QR_PROPS}, ["qr", "qrDataUrl"]),
    "PairingCode": _ok({"companyId": COMPANY_ID, "phone": {"type": "string"},
                        "code": {"type": "string", "example": "ABCD-1234"}, "hint": {"type": "string"}}, ["code"]),
    "Removed": _ok({"companyId": COMPANY_ID, "removed": {"type": "boolean"}, "loggedOut": {"type": "boolean"}},
                   ["removed"]),
    "Log": _ok({"records": {"type": "array", "items": {"type": "object"}}, "count": {"type": "integer"}},
               ["records"]),
    "ApiKey": {"type": "object", "required": ["id", "companyId"],
               "properties": {"id": {"type": "string"}, "companyId": COMPANY_ID, "name": NULLABLE_STRING,
                              "createdAt": {"type": "string"}}},
    "NewApiKey": _ok({"id": {"type": "string"}, "companyId": COMPANY_ID, "name": NULLABLE_STRING,
                      "createdAt": {"type": "string"},
                      "key": {"type": "string", "description": "the key; shown only in this answer"},
                      "note": {"type": "string"}}, ["id", "key", "companyId"]),
    "ApiKeyList": _ok({"keys": {"type": "array", "items": _ref("ApiKey")}, "total": {"type": "integer"}}, ["keys"]),
    "Revoked": _ok({"id": {"type": "string"}, "revoked": {"type": "boolean"}}, ["revoked"]),
    "Any": _ok({}),
}

ERROR_TEXT = {
    400: "invalid input (nothing was changed)", 401: "API key missing or wrong",
    403: "this key may not do that", 404: "no such session (or not this key's company)",
    409: "the session's state does not allow this now", 413: "request body too large",
    415: "Content-Type must be application/json", 429: "rate limited: wait retryAfter ms (Retry-After header)",
    500: "internal error (details only in the server log)", 502: "WhatsApp refused the request",
    503: "actor did not answer in time, session restarting, or the server is busy/shutting down",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: dict[str, Any] | str | None, *, tag: str, errors: tuple[int, ...] = (),
        body: dict[str, Any] | None = None, body_required: bool = True, params: list[dict] | None = None,
        public: bool = False, admin: bool = False, status: int = 200, extra: dict[int, Any] | None = None,
        description: str | None = None) -> dict[str, Any]:
    codes = set(errors) | {500}
    if not public:
        codes |= {401, 403}
    if body is not None:
        codes |= {400, 413, 415}
    responses: dict[str, Any] = {}
    if isinstance(ok, str):
        responses[str(status)] = _json(_ref(ok), "success")
    elif ok is not None:
        responses[str(status)] = ok
    for code, value in (extra or {}).items():
        responses[str(code)] = value
    for code in sorted(codes):
        headers = {}
        if code in (429, 503):
            headers = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        responses[str(code)] = {**_json(_ref("Error"), ERROR_TEXT[code]), **({"headers": headers} if headers else {})}
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        operation["description"] = description
    if public:
        operation["security"] = []
    elif admin:
        operation["description"] = (operation.get("description", "") + " Admin key only.").strip()
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": body_required,
                                    "content": {"application/json": {"schema": body}}}
    return operation


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


EMPTY_BODY = {"type": "object", "description": "optional; ignored"}
SEND_RESPONSES = {202: _json(_ref("Sent"), "accepted into the outbox; sent once connected (queued: true)")}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "minLength": 1, "maxLength": 200},
               "description": "a retry with the same key does not send twice"}
SSE = {"description": "text/event-stream: `id:` (resume with Last-Event-ID), `event:` (state, qr, paired, "
                      "message, receipt, message.sent, message.failed, spawned, crashed, restarting, gave_up, "
                      "removed, gateway), `data:` JSON; `: ping` heartbeats",
       "content": {"text/event-stream": {"schema": {"type": "string"}}}}
SSE_PARAMS = [_query("events", {"type": "string", "pattern": "^[a-z_.]{1,30}(,[a-z_.]{1,30})*$"},
                     "only these event kinds, comma-separated"),
              _query("lastEventId", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                     "resume after this event id (same as the Last-Event-ID header)"),
              {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}}]
SCALE = _query("scale", {"type": "integer", "minimum": 1, "maximum": 20}, "pixels per module (default 8)")


def _paths(simulator: bool) -> dict[str, Any]:
    s = "Sessions"
    paths: dict[str, Any] = {
        "/health": {"get": _op("Liveness of the gateway (no API key)", "Health", tag="Gateway", public=True,
                               errors=(503,))},
        "/openapi.json": {"get": _op("This document", {"description": "OpenAPI 3 document",
                                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                                     tag="Gateway")},
        "/metrics": {"get": _op("Prometheus metrics", {"description": "Prometheus text exposition",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}},
                                tag="Gateway", admin=True)},
        "/api/whatsapp/metrics": {"get": _op("Global figures derived from the sessions' states", "Metrics",
                                             tag="Gateway", admin=True)},
        "/api/whatsapp/sessions": {
            "get": _op("All sessions (a tenant key sees its own)", "SessionList", tag=s),
            "post": _op("Create and start a session; answers its status and the QR code when one is shown",
                        "StatusWithQr", tag=s, status=201, errors=(409, 503),
                        body=_body({"companyId": COMPANY_ID}, ["companyId"]),
                        extra={200: _json(_ref("StatusWithQr"), "the session existed; started")}),
        },
        "/api/whatsapp/sessions/{companyId}": {
            "get": _op("A session's status and diagnostics", "Diagnostics", tag=s, errors=(400, 404, 503)),
            "delete": _op("Log out (unless logout=false), stop and delete the session and its files", "Removed",
                          tag=s, errors=(400, 404, 503),
                          params=[_query("logout", {"type": "string", "enum": ["true", "false"]},
                                         "false keeps the device linked on the phone")]),
        },
        "/api/whatsapp/sessions/{companyId}/status": {
            "get": _op("A session's status", "Status", tag=s, errors=(400, 404, 503))},
        "/api/whatsapp/sessions/{companyId}/initialize": {
            "post": _op("Create if needed, start, and answer the QR code (waits up to 2 s for it)", "StatusWithQr",
                        tag=s, errors=(409, 503), body=EMPTY_BODY, body_required=False)},
        "/api/whatsapp/sessions/{companyId}/start": {
            "post": _op("Start (connect with stored credentials, or show a QR code)", "Status", tag=s,
                        errors=(404, 409, 503), body=EMPTY_BODY, body_required=False)},
        "/api/whatsapp/sessions/{companyId}/stop": {
            "post": _op("Stop; credentials and outbox are kept", "Status", tag=s, errors=(404, 409, 503),
                        body=EMPTY_BODY, body_required=False)},
        "/api/whatsapp/sessions/{companyId}/reconnect": {
            "post": _op("Drop whatever is there and connect now (also takes over after a conflict)", "Status",
                        tag=s, errors=(404, 409, 503), body=EMPTY_BODY, body_required=False)},
        "/api/whatsapp/sessions/{companyId}/logout": {
            "post": _op("Unlink the device on WhatsApp's side and delete the credentials", "Status", tag=s,
                        errors=(404, 409, 503), body=EMPTY_BODY, body_required=False)},
        "/api/whatsapp/sessions/{companyId}/messages": {
            "post": _op("Send a text message (recipient in `to`)", "Sent", tag="Messages",
                        errors=(404, 409, 429, 502, 503), params=[IDEMPOTENCY], extra=SEND_RESPONSES,
                        body=_body({"to": PHONE, "message": MESSAGE},
                                   ["to", "message"]),
                        description="200 with messageId once WhatsApp took it; 202 queued when the session is "
                                    "reconnecting (delivered in order once connected)")},
        "/api/whatsapp/sessions/{companyId}/send": {
            "post": _op("Send a text message (recipient in `phone`)", "Sent", tag="Messages",
                        errors=(404, 409, 429, 502, 503), params=[IDEMPOTENCY], extra=SEND_RESPONSES,
                        body=_body({"phone": PHONE, "message": MESSAGE}, ["phone", "message"]))},
        "/webhook/whatsapp/baileys/send": {
            "post": _op("Send (the old webhook shape)", "Sent", tag="Messages", errors=(404, 409, 429, 502, 503),
                        params=[IDEMPOTENCY], extra=SEND_RESPONSES,
                        body=_body({"companyId": COMPANY_ID, "phone": PHONE,
                                    "message": MESSAGE},
                                   ["companyId", "phone", "message"]))},
        "/api/whatsapp/sessions/{companyId}/health": {
            "get": _op("Diagnostics with plain-language recommendations", "SessionHealth", tag=s,
                       errors=(400, 404, 503))},
        "/api/whatsapp/sessions/{companyId}/qr": {
            "get": _op("The current QR code: raw string, PNG data URL, and a page link", "Qr", tag="Linking",
                       errors=(400, 404, 409, 503))},
        "/api/whatsapp/sessions/{companyId}/qr.png": {
            "get": _op("The current QR code as PNG", {"description": "PNG image",
                                                      "content": {"image/png": {"schema": {"type": "string",
                                                                                           "format": "binary"}}}},
                       tag="Linking", errors=(400, 404, 409, 503), params=[SCALE])},
        "/api/whatsapp/sessions/{companyId}/qr.svg": {
            "get": _op("The current QR code as SVG", {"description": "SVG image",
                                                      "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
                       tag="Linking", errors=(400, 404, 409, 503), params=[SCALE])},
        "/qr/{companyId}": {
            "get": _op("A browser page with the QR code that follows its rotation",
                       {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                       tag="Linking", errors=(400, 404, 503),
                       params=[_query("token", {"type": "string", "maxLength": 200},
                                      "the signed token from pageUrl (instead of an API key)")],
                       description="Takes an API key, or the short-lived token of a `pageUrl`.")},
        "/api/whatsapp/sessions/{companyId}/pairing-code": {
            "post": _op("Get an 8-character pairing code for a phone number (instead of scanning)", "PairingCode",
                        tag="Linking", errors=(404, 409, 503), body=_body({"phone": PHONE}, ["phone"]))},
        "/api/whatsapp/events": {
            "get": _op("Live events of every session (a tenant key: its own)", SSE, tag="Events", errors=(400, 503),
                       params=SSE_PARAMS)},
        "/api/whatsapp/sessions/{companyId}/events": {
            "get": _op("Live events of one session", SSE, tag="Events", errors=(400, 404, 503), params=SSE_PARAMS)},
        "/api/supervisor/log": {
            "get": _op("The supervisor log (lifecycle and supervision events)", "Log", tag="Events",
                       errors=(400, 404),
                       params=[_query("since", {"oneOf": [
                                          {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,6})?[smhd]?$"},
                                          {"type": "string", "format": "date-time"}]},
                                      "ISO time, Unix seconds, or 30s/10m/2h/1d back from now"),
                               _query("company", COMPANY_ID, "only this company"),
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000},
                                      "at most this many (the newest); default 200")])},
        "/api/keys": {
            "get": _op("Tenant API keys (never the keys themselves)", "ApiKeyList", tag="Keys", admin=True),
            "post": _op("Create a tenant key for one company; the key is shown only in this answer", "NewApiKey",
                        tag="Keys", admin=True, status=201,
                        body=_body({"companyId": COMPANY_ID, "name": {"type": "string", "maxLength": 100}},
                                   ["companyId"]))},
        "/api/keys/{keyId}": {
            "delete": _op("Revoke a tenant key", "Revoked", tag="Keys", admin=True, errors=(404,))},
    }
    if simulator:
        sim = "Simulator"
        paths.update({
            "/api/simulator/companies/{companyId}/scan": {
                "post": _op("The phone `phone` scans the company's QR code (without `phone`: the phone a "
                            "pairing code was requested for enters it)", "Any", tag=sim, admin=True,
                            errors=(404,), body=_body({"phone": PHONE}, []), body_required=False)},
            "/api/simulator/companies/{companyId}/faults": {
                "post": _op("Inject a fault", "Any", tag=sim, admin=True, errors=(404,),
                            body=_body({"fault": {"type": "string",
                                                  "enum": ["drop", "refuse", "latency", "logout", "ban", "replace"]},
                                        "seconds": {"type": "number", "minimum": 0, "maximum": 86400}},
                                       ["fault"]))},
            "/api/simulator/inbound": {
                "post": _op("Someone writes to a company's account", "Any", tag=sim, admin=True, errors=(404,),
                            body=_body({"companyId": COMPANY_ID, "from": PHONE,
                                        "text": {"type": "string", "maxLength": 65536},
                                        "id": {"type": "string", "maxLength": 200},
                                        "pushName": {"type": "string", "maxLength": 200}},
                                       ["companyId", "from", "text"]))},
            "/api/simulator/phones/{phone}/messages": {
                "get": _op("What a phone received, in order", "Any", tag=sim, admin=True, errors=(400,))},
            "/api/simulator/connections": {
                "get": _op("Live connections per company and account, and the most seen at once", "Any", tag=sim,
                           admin=True)},
        })
    for path, item in paths.items():
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        if names:
            item["parameters"] = [{"name": n, "in": "path", "required": True,
                                   "schema": COMPANY_ID if n == "companyId" else
                                   PHONE if n == "phone" else {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
                                  for n in names]
    return paths


def build_spec(simulator: bool = False) -> dict[str, Any]:
    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {"title": "Switchboard", "version": VERSION,
                 "description": "Multi-tenant WhatsApp session gateway. Every endpoint but /health needs an API "
                                "key (X-Api-Key or Authorization: Bearer). Answers: {\"success\": true, ...} or "
                                "{\"success\": false, \"error\": \"...\", \"retryAfter\": ms}."},
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}, {"bearer": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
        "paths": _paths(simulator),
    })
