"""A sent message's status: `GET .../sessions/:companyId/messages/:id` (issue 13).

The id is the one the send returned (`id`), or WhatsApp's `messageId`; the actor answers
from its status store (actors/statuses.py).
"""
from __future__ import annotations

import re
from typing import Any

from .auth import Principal
from .openapi import op
from .plumbing import ApiError, Routes, ok
from .state import AppState

api = Routes("Messages")
_REF = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@api.get("/api/whatsapp/sessions/<companyId>/messages/<messageRef>",
         doc=op("A sent message's status: queued, sent, delivered, read, failed or unconfirmed", "MessageStatus",
                errors=(400, 404, 503),
                description="joined from the send's outcome and WhatsApp's receipts; each change is also "
                            "published as a `message.status` event (webhooks, the event stream)"))
def message_status(ctx: AppState, _principal: Principal, companyId: str, messageRef: str) -> dict[str, Any]:
    """The status of one send, by the id the send returned."""
    if not _REF.fullmatch(messageRef):
        raise ApiError(400, "message id must be 1-128 letters, digits, '_', '.', ':' or '-'")
    status = ctx.ask(ctx.handle(companyId), "message_status", messageRef)
    if status is None:
        raise ApiError(404, f"no message {messageRef} for session {companyId} (unknown, or older than the "
                            "statuses kept)")
    return ok({"companyId": companyId, **status})
