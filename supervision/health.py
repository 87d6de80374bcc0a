"""Health advice: what a session's diagnostics mean, in plain language.

Domain text, not HTTP: the API's `GET .../health` shows it, and so could any other front.
"""
from __future__ import annotations

from typing import Any


def recommendations(d: dict[str, Any]) -> tuple[bool, list[str]]:
    """(healthy, plain-language advice) for one session's diagnostics."""
    state = d.get("status")
    advice: list[str] = []
    alive = d.get("connectionAlive")
    healthy = state == "connected" and bool(alive)
    if state == "connected" and not alive:
        advice.append("Stale session: it says connected but its connection is gone. The next health check "
                      "reconnects it; call reconnect to do it now.")
    elif state == "qr":
        advice.append("Needs a QR scan: open the QR page or GET .../qr.png and scan it in WhatsApp > Linked "
                      "devices, or request a pairing code.")
    elif state == "starting":
        advice.append("Connecting. If it stays like this for minutes, check the network or proxy, then reconnect.")
    elif state == "stopped":
        if d.get("lastError") == "QR expired":
            advice.append("Needs a new QR: nobody scanned the last codes in time. Call initialize and scan the new "
                          "code.")
        else:
            advice.append("Stopped on request. Call start (or initialize) to connect.")
    elif state == "reconnecting":
        advice.append(f"Reconnecting after: {d.get('lastError')}. Next attempt at {d.get('nextRetryAt')} "
                      f"(attempt {d.get('reconnectAttempts')}). Nothing to do unless it keeps failing.")
    elif state == "failed":
        advice.append(f"Failed: {d.get('lastError')}. Fix the cause (network, proxy, client version), then call "
                      "reconnect.")
    elif state == "logged_out":
        advice.append("Logged out: the phone unlinked this device (or logout was called). Call initialize and "
                      "scan a new QR code.")
    elif state == "conflict":
        advice.append("Conflict: another client (WhatsApp Web, another gateway or a copy of this one) took over "
                      "this account. Close the other client, then call reconnect; this gateway never fights back "
                      "by itself.")
    elif state == "banned":
        advice.append(f"Temporarily banned by WhatsApp until {d.get('nextRetryAt')}; one attempt follows then. "
                      "Send less, and only to people who expect your messages.")
    elif state == "restarting":
        advice.append("The session actor crashed and is being restarted; see the supervisor log.")
    attempts = d.get("reconnectAttempts") or 0
    total_reconnects = sum((d.get("reconnectsByReason") or {}).values())
    if attempts >= 3 or total_reconnects >= 5:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted((d.get("reconnectsByReason") or {}).items()))
        advice.append(f"Too many reconnects ({attempts} in a row, {total_reconnects} in total; {reasons}). "
                      "Check the network and the proxy; look for another client using the same account.")
    if d.get("queued") and state != "connected":
        advice.append(f"{d['queued']} message(s) wait in the outbox; they go out in order once connected.")
    if healthy and not advice:
        advice.append("Healthy: connected and authenticated.")
    return healthy, advice
