"""Cluster routes (admin only), mounted only in distributed mode: this instance's view of
the members, and draining a member before maintenance (its companies move to the others)."""
from __future__ import annotations

import re
from typing import Any

from .auth import Principal
from .openapi import op
from .plumbing import ApiError, Routes, json_body, ok
from .state import AppState

api = Routes("Cluster")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_ANY = {"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}}


def _cluster(ctx: AppState) -> Any:
    cluster = ctx.board.cluster
    if cluster is None:
        raise ApiError(404, "this gateway runs without Redis: there is no cluster")
    return cluster


@api.get("/api/cluster", access="admin", doc=op("This instance, the live members and what each holds", _ANY))
def show(ctx: AppState, _principal: Principal) -> dict[str, Any]:
    """The cluster as this instance sees it."""
    return ok(_cluster(ctx).describe())


def _member(ctx: AppState, instance_id: str) -> Any:
    cluster = _cluster(ctx)
    if not _INSTANCE_ID.fullmatch(instance_id) or instance_id not in cluster.members:
        raise ApiError(404, f"instance {instance_id} is not a live member")
    return cluster


@api.post("/api/cluster/members/<instanceId>/drain", access="admin",
          doc=op("Drain a member: its companies move to the others (at most a few a second)", _ANY,
                 errors=(404,), body_required=False))
def drain(ctx: AppState, _principal: Principal, instanceId: str) -> dict[str, Any]:
    """Mark the member draining; placement assigns it nothing from now on."""
    json_body(required=False)
    _member(ctx, instanceId).drain(instanceId, True)
    return ok({"instance": instanceId, "draining": True})


@api.delete("/api/cluster/members/<instanceId>/drain", access="admin",
            doc=op("Stop draining a member: it gets its share of companies again", _ANY, errors=(404,)))
def undrain(ctx: AppState, _principal: Principal, instanceId: str) -> dict[str, Any]:
    """Clear the member's drain flag."""
    _member(ctx, instanceId).drain(instanceId, False)
    return ok({"instance": instanceId, "draining": False})
