"""The HTTP API: a thin Bottle app over the Switchboard facade.

Every route validates the shape of its input, makes one actor call with a timeout, and
renders JSON in the shapes of the system this replaces (`{"success": true, ...}` and
`{"success": false, "error": "...", "retryAfter": ms}`). There is no business logic here:
what a state allows, what a valid message is, queueing, rate limits and idempotency
live in the SessionActor. Every error, including Bottle's own 404/405 and an unexpected
exception, is answered as JSON; a traceback never reaches a client.

The routes live in one module per area (sessions, messages, qr_routes, events, keys,
docs, simulator); what they share is plumbing.ApiPlugin, installed here.
"""
from __future__ import annotations

import json
from typing import Any

import bottle

from switchboard.supervision.board import Switchboard

from . import cluster_routes, compat, dashboard, docs, events, keys as keys_routes, messages, qr_routes, sessions, webhooks
from . import simulator as simulator_routes
from . import message_status, templates
from .auth import ApiKeys
from .openapi import build_spec
from .plumbing import ApiPlugin, Route, json_error_handler, mount
from . import routing
from .routing import ForwardPlugin
from .state import AppState, HttpSettings

__all__ = ["AppState", "HttpSettings", "make_app", "routes"]

_ERROR_CODES = (400, 401, 403, 404, 405, 413, 415, 429, 500, 502, 503)


def routes(simulator: bool, cluster: bool = False) -> list[Route]:
    """Every route the app mounts; the simulator's control API only when asked for, the
    cluster's only in distributed mode."""
    tables = [docs.api, sessions.api, messages.api, qr_routes.api, events.api, keys_routes.api, compat.api,
              dashboard.api, message_status.api, templates.api, webhooks.api]
    if simulator:
        tables.append(simulator_routes.api)
    if cluster:
        tables.append(cluster_routes.api)
    return [route for table in tables for route in table]


def make_app(board: Switchboard, config: Any, keys: ApiKeys, settings: HttpSettings | None = None) -> bottle.Bottle:
    """The WSGI app; its shared state is `app.switchboard` (an AppState)."""
    state = AppState(board, config, keys, settings or HttpSettings())
    mounted = routes(state.simulator, cluster=board.cluster is not None)
    spec = build_spec(mounted)
    if board.cluster is not None:
        spec = routing.document(spec)          # forwarded routes may answer 503 too
    state.spec_bytes = json.dumps(spec, indent=1).encode()
    app = bottle.Bottle(catchall=True, autojson=True)
    app.switchboard = state
    app.default_error_handler = json_error_handler
    for code in _ERROR_CODES:
        app.error(code)(json_error_handler)
    app.install(ApiPlugin(state))
    if board.cluster is not None:
        # Inside the ApiPlugin: a request is authenticated and checked before it is forwarded.
        app.install(ForwardPlugin(board.cluster, timeout=state.ask_timeout + state.settings.send_wait + 10,
                                  stream_timeout=state.settings.sse_heartbeat * 3))
    mount(app, mounted)
    return app
