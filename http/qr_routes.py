"""Linking routes: the QR code as JSON, PNG, SVG and a browser page, and pairing codes."""
from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

from bottle import request, response

from switchboard.actors.connection import SendError
from switchboard.actors.phone import normalize_phone

from . import qr as qr_mod
from .auth import Principal
from .openapi import PHONE, body, op, query
from .plumbing import ApiError, Routes, authenticate, check_visible, int_query, json_body, ok, string
from .state import AppState

api = Routes("Linking")
_QR_ERRORS = (400, 404, 409, 503)
_SCALE = query("scale", {"type": "integer", "minimum": 1, "maximum": qr_mod.MAX_SCALE},
               f"pixels per module (default {qr_mod.DEFAULT_SCALE})")
_PAGE_CSP = (f"default-src 'none'; script-src {qr_mod.SCRIPT_CSP}; connect-src 'self'; style-src 'unsafe-inline'; "
             "img-src data:; frame-ancestors 'none'")


def qr_payload(ctx: AppState, company_id: str, code: dict[str, Any] | None) -> dict[str, Any]:
    """The QR fields of an answer: raw code, PNG data URL, expiry and a signed page link."""
    if not code:
        return {"qr": None, "qrDataUrl": None, "qrExpiresAt": None}
    url = qr_mod.data_url(code["code"])
    # qrCode: the replaced system's name for the data URL (old clients test `data.qrCode`)
    return {"qr": code["code"], "qrDataUrl": url, "qrCode": url, "qrExpiresAt": code["expiresAt"],
            "pageUrl": f"/qr/{company_id}?token={ctx.page_tokens.issue(company_id)}"}


def current_qr(ctx: AppState, company_id: str) -> dict[str, Any]:
    """The QR code shown now, or 409 saying why there is none."""
    session = ctx.handle(company_id)
    code = ctx.ask(session, "qr")
    if code is None:
        status = ctx.ask(session, "status")
        hint = {"connected": "the session is already linked and connected",
                "starting": "the session is connecting; try again in a moment"}.get(
            status["status"], "start the session (initialize) to get a QR code")
        raise ApiError(409, f"no QR code available: {hint}", status=status["status"])
    return code


@api.get("/api/whatsapp/sessions/<companyId>/qr",
         doc=op("The current QR code: raw string, PNG data URL, and a page link", "Qr", errors=_QR_ERRORS))
def qr_json(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """The current QR code with its data URL and page link."""
    return ok({"companyId": companyId, **qr_payload(ctx, companyId, current_qr(ctx, companyId))})


def _image(render: Callable[[str, int], bytes], content_type: str) -> Callable:
    def image(ctx: AppState, _principal: Principal, companyId: str) -> bytes:
        scale = int_query("scale", qr_mod.DEFAULT_SCALE, 1, qr_mod.MAX_SCALE)
        code = current_qr(ctx, companyId)
        response.content_type = content_type
        response.set_header("Cache-Control", "no-store")
        return render(code["code"], scale)
    image.__name__ = f"qr_{render.__name__}"
    image.__doc__ = f"The current QR code as {content_type}."
    return image


for _renderer, _type, _schema in ((qr_mod.png, "image/png", {"type": "string", "format": "binary"}),
                                (qr_mod.svg, "image/svg+xml", {"type": "string"})):
    _kind = _renderer.__name__.upper()
    api.get(f"/api/whatsapp/sessions/<companyId>/qr.{_renderer.__name__}",
            doc=op(f"The current QR code as {_kind}",
                   {"description": f"{_kind} image", "content": {_type: {"schema": _schema}}},
                   errors=_QR_ERRORS, params=[_SCALE]))(_image(_renderer, _type))


@api.get("/qr/<companyId>", access="public", html=True,
         doc=op("A browser page with the QR code that follows its rotation",
                {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
                errors=(400, 401, 404, 503), html_errors=True,     # 401: neither a valid token nor a valid key
                description="Takes an API key, the dashboard's cookie, or the short-lived token of a `pageUrl`. "
                            "Errors are HTML pages for a person too.",
                params=[query("token", {"type": "string", "maxLength": 200},
                              "the signed token from pageUrl (instead of an API key)")]))
def qr_page(ctx: AppState, _principal: None, companyId: str) -> str:
    """The QR page. A browser cannot send headers: besides the API key, this one page
    takes the signed, expiring `?token=` of the QR answers' `pageUrl` (or the dashboard's cookie)."""
    if not ctx.page_tokens.check(companyId, page_token()):
        check_visible(authenticate(ctx.keys, "any", ctx.web), companyId)
    return render_page(ctx, companyId)


def page_token() -> str | None:
    """The `?token=` of a page link; one longer than any we issue is malformed (400)."""
    token = request.query.get("token")
    if token is not None and len(token) > 200:
        raise ApiError(400, "'token' is longer than 200 characters")
    return token


def render_page(ctx: AppState, company_id: str) -> str:
    """The QR page of a company the caller may see."""
    session = ctx.handle(company_id)
    status = ctx.ask(session, "status")
    code = ctx.ask(session, "qr") if status["status"] == "qr" else None
    response.content_type = "text/html; charset=utf-8"
    page_headers()
    return qr_mod.page(company_id, status, code["code"] if code else None)


def page_headers() -> None:
    """The QR page's headers."""
    response.set_header("Cache-Control", "no-store")
    response.set_header("Referrer-Policy", "no-referrer")
    response.set_header("Content-Security-Policy", _PAGE_CSP)


@api.post("/api/whatsapp/sessions/<companyId>/pairing-code",
          doc=op("Get an 8-character pairing code for a phone number (instead of scanning)", "PairingCode",
                 errors=(404, 409, 503), body=body({"phone": PHONE}, ["phone"])))
def pairing_code(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    """A pairing code for the phone number in the body."""
    phone = normalize_phone(string(json_body(), "phone"))      # the answer echoes the normalised number
    future = ctx.ask(ctx.handle(companyId), "pair_phone", phone)
    try:
        code = future.result(timeout=ctx.ask_timeout)
    except concurrent.futures.TimeoutError:
        raise ApiError(503, f"no pairing code within {ctx.ask_timeout:g} s", {"Retry-After": "1"},
                       retryAfter=1000) from None
    except SendError as exc:
        if exc.retryable:
            raise ApiError(503, f"could not get a pairing code: {exc}", {"Retry-After": "2"},
                           retryAfter=2000) from None
        raise ApiError(409, f"could not get a pairing code: {exc}") from None
    # A PairingCodeAnswer (the code and when its QR session ends); a plain string from older actors.
    answer = code.as_dict() if hasattr(code, "as_dict") else {"code": str(code)}
    return ok({"companyId": companyId, "phone": phone, **answer,
               "hint": "On the phone: WhatsApp > Linked devices > Link with phone number, enter this code "
                       "before it expires"})
