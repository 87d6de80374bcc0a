"""API key routes (admin only): create, list and revoke tenant keys."""
from __future__ import annotations

import re
from typing import Any

from switchboard.actors.phone import validate_company_id

from .auth import Principal
from .openapi import COMPANY_ID, body, op
from .plumbing import ApiError, Routes, field, json_body, ok
from .state import AppState

api = Routes("Keys")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


@api.post("/api/keys", access="admin",
          doc=op("Create a tenant key for one company; the key is shown only in this answer", "NewApiKey",
                 status=201, body=body({"companyId": COMPANY_ID, "name": {"type": "string", "maxLength": 100}},
                                       ["companyId"])))
def create_key(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """A new tenant key; the answer is the only place the key itself ever appears."""
    payload = json_body()
    company_id = validate_company_id(payload.get("companyId"))
    record, key = ctx.keys.create(company_id, field(payload, "name", required=False, max_len=100))
    return ok({**record, "key": key,
               "note": "store this key now: it is shown only once (the server keeps only its hash)"}, 201)


@api.get("/api/keys", access="admin", doc=op("Tenant API keys (never the keys themselves)", "ApiKeyList"))
def list_keys(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """The tenant keys' public records."""
    listed = ctx.keys.list()
    return ok({"keys": listed, "total": len(listed)})


@api.delete("/api/keys/<keyId>", access="admin", doc=op("Revoke a tenant key", "Revoked", errors=(404,)))
def delete_key(ctx: AppState, _principal: Principal, keyId: str) -> dict[str, Any]:
    """Revoke a tenant key; it stops working at once."""
    if not _KEY_ID.fullmatch(keyId) or not ctx.keys.revoke(keyId):
        raise ApiError(404, f"API key {keyId} not found")
    return ok({"id": keyId, "revoked": True})
