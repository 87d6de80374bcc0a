"""The OpenAPI 3 document served at `/openapi.json`.

Each route declares its operation where it is registered (`doc=op(...)`, see
plumbing.Routes); this module holds the shared schemas and turns the registered routes
into the document. Security follows the route's access level, so the document cannot
disagree with the plugin that enforces it. A test still checks routes and document in
both directions, and schemathesis checks the answers against it.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from typing import TYPE_CHECKING, Any, Iterable

from switchboard.actors.payload import MAX_TEXT

if TYPE_CHECKING:
    from .plumbing import Route

VERSION = "0.1.0"
COMPANY_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,50}$", "minLength": 1, "maxLength": 50,
              "example": "962302"}
PHONE = {"type": "string", "maxLength": 100, "example": "79001234567",
         "pattern": r"^(\+?[ ()\-.]*[1-9][ ()\-.]*([0-9][ ()\-.]*){6,14}|[1-9][0-9]{6,14}(:[0-9]+)?@(s\.whatsapp\.net|c\.us))$",
         "description": "7-15 digits in international form (country code first, no leading 0), written "
                        "with +, spaces, dashes, parentheses, or as a JID (79001234567@s.whatsapp.net)"}
NULLABLE_STRING = {"type": "string", "nullable": True}
MESSAGE = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S",
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
    "unconfirmed": {"type": "integer", "minimum": 0,
                    "description": "sends that may have reached WhatsApp with no answer saying so (not resent)"},
    "lastUnconfirmed": {"type": "array", "items": {"type": "string"},
                        "description": "outbox ids of the latest unconfirmed sends"},
    "interrupted": {"type": "boolean",
                    "description": "reconnecting while the transport heals the same link (sending paused)"},
}
STATUS_REQUIRED = ["companyId", "status", "connected"]
QR_PROPS = {
    "qr": {**NULLABLE_STRING, "description": "the raw QR string (render it yourself), or null"},
    "qrDataUrl": {**NULLABLE_STRING, "description": "the QR code as a data:image/png;base64 URL"},
    "qrCode": {**NULLABLE_STRING, "description": "the same PNG data URL, under the replaced system's name"},
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
    "status": {"type": "string", "enum": ["sent", "queued", "unconfirmed"],
               "description": "unconfirmed: it may have reached WhatsApp, but no answer says so; it is not "
                              "resent (send it again with a new Idempotency-Key if it did not arrive)"},
    "error": {"type": "string", "description": "why the outcome is unknown (status unconfirmed)"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["success", "error"],
              "properties": {"success": {"type": "boolean", "enum": [False]}, "error": {"type": "string"},
                             "retryAfter": {"type": "integer", "description": "milliseconds to wait"},
                             "status": {"type": "string", "description": "the session state, when it matters"},
                             "scope": {"type": "string", "enum": ["company", "recipient", "client"],
                                       "description": "what the limit counts: the company's sends, one "
                                                      "recipient's, or this client's requests in progress"},
                             "detail": {"type": "string", "description": "more about the error, beside the "
                                                                          "replaced system's exact text"},
                             "qrCode": {**NULLABLE_STRING, "description": "with \"Authentication required\": "
                                                                          "the QR code to scan, a PNG data URL"}}},
    "Status": _ok({**STATUS_PROPS, "health": {
        "type": "object", "description": "the replaced system's shape: connected, and the phone as a JID",
        "properties": {"healthy": {"type": "boolean"}, "phoneNumber": NULLABLE_STRING}}}, STATUS_REQUIRED),
    "StatusWithQr": _ok({**STATUS_PROPS, **QR_PROPS, "created": {"type": "boolean"}}, STATUS_REQUIRED),
    "Diagnostics": _ok({**STATUS_PROPS, "transport": {"type": "string"}, "connectionAlive": {"type": "boolean"},
                        "reconnectsByReason": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "ownershipLockHeld": {"type": "boolean"},
                        "connectedForSeconds": {"type": "number", "nullable": True}}, STATUS_REQUIRED),
    "SessionList": _ok({"count": {"type": "integer", "minimum": 0}, "sessions": {"type": "array", "items": {
        "type": "object", "required": ["companyId", "status"], "properties": STATUS_PROPS}},
        "total": {"type": "integer"},
        "metrics": {"type": "object", "required": ["totalSessions", "activeConnections", "messagesSent",
                                                   "messagesReceived"],
                    "properties": {"totalSessions": {"type": "integer", "minimum": 0},
                                   "activeConnections": {"type": "integer", "minimum": 0},
                                   "messagesSent": {"type": "integer", "minimum": 0},
                                   "messagesReceived": {"type": "integer", "minimum": 0}}}},
        ["count", "sessions", "total", "metrics"]),
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
                        "code": {"type": "string", "example": "ABCD-1234"}, "hint": {"type": "string"},
                        "expiresAt": {"type": "string", "format": "date-time",
                                      "description": "when the QR session the code belongs to ends"}}, ["code"]),
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
    "WebSession": _ok({"admin": {"type": "boolean"}, "companyId": NULLABLE_STRING, "keyId": {"type": "string"},
                       "csrfToken": {**NULLABLE_STRING, "description": "send as X-CSRF-Token with the cookie"}},
                      ["admin", "keyId"]),
    "Activity": _ok({"companyId": NULLABLE_STRING, "messagesSent": {"type": "integer", "minimum": 0},
                     "messagesReceived": {"type": "integer", "minimum": 0}, "now": {"type": "number"},
                     "minutes": {"type": "array", "items": {
                         "type": "object", "required": ["minute", "sent", "received"],
                         "properties": {"minute": {"type": "integer"}, "sent": {"type": "integer"},
                                        "received": {"type": "integer"}}}}},
                    ["minutes", "messagesSent", "messagesReceived"]),
    "OldHealth": _ok({"companyId": COMPANY_ID, "provider": {"type": "object"}, "redis": {"nullable": True},
                      "history": {"type": "array", "items": {"type": "object"}},
                      "recommendations": {"type": "array", "items": {"type": "string"}},
                      "healthy": {"type": "boolean"}}, ["companyId", "provider", "recommendations"]),
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


@dataclasses.dataclass(frozen=True)
class Operation:
    """One route's OpenAPI operation, as declared beside the route. `ok`: the success
    schema's name, or a whole response object; `errors`: the error codes this route can
    answer besides those implied by its access level and body (401/403, 400/413/415, 500)."""
    summary: str
    ok: dict[str, Any] | str | None
    errors: tuple[int, ...] = ()
    body: dict[str, Any] | None = None
    body_required: bool = True
    params: tuple[dict[str, Any], ...] = ()
    status: int = 200
    extra: dict[int, Any] | None = None
    description: str | None = None
    tag: str | None = None           # None: the route module's tag
    html_errors: bool = False        # errors are HTML pages for a person (the QR page)


def op(summary: str, ok: dict[str, Any] | str | None, *, errors: tuple[int, ...] = (),
       body: dict[str, Any] | None = None, body_required: bool = True, params: Iterable[dict[str, Any]] = (),
       status: int = 200, extra: dict[int, Any] | None = None, description: str | None = None,
       tag: str | None = None, html_errors: bool = False) -> Operation:
    """Declare a route's operation: `@api.post(path, doc=op("Send a text", "Sent", errors=(409,)))`."""
    return Operation(summary, ok, tuple(errors), body, body_required, tuple(params), status, extra, description, tag,
                     html_errors)


def _render(operation: Operation, access: str, tag: str) -> dict[str, Any]:
    public, admin = access == "public", access == "admin"
    codes = set(operation.errors) | {429, 500}      # 429: every caller's share of the threads (limits.py)
    if not public:
        codes |= {401, 403}
    if operation.body is not None:
        codes |= {400, 413, 415}
    responses: dict[str, Any] = {}
    if isinstance(operation.ok, str):
        responses[str(operation.status)] = _json(_ref(operation.ok), "success")
    elif operation.ok is not None:
        responses[str(operation.status)] = operation.ok
    for code, value in (operation.extra or {}).items():
        responses[str(code)] = value
    for code in sorted(codes):
        headers = {}
        if code in (429, 503):
            headers = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        answer = ({"description": ERROR_TEXT[code], "content": {"text/html": {"schema": {"type": "string"}}}}
                  if operation.html_errors else _json(_ref("Error"), ERROR_TEXT[code]))
        responses[str(code)] = {**answer, **({"headers": headers} if headers else {})}
    rendered: dict[str, Any] = {"summary": operation.summary, "tags": [tag], "responses": responses}
    if operation.description:
        rendered["description"] = operation.description
    if public:
        rendered["security"] = []
    elif admin:
        rendered["description"] = (rendered.get("description", "") + " Admin key only.").strip()
    if operation.params:
        rendered["parameters"] = list(operation.params)
    if operation.body is not None:
        rendered["requestBody"] = {"required": operation.body_required,
                                   "content": {"application/json": {"schema": operation.body}}}
    return rendered


def response(schema: str, description: str) -> dict[str, Any]:
    """A JSON response with one of the shared schemas."""
    return _json(_ref(schema), description)


def body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A JSON request body schema (OpenAPI 3.0 forbids an empty `required` list)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


EMPTY_BODY = {"type": "object", "description": "optional; ignored"}

_PATH_PARAMETER = {"companyId": COMPANY_ID, "phone": PHONE}
_KEY_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$"}


def openapi_path(rule: str) -> str:
    """Bottle's `/a/<companyId>` as OpenAPI's `/a/{companyId}`."""
    return re.sub(r"<([^>:]+)(:[^>]*)?>", r"{\1}", rule)


def _paths(routes: Iterable[Route]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        path = openapi_path(route.rule)
        item = paths.setdefault(path, {})
        item[route.method.lower()] = _render(route.doc, route.access, route.tag)
        names = re.findall(r"{([^}]+)}", path)
        if names:
            item["parameters"] = [{"name": n, "in": "path", "required": True,
                                   "schema": _PATH_PARAMETER.get(n, _KEY_ID)} for n in names]
    return paths


def build_spec(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI document of these routes (see switchboard.http.app.routes)."""
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
        "paths": _paths(routes),
    })
