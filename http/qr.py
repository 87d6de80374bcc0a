"""QR codes as PNG, SVG, data URL and terminal art (segno), and the browser QR page.

Always a full QR code (`micro=False`): segno would otherwise pick a Micro QR for short
strings, which WhatsApp's scanner cannot read.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
from pathlib import Path

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


# The page's script is inline (one response holds the whole page, so a gateway that goes
# away right after it cannot leave the page without its script); the CSP allows exactly it.
SCRIPT = (Path(__file__).resolve().parent / "web" / "qr-page.js").read_text()
SCRIPT_CSP = "'sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode() + "'"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<noscript>{refresh}</noscript>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 34rem; text-align: center; color: #222;
        padding: 0 1rem }}
.state {{ font-size: 1.2rem; margin: 1rem 0 }}
.qr svg {{ width: 320px; max-width: 90vw; height: auto }}
.hint {{ color: #555 }} .error {{ color: #a00 }}
#offline {{ display: none; background: #fff4d6; border: 1px solid #e0c060; padding: .6rem; border-radius: 6px }}
body.offline #offline {{ display: block }} body.offline .qr {{ opacity: .25 }}
</style></head>
<body data-refresh="{refresh_seconds}" data-done="{done}">
<p id="offline">The service is not answering right now (it may be restarting). This page keeps trying
and continues by itself; there is no need to reload it.</p>
<div id="content">
<h1>{heading}</h1>
{state_line}
{body}
</div>
<script>{script}</script>
</body></html>
"""


def page(company_id: str, status: dict, qr_code: str | None, refresh_seconds: int = 3) -> str:
    """The QR page for the person linking the phone: the current code inline; a small
    inline script (web/qr-page.js) fetches this page again every few seconds and swaps the content,
    so the code follows its rotation, and it keeps trying through a gateway restart."""
    state = str(status.get("status", "unknown"))
    connected = state == "connected"
    words = {"qr": "waiting for the scan", "connected": "linked", "starting": "connecting",
             "reconnecting": "reconnecting", "stopped": "stopped", "logged_out": "unlinked on the phone",
             "failed": "needs attention", "conflict": "in use elsewhere", "banned": "temporarily blocked"}
    if qr_code:
        body = ('<div class="qr">' + _make(qr_code).svg_inline(scale=6, border=4) + "</div>"
                '<p class="hint">On the phone: WhatsApp &rarr; Settings &rarr; Linked devices &rarr; '
                "Link a device, then scan this code. It changes every few seconds; this page follows.</p>")
    elif connected:
        body = f'<p>Linked as <b>{html.escape(str(status.get("phoneNumber") or ""))}</b>. You can close this page.</p>'
    elif state in ("starting", "reconnecting"):
        body = '<p class="hint">Connecting to WhatsApp; the code appears here in a moment.</p>'
    else:
        body = ('<p class="hint">There is no code to scan right now. Ask whoever sent you this link to start '
                "the link again; this page shows the new code as soon as there is one.</p>")
    if status.get("lastError") and not connected:
        body += f'<p class="error">{html.escape(str(status["lastError"]))}</p>'
    refresh = "" if connected else f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
    return _PAGE.format(script=SCRIPT, title=f"WhatsApp link: {html.escape(company_id)}", refresh=refresh,
                        refresh_seconds=int(refresh_seconds), done="1" if connected else "0",
                        heading=f"Link WhatsApp for {html.escape(company_id)}",
                        state_line=f'<p class="state">Status: <b>{html.escape(words.get(state, state))}</b></p>',
                        body=body)


_ERROR_WORDS = {
    400: ("This link is not valid", "The address of this page is not complete. Ask for a new link."),
    401: ("This link has expired", "Links to this page are valid for 15 minutes. Ask whoever sent it for a new one."),
    403: ("This link is not valid", "Ask whoever sent it for a new one."),
    404: ("Nothing to link here", "This company is not set up (any more). Ask whoever sent the link."),
    429: ("Busy", "Too many requests right now; this page tries again by itself."),
    503: ("One moment", "The service is busy or restarting; this page tries again by itself."),
}


def error_page(status: int, message: str) -> str:
    """An error of the QR page, for a person (never JSON); it keeps retrying when the
    error may pass (429, 5xx)."""
    heading, advice = _ERROR_WORDS.get(status, ("Something went wrong", "Please try again in a moment."))
    retry = status in (429,) or status >= 500
    return _PAGE.format(script=SCRIPT, title=html.escape(heading), refresh='<meta http-equiv="refresh" content="5">' if retry else "",
                        refresh_seconds=5, done="0" if retry else "1", heading=html.escape(heading),
                        state_line="", body=f'<p class="hint">{html.escape(advice)}</p>'
                                            f'<p class="error" hidden>{html.escape(message)}</p>')
