"""QR codes as PNG, SVG, data URL and terminal art (segno), and the browser QR page.

Always a full QR code (`micro=False`): segno would otherwise pick a Micro QR for short
strings, which WhatsApp's scanner cannot read.
"""
from __future__ import annotations

import html
import io

import segno

DEFAULT_SCALE = 8
MAX_SCALE = 20


def _make(code: str) -> segno.QRCode:
    return segno.make(code, error="m", micro=False)


def png(code: str, scale: int = DEFAULT_SCALE) -> bytes:
    out = io.BytesIO()
    _make(code).save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def svg(code: str, scale: int = DEFAULT_SCALE) -> bytes:
    out = io.BytesIO()
    _make(code).save(out, kind="svg", scale=scale, border=4, xmldecl=True, svgns=True)
    return out.getvalue()


def data_url(code: str, scale: int = 6) -> str:
    return _make(code).png_data_uri(scale=scale, border=4)


def terminal(code: str) -> str:
    out = io.StringIO()
    _make(code).terminal(out=out, compact=True, border=2)
    return out.getvalue()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
{refresh}<title>WhatsApp link: {company}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 34rem; text-align: center; color: #222 }}
.state {{ font-size: 1.2rem; margin: 1rem 0 }}
.qr svg {{ width: 320px; height: 320px }}
.hint {{ color: #555 }} .error {{ color: #a00 }}
</style></head>
<body>
<h1>Link WhatsApp for {company}</h1>
<p class="state">Status: <b>{state}</b></p>
{body}
</body></html>
"""


def page(company_id: str, status: dict, qr_code: str | None, refresh_seconds: int = 3) -> str:
    """The QR page: the current code inline, reloading itself until the session is linked."""
    state = status.get("status", "unknown")
    connected = state == "connected"
    if qr_code:
        body = ('<div class="qr">' + _make(qr_code).svg_inline(scale=6, border=4) + "</div>"
                '<p class="hint">On the phone: WhatsApp &rarr; Settings &rarr; Linked devices &rarr; '
                "Link a device, then scan this code. It changes every few seconds; this page follows.</p>")
    elif connected:
        body = f'<p>Linked as <b>{html.escape(str(status.get("phoneNumber") or ""))}</b>. You can close this page.</p>'
    else:
        body = '<p class="hint">No QR code right now. Start the session (initialize) to get one.</p>'
    if status.get("lastError"):
        body += f'<p class="error">{html.escape(str(status["lastError"]))}</p>'
    refresh = "" if connected else f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">\n'
    return _PAGE.format(refresh=refresh, company=html.escape(company_id), state=html.escape(str(state)), body=body)
