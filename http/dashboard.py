"""The web dashboard: its files (plain HTML, CSS and JavaScript in http/web/, no build step,
nothing from a CDN), the cookie sign-in, and the figures only the dashboard asks for.

Sign-in trades a key once for a signed cookie (auth.WebSessions): HttpOnly (no script
reads it), SameSite=Strict (no other site's page sends it), Secure on https, Path=/. The
dashboard then uses the ordinary API with that cookie, adding `X-CSRF-Token` to every
state-changing request; EventSource, which cannot send headers, is authenticated by the
cookie alone (a GET changes nothing).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bottle import request, response

from switchboard.actors.phone import validate_company_id

from .auth import COOKIE_NAME, Principal, cookie_value, key_digest
from .openapi import COMPANY_ID, body, op, query
from .plumbing import ApiError, Routes, authenticate, check_visible, json_body, ok
from .qr_routes import page_headers, page_token, render_page
from .state import AppState

api = Routes("Dashboard")
WEB = Path(__file__).resolve().parent / "web"
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# Everything the dashboard loads comes from here; no inline script, no other origin.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_HTML = {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}


def _file(name: str) -> bytes:
    return (WEB / name).read_bytes()


def _static(name: str) -> Any:
    data = _file(name)          # read once: the files are part of the package
    content_type = _TYPES[Path(name).suffix]

    def serve(_ctx: AppState, _principal: None) -> bytes:
        response.content_type = content_type
        response.set_header("Cache-Control", "no-cache")
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("Content-Security-Policy", _CSP)
        return data
    serve.__name__ = "static_" + name.replace("-", "_").replace(".", "_")
    serve.__doc__ = f"The dashboard's {name}."
    return serve


api.get("/", access="public", doc=op("The web dashboard (sign in with an API key)", _HTML))(_static("index.html"))
for _name in ("dashboard.css", "dashboard.js"):
    _kind = _TYPES[Path(_name).suffix].split(";")[0]
    api.get(f"/{_name}", access="public",
            doc=op(f"The dashboard's {_name}", {"description": _name, "content": {_kind: {"schema": {"type": "string"}}}}))(
        _static(_name))


def _set_cookie(value: str, max_age: int) -> None:
    secure = request.environ.get("wsgi.url_scheme") == "https"
    # bottle's set_cookie knows httponly, samesite and secure; the value is already signed by us
    response.set_cookie(COOKIE_NAME, value, path="/", httponly=True, samesite="Strict", secure=secure,
                        max_age=max_age)


@api.post("/api/dashboard/session", access="public",
          doc=op("Sign in to the dashboard: trade a key for a session cookie (HttpOnly, SameSite=Strict)",
                 "WebSession", errors=(401,),
                 body=body({"key": {"type": "string", "minLength": 1, "maxLength": 500}}, ["key"])))
def sign_in(ctx: AppState, _principal: None) -> dict[str, Any]:
    """Check the key; set the cookie; answer who this is and the CSRF token."""
    address = request.environ.get("REMOTE_ADDR") or "-"
    ctx.shares.check_sign_in(address)
    key = json_body().get("key")
    principal = ctx.keys.authenticate(key) if isinstance(key, str) and 0 < len(key) <= 500 else None
    if principal is None:
        ctx.shares.failed_sign_in(address)
        raise ApiError(401, "invalid API key")
    cookie = ctx.web.issue(principal, key_digest(key))
    _set_cookie(cookie, int(ctx.web.lifetime))
    response.set_header("Cache-Control", "no-store")
    return ok(_who(principal, ctx.web.csrf_token(cookie)))


@api.get("/api/dashboard/session",
         doc=op("Who is signed in, and the CSRF token for state-changing requests", "WebSession"))
def whoami(ctx: AppState, principal: Principal) -> dict[str, Any]:
    """The principal; the CSRF token when signed in with the cookie."""
    cookie = cookie_value(request.environ)
    response.set_header("Cache-Control", "no-store")
    return ok(_who(principal, ctx.web.csrf_token(cookie) if cookie else None))


@api.delete("/api/dashboard/session", access="public", doc=op("Sign out (the cookie is cleared)", "Any"))
def sign_out(_ctx: AppState, _principal: None) -> dict[str, Any]:
    """Clear the cookie (it is signed and short-lived; nothing is kept on the server)."""
    _set_cookie("", 0)
    return ok({"signedOut": True})


def _who(principal: Principal, csrf: str | None) -> dict[str, Any]:
    return {"admin": principal.admin, "companyId": principal.company_id, "keyId": principal.key_id,
            "csrfToken": csrf}


@api.get("/api/dashboard/activity",
         doc=op("Sends and receives per minute over the last hour, and the totals (a tenant key: its own)",
                "Activity", errors=(400, 404), params=[query("company", COMPANY_ID, "only this company")]))
def activity(ctx: AppState, principal: Principal) -> dict[str, Any]:
    """The chart's figures: this process's last hour, per minute; totals that never go down."""
    company = request.query.get("company")
    if company is not None:
        validate_company_id(company)
        check_visible(principal, company)
    elif not principal.admin:
        company = principal.company_id
    sent, received = ctx.totals.totals(company)
    return ok({"companyId": company, "minutes": ctx.totals.last_hour(company), "messagesSent": sent,
               "messagesReceived": received, "now": round(time.time(), 3)})


@api.get("/baileys-qr-web.html", access="public", html=True,
         doc=op("The replaced system's QR page path: the QR page of `companyId` (with the token of a "
                "pageUrl, an API key or the dashboard cookie), or a pointer to the dashboard",
                _HTML, errors=(400, 401, 404, 503), html_errors=True,
                params=[query("companyId", COMPANY_ID, "the company (a tenant's own when signed in)"),
                        query("token", {"type": "string", "maxLength": 200}, "the signed token from pageUrl")]))
def old_qr_page(ctx: AppState, _principal: None) -> str:
    """The old single-page QR path, kept as an alias of /qr/<companyId>."""
    company = request.query.get("companyId")
    token = page_token()
    if company is not None:
        validate_company_id(company)
        if ctx.page_tokens.check(company, token):
            return render_page(ctx, company)
    principal = authenticate(ctx.keys, "any", ctx.web)
    company = company or principal.company_id
    if company is None:            # the admin, without a company: the dashboard lists them all
        response.content_type = "text/html; charset=utf-8"
        page_headers()
        return ('<!doctype html><meta charset="utf-8"><title>Switchboard</title>'
                '<p>Open the <a href="/">dashboard</a> and choose a company to show its QR code.</p>')
    check_visible(principal, company)
    return render_page(ctx, company)
