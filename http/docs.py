"""Gateway routes: liveness, this API's OpenAPI document, and the metrics."""
from __future__ import annotations

import time
from typing import Any

from bottle import response

from switchboard.actors.clock import iso

from . import metrics as metrics_mod
from .auth import Principal
from .openapi import op
from .plumbing import ApiError, Routes, ok
from .state import AppState

api = Routes("Gateway")


@api.get("/health", access="public", doc=op("Liveness of the gateway (no API key)", "Health", errors=(503,)))
def health(ctx: AppState, _principal: None) -> dict[str, Any]:
    """Alive (200), or draining for a shutdown (503)."""
    if ctx.draining.is_set():
        raise ApiError(503, "shutting down", status="draining")
    now = time.time()
    return ok({"status": "ok", "timestamp": iso(now), "uptimeSeconds": round(now - ctx.started_at, 1)})


@api.get("/openapi.json", doc=op("This document", {"description": "OpenAPI 3 document",
                                                   "content": {"application/json": {"schema": {"type": "object"}}}}))
def openapi(ctx: AppState, _principal: Principal) -> bytes:
    """The OpenAPI document of the routes this app mounts (rendered once)."""
    response.content_type = "application/json"
    return ctx.spec_bytes


@api.get("/metrics", access="admin",
         doc=op("Prometheus metrics", {"description": "Prometheus text exposition",
                                       "content": {"text/plain": {"schema": {"type": "string"}}}}))
def prometheus(ctx: AppState, _principal: Principal) -> bytes:
    """The Prometheus exposition."""
    response.content_type = metrics_mod.CONTENT_TYPE
    return metrics_mod.exposition(ctx.registry)


@api.get("/api/whatsapp/metrics", access="admin",
         doc=op("Global figures derived from the sessions' states", "Metrics"))
def json_metrics(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """The same figures as JSON, in the replaced system's shape."""
    counts = ctx.counters.snapshot()
    sent, received = ctx.totals.totals()       # never down when a session is deleted or restarted
    return ok({**ctx.board.metrics(), "messagesSent": sent, "messagesReceived": received, "rateLimited": sum(counts["rate_limited"].values()),
               "reconnectsByReason": counts["reconnects"], "eventStreams": ctx.streams.count})
