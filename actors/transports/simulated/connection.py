"""A company's link to the simulated network, in the same process, and the transport that
makes them. The service (service.py) uses the same class for its end of a socket."""
from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...connection import ConnectionEvent, EmitFn, IncomingMessage, PairingCode, Receipt, SendError
from ...payload import Payload
from ...phone import USER_SERVER, normalize_phone
from . import codes

if TYPE_CHECKING:
    from .network import SimulatedNetwork, _Device

CREDENTIALS_FILE = "simulated-device.json"
_GONE: Future = Future()                # what close() returns: nothing is left to wait for
_GONE.set_result(None)


class SimulatedConnection:
    """One connection attempt of one company to the simulated network."""

    def __init__(self, network: SimulatedNetwork, company_id: str, company_dir: Path | None, emit: EmitFn) -> None:
        self.network = network
        self.company_id = company_id
        self.company_dir = Path(company_dir) if company_dir is not None else None
        self._emit_fn = emit
        # new | opening | qr | paired | connected | interrupted | blackhole | dead | closed
        self._state = "new"
        self._device: _Device | None = None
        self._unanswered: set[Future] = set()     # sends WhatsApp has not answered yet
        self._qr = ""
        self._qr_expires = 0.0
        self._qr_started = 0.0

    def open(self) -> None:
        with self.network._lock:
            if self._state != "new":
                return
            self._state = "opening"
            self.network._opening(self)
        delay = self.network._latency(self.company_id)
        if delay > 0:
            self.network._scheduler.call_later(delay, self.network._establish, self)
        else:
            self.network._establish(self)

    def close(self) -> Future:
        """In-process, so gone at once: the returned future is already resolved."""
        with self.network._lock:
            if self._state != "closed":
                self._state = "closed"
                self._ended()
        return _GONE

    def alive(self) -> bool:
        return self._state not in ("dead", "closed")

    def send(self, jid: str, payload: Payload) -> Future:
        """Resolves to the message id once the simulated server acks (Text payloads only)."""
        return self.network._send(self, jid, payload)

    def pair_phone(self, phone: str) -> Future:
        future: Future = Future()
        with self.network._lock:
            if self._state != "qr":
                future.set_exception(SendError("pairing needs a QR session in progress", retryable=False))
                return future
            self.network._pair_phone[self.company_id] = normalize_phone(phone)
            # The code lives as long as the QR socket: whatsmeow's window runs from connect.
            left = self.network.qr_window - (self.network._clock() - self._qr_started)
        future.set_result(PairingCode(codes.pairing_code(), round(max(0.0, left), 3)))
        return future

    def logout(self) -> Future:
        """Unlinks the device when the link is up; otherwise WhatsApp is not told (the
        phone keeps listing the device) and the result says so."""
        future: Future = Future()
        future.set_result(self.network._logout(self))
        return future

    # ---- called by the network with its lock held -------------------------------

    def _emit(self, event: ConnectionEvent) -> None:
        if self._state in ("dead", "closed"):
            return
        if isinstance(event, IncomingMessage) and not event.phone and lid_sender(event):
            # What the neonize child does for a LID sender with no phone alternate: ask
            # the LID store (whatsmeow's get_pn_from_lid).
            event = dataclasses.replace(event, phone=self.network.phone_for_lid(lid_sender(event)) or "")
        elif isinstance(event, Receipt) and event.chat.endswith("@" + codes.LID_SERVER):
            event = dataclasses.replace(event, chat=pn_chat(event.chat, self.network.phone_for_lid(event.chat)))
        self._emit_fn(event)

    def _push(self, message: IncomingMessage) -> None:
        """A message for this link's device; in-process, emitting it is delivering it."""
        self._emit(message)
        self.network._delivered(self, message.id)

    def _die(self, event: ConnectionEvent | None) -> None:
        """Terminal: emit the last event, then nothing more."""
        if self._state in ("dead", "closed"):
            return
        if event is not None:
            self._emit(event)
        self._state = "dead"
        self._ended()

    def _ended(self) -> None:
        """The link is over: not live any more; sends still waiting for an answer may have
        reached WhatsApp, so they fail as unconfirmed, never as retryable."""
        self.network._unmark_live(self)
        unanswered, self._unanswered = self._unanswered, set()
        for future in unanswered:
            if not future.done():
                future.set_exception(SendError("the link closed before WhatsApp answered the send",
                                               retryable=False, unconfirmed=True))

    def _read_credentials(self) -> dict[str, Any] | None:
        return read_credentials(self.company_dir) if self.company_dir is not None else None

    def _write_credentials(self, device: _Device) -> None:
        if self.company_dir is not None:
            write_credentials(self.company_dir, {"device": device.id, "phone": device.phone})


def pn_chat(lid_chat: str, phone: str | None) -> str:
    """A receipt's LID chat as the phone's JID (kept as it is when the LID store has no phone)."""
    return f"{phone}@{USER_SERVER}" if phone else lid_chat


def read_credentials(company_dir: Path) -> dict[str, Any] | None:
    """The device's credentials from the company's directory, None when it has none."""
    try:
        data = json.loads((company_dir / CREDENTIALS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_credentials(company_dir: Path, credentials: dict[str, Any]) -> None:
    """The device's credentials in the company's directory (0600), as neonize keeps its store."""
    company_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = company_dir / CREDENTIALS_FILE
    tmp = path.with_name(CREDENTIALS_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(credentials, f)
    os.replace(tmp, path)


class SimulatedTransport:
    """Makes SimulatedConnections on one shared SimulatedNetwork."""

    name = "simulated"
    pins_message_ids = True      # the simulated WhatsApp sends under the payload's id

    def __init__(self, network: SimulatedNetwork | None = None) -> None:
        if network is None:
            from .network import SimulatedNetwork
            network = SimulatedNetwork()
        self.network = network

    def connect(self, company_id: str, company_dir: Path, emit: EmitFn) -> SimulatedConnection:
        return SimulatedConnection(self.network, company_id, company_dir, emit)

    def forget(self, company_id: str, company_dir: Path) -> None:
        """Delete the company's simulated device credentials."""
        (Path(company_dir) / CREDENTIALS_FILE).unlink(missing_ok=True)

    def close(self) -> None:
        self.network.close()


def lid_sender(event: IncomingMessage) -> str:
    """The sender's LID JID when it came as one (a 1:1 chat's peer or a group participant), else ""."""
    sender = event.participant if event.is_group else event.chat
    return sender if sender.endswith("@" + codes.LID_SERVER) else ""
