"""The replaced system's paths that have a newer home, kept as aliases so its clients
keep working (the QR page path is in dashboard.py, beside the page)."""
from __future__ import annotations

from typing import Any

from switchboard.supervision.events import read_log
from switchboard.supervision.health import recommendations

from .auth import Principal
from .openapi import op
from .plumbing import Routes, ok
from .state import AppState

api = Routes("Compatibility")


@api.get("/webhook/whatsapp/baileys/health/<companyId>",
         doc=op("The replaced system's diagnostic endpoint: provider status, recent history, recommendations",
                "OldHealth", errors=(400, 404, 503)))
def old_health(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """`provider` is the session's diagnostics, `history` its last supervisor log records;
    `redis` is null (this gateway keeps no separate session state in Redis)."""
    diagnostics = ctx.ask(ctx.handle(companyId), "diagnostics")
    healthy, advice = recommendations(diagnostics)
    history = read_log(ctx.board.data_dir / "supervisor.log", company=companyId, limit=20)
    return ok({"companyId": companyId, "provider": diagnostics, "redis": None, "history": history,
               "recommendations": advice, "healthy": healthy})
