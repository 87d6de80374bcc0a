"""The command side of NeonizeConnection: send, pair_phone and logout as requests over its
Link, refused at once (an already failed future) when the session cannot take them.

A mixin, because every refusal reads the connection's own state under its own lock; the
host provides `_lock`, `_link`, `_translator` and the flags `_closed`, `_opened`,
`_child`, `_exited`, `_final` (see connection.py). Each reply's error code, never its
text, decides whether the SendError is retryable, unconfirmed or refused (link.py).

A pairing code lives only as long as the QR socket: whatsmeow closes it when the codes
run out, QR_WINDOW (160 s) after the first one (pair-code.go), and PairPhone does not
extend that. So the code comes back as a PairingCode whose `expires_in` is the time left
of that window; a caller that finds it too short opens a new connection (a fresh window)
and asks again on its first QR.
"""
from __future__ import annotations

from concurrent.futures import Future

from ...connection import LogoutResult, PairingCode
from ...payload import Payload
from . import wire
from .link import failed

NOT_TOLD = ("WhatsApp was not told (the session is not connected): the phone keeps listing "
            "this device until it is removed there")


class Commands:
    """send, pair_phone and logout of a NeonizeConnection."""

    def send(self, jid: str, payload: Payload) -> Future:
        """Resolves to the WhatsApp message id (str) or fails with SendError."""
        problem = self._not_connected()
        if problem:
            return failed(wire.NOT_CONNECTED, problem)
        return self._link.request(wire.SEND, {"jid": jid, "payload": payload.as_record()},
                                  lambda result: str(result["message_id"]))

    def pair_phone(self, phone: str) -> Future:
        """Resolves to an 8-character pairing code; needs a QR session in progress."""
        digits = "".join(ch for ch in str(phone) if ch.isdigit())
        if not 7 <= len(digits) <= 15:
            return failed(wire.REJECTED, f"invalid phone number {phone!r}")
        with self._lock:
            problem, code = self._unavailable(), wire.NOT_CONNECTED
            if problem is None and self._translator.connected:
                problem, code = "already linked: no pairing code needed", wire.REJECTED
            elif problem is None and self._translator.qr_count == 0:
                problem = "not connected: no QR session in progress yet"
        if problem:
            return failed(code, problem)
        return self._link.request(wire.PAIR_PHONE, {"phone": digits}, self._pairing_code)

    def _pairing_code(self, result: dict) -> PairingCode:
        with self._lock:
            left = self._translator.qr_window_left()
        return PairingCode(str(result["code"]), expires_in=left)

    def logout(self) -> Future:
        """Unlinks this device on WhatsApp's side (no LoggedOut event follows). Resolves to a
        LogoutResult: told_whatsapp False when WhatsApp never heard of it (not connected,
        or its logout request failed; whatsmeow then keeps the credentials)."""
        problem = self._not_connected()
        if problem:
            done: Future = Future()
            done.set_result(LogoutResult(told_whatsapp=False, reason=f"{NOT_TOLD} ({problem})"))
            return done
        asked = self._link.request(wire.LOGOUT, {}, self._logged_out_by_us)
        result: Future = Future()

        def settle(f: Future) -> None:
            error = f.exception()
            result.set_result(f.result() if error is None else LogoutResult(
                told_whatsapp=False, reason=f"WhatsApp did not confirm the logout: {error}"))

        asked.add_done_callback(settle)
        return result

    def _logged_out_by_us(self, result: dict) -> LogoutResult:
        told = bool(result.get("told", True))
        if told:
            # whatsmeow disconnects and deletes the store, and sends no event about it.
            with self._lock:
                self._translator.connected = False
            return LogoutResult(told_whatsapp=True, reason=str(result.get("error") or ""))
        return LogoutResult(told_whatsapp=False,
                            reason=f"WhatsApp was not told: {result.get('error') or 'logout request failed'}")

    def _not_connected(self) -> str | None:
        """Why a command that needs a live session cannot run now, or None."""
        with self._lock:
            problem = self._unavailable()
            return problem if problem is not None or self._translator.connected else "not connected"

    def _unavailable(self) -> str | None:
        if self._closed:
            return "connection closed"
        if not self._opened:
            return "not connected: connection not opened"
        if self._exited or self._final:
            return "not connected: session process is not running"
        if self._child is None:
            return "not connected: session process still starting"
        return None
