"""A stand-in for WhatsApp's servers, with the same observable behaviour and fault injection.

These machines cannot reach WhatsApp, so tests, benchmarks, chaos runs and the offline
demo link companies to a `SimulatedNetwork` instead. What it copies from WhatsApp:
QR codes that rotate and run out, a phone that scans them, credentials kept in the
company's directory (so a restart reconnects without a new QR), delivery between
accounts, offline messages delivered on the next connect, and one live connection per
linked device: a second one replaces the first, which is told `Replaced`.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import secrets
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..connection import (Cause, Connected, ConnectionEvent, Disconnected, EmitFn, IncomingMessage,
                          LoggedOut, Paired, QrCode, QrExhausted, Receipt, Replaced, SendError,
                          TemporaryBan)
from ..payload import Payload, Text
from ..phone import InvalidInput, USER_SERVER, jid_to_phone, normalize_phone
from ..scheduler import Scheduler

CREDENTIALS_FILE = "simulated-device.json"
FAULTS = ("drop", "refuse", "latency", "logout", "ban", "replace")


@dataclasses.dataclass
class _Device:
    id: str
    company_id: str
    phone: str
    removed: bool = False
    live: SimulatedConnection | None = None
    foreign_live: bool = False           # an outside client holds the credentials ("replace")
    offline: list[IncomingMessage] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _CompanyFaults:
    refuse_until: float = 0.0
    ban_until: float = 0.0
    latency: float = 0.0


class SimulatedNetwork:
    """Thread-safe. Every method may be called from any thread."""

    def __init__(self, *, qr_first: float = 60.0, qr_next: float = 20.0, qr_count: int = 6,
                 connect_latency: float = 0.0, send_latency: float = 0.0,
                 scheduler: Scheduler | None = None, clock=time.monotonic) -> None:
        self.qr_first, self.qr_next, self.qr_count = qr_first, qr_next, qr_count
        self.connect_latency, self.send_latency = connect_latency, send_latency
        self._own_scheduler = scheduler is None
        self._scheduler = scheduler or Scheduler("simulated-network")
        self._clock = clock
        self._lock = threading.RLock()
        self._devices: dict[str, _Device] = {}
        self._by_phone: dict[str, list[_Device]] = {}
        self._company_device: dict[str, str] = {}
        self._pending_qr: dict[str, SimulatedConnection] = {}
        self._pair_phone: dict[str, str] = {}
        self._live: dict[str, set[SimulatedConnection]] = {}
        self._max_seen: dict[str, int] = {}
        self._received: dict[str, list[dict[str, Any]]] = {}
        self._faults: dict[str, _CompanyFaults] = {}
        self._ids = itertools.count(1)

    # ---- the phone's side and the control API -------------------------------------

    def scan(self, company_id: str, phone: str | None = None) -> dict[str, Any]:
        """The phone `phone` scans the QR code the company's session is showing."""
        with self._lock:
            conn = self._pending_qr.get(company_id)
            if conn is None or not conn.alive():
                raise LookupError(f"company {company_id!r} is not showing a QR code")
            phone = normalize_phone(phone) if phone else self._pair_phone.get(company_id)
            if not phone:
                raise InvalidInput("phone is required")
            old = self._devices.get(self._company_device.get(company_id, ""))
            if old is not None:
                old.removed = True
            device = _Device(id=secrets.token_hex(8), company_id=company_id, phone=phone)
            self._devices[device.id] = device
            self._by_phone.setdefault(phone, []).append(device)
            self._company_device[company_id] = device.id
            del self._pending_qr[company_id]
            self._pair_phone.pop(company_id, None)
            conn._write_credentials(device)
            device.live, conn._device = conn, device
            conn._state = "connected"
            conn._emit(Paired(phone))
            conn._emit(Connected(phone))
            return {"companyId": company_id, "phone": phone, "device": device.id}

    def fault(self, company_id: str, fault: str, seconds: float = 30.0) -> dict[str, Any]:
        """Inject a fault: drop | refuse | latency | logout | ban | replace."""
        if fault not in FAULTS:
            raise InvalidInput(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 86400:
            raise InvalidInput("seconds must be a number from 0 to 86400")
        with self._lock:
            faults = self._faults.setdefault(company_id, _CompanyFaults())
            device = self._devices.get(self._company_device.get(company_id, ""))
            live = self._live_connection(company_id)
            if fault == "latency":
                faults.latency = float(seconds)
            elif fault == "drop":
                if live:
                    live._die(Disconnected("connection dropped (simulated)", Cause.DROPPED))
            elif fault == "refuse":
                # An outage: the link drops now and connects are refused until it ends.
                faults.refuse_until = self._clock() + seconds
                if live:
                    live._die(Disconnected("connection lost: network unreachable (simulated)", Cause.UNREACHABLE))
            elif fault == "ban":
                faults.ban_until = self._clock() + seconds
                if live:
                    live._die(TemporaryBan(float(seconds)))
            elif device is None:
                raise LookupError(f"company {company_id!r} has no linked device")
            elif fault == "logout":
                device.removed = True
                if device.live:
                    device.live._die(LoggedOut("device removed from the phone (simulated)"))
            elif fault == "replace":
                if device.live:
                    device.live._die(Replaced())
                device.foreign_live = True
            return {"companyId": company_id, "fault": fault, "seconds": seconds}

    def deliver_inbound(self, company_id: str, sender: str, text: str, message_id: str | None = None,
                        push_name: str = "") -> str:
        """Someone (`sender`) writes to the company's WhatsApp account."""
        sender = normalize_phone(sender)
        if not isinstance(text, str):
            raise InvalidInput("text must be a string")
        with self._lock:
            device = self._devices.get(self._company_device.get(company_id, ""))
            if device is None or device.removed:
                raise LookupError(f"company {company_id!r} has no linked device")
            message = IncomingMessage(id=message_id or self._message_id(), chat=f"{sender}@{USER_SERVER}",
                                      phone=sender, text=text, timestamp=time.time(), push_name=push_name)
            self._deliver(device, message)
            return message.id

    def messages(self, phone: str) -> list[dict[str, Any]]:
        """What `phone` received, in order."""
        with self._lock:
            return list(self._received.get(normalize_phone(phone), []))

    def connections(self) -> dict[str, Any]:
        """Live connections per company (and the most ever seen at once) and per account."""
        with self._lock:
            companies = {cid: {"live": len(self._live.get(cid, ())), "maxSeen": self._max_seen.get(cid, 0),
                               "phone": (self._devices.get(self._company_device.get(cid, "")) or _NO_DEVICE).phone}
                         for cid in set(self._live) | set(self._max_seen)}
            accounts: dict[str, dict[str, int]] = {}
            for device in self._devices.values():
                if device.removed:
                    continue
                acc = accounts.setdefault(device.phone, {"live": 0, "devices": 0})
                acc["devices"] += 1
                acc["live"] += int(device.live is not None) + int(device.foreign_live)
            return {"companies": companies, "accounts": accounts}

    def live_count(self, company_id: str) -> int:
        with self._lock:
            return len(self._live.get(company_id, ()))

    def max_seen(self, company_id: str) -> int:
        with self._lock:
            return self._max_seen.get(company_id, 0)

    def close(self) -> None:
        if self._own_scheduler:
            self._scheduler.stop()

    # ---- used by SimulatedConnection ----------------------------------------------

    def _establish(self, conn: SimulatedConnection) -> None:
        with self._lock:
            if conn._state != "opening":
                return
            cid = conn.company_id
            faults = self._faults.get(cid, _NO_FAULTS)
            now = self._clock()
            if faults.refuse_until > now:
                conn._die(Disconnected("connection refused: network unreachable (simulated)", Cause.UNREACHABLE))
                return
            if faults.ban_until > now:
                conn._die(TemporaryBan(round(faults.ban_until - now, 3)))
                return
            credentials = conn._read_credentials()
            if credentials is None:
                self._mark_live(conn)
                stale = self._pending_qr.get(cid)
                if stale is not None and stale is not conn:
                    stale._die(QrExhausted())
                self._pending_qr[cid] = conn
                conn._state = "qr"
                self._show_qr(conn, 0)
                return
            device = self._devices.get(credentials.get("device", ""))
            if device is None or device.removed:
                conn._die(LoggedOut("device was removed (simulated)"))
                return
            self._company_device[cid] = device.id
            self._mark_live(conn)
            if device.live is not None and device.live is not conn:
                device.live._die(Replaced())
            device.foreign_live = False
            device.live, conn._device = conn, device
            conn._state = "connected"
            conn._emit(Connected(device.phone))
            offline, device.offline = device.offline, []
            for message in offline:
                conn._emit(message)

    def _show_qr(self, conn: SimulatedConnection, n: int) -> None:
        with self._lock:
            if conn._state != "qr" or self._pending_qr.get(conn.company_id) is not conn:
                return
            if n >= self.qr_count:
                del self._pending_qr[conn.company_id]
                conn._die(QrExhausted())
                return
            lifetime = self.qr_first if n == 0 else self.qr_next
            conn._emit(QrCode(f"2@{secrets.token_urlsafe(24)},{conn.company_id},{n}", lifetime))
            self._scheduler.call_later(lifetime, self._show_qr, conn, n + 1)

    def _mark_live(self, conn: SimulatedConnection) -> None:
        live = self._live.setdefault(conn.company_id, set())
        live.add(conn)
        self._max_seen[conn.company_id] = max(self._max_seen.get(conn.company_id, 0), len(live))

    def _unmark_live(self, conn: SimulatedConnection) -> None:
        self._live.get(conn.company_id, set()).discard(conn)
        if self._pending_qr.get(conn.company_id) is conn:
            del self._pending_qr[conn.company_id]
        if conn._device is not None and conn._device.live is conn:
            conn._device.live = None

    def _live_connection(self, company_id: str) -> SimulatedConnection | None:
        return next(iter(self._live.get(company_id, ())), None)

    def _send(self, conn: SimulatedConnection, jid: str, payload: Payload) -> Future:
        future: Future = Future()
        if not isinstance(payload, Text):
            future.set_exception(SendError(f"the simulator sends text only, not {payload.kind}",
                                           retryable=False))
            return future
        text = payload.text
        with self._lock:
            device = conn._device
            if conn._state != "connected" or device is None or device.live is not conn:
                future.set_exception(SendError("not connected", retryable=True))
                return future
            to = jid_to_phone(jid)
            message_id = self._message_id()
            self._received.setdefault(to, []).append(
                {"id": message_id, "from": device.phone, "text": text, "timestamp": time.time()})
            delivered = False
            for target in self._by_phone.get(to, ()):
                if not target.removed:
                    self._deliver(target, IncomingMessage(id=message_id, chat=f"{device.phone}@{USER_SERVER}",
                                                          phone=device.phone, text=text, timestamp=time.time()))
                    delivered = delivered or target.live is not None
            latency = self.send_latency + self._faults.get(conn.company_id, _NO_FAULTS).latency
        if latency > 0:
            self._scheduler.call_later(latency, self._ack, conn, future, message_id, delivered, jid)
        else:
            self._ack(conn, future, message_id, delivered, jid)
        return future

    def _ack(self, conn: SimulatedConnection, future: Future, message_id: str, delivered: bool, jid: str) -> None:
        """The server's ack resolves the send; a linked recipient's phone also sends a
        delivery receipt, as WhatsApp does (unlinked numbers never answer)."""
        future.set_result(message_id)
        if delivered:
            with self._lock:
                conn._emit(Receipt((message_id,), jid, "delivered", time.time()))

    def _deliver(self, device: _Device, message: IncomingMessage) -> None:
        if device.live is not None and device.live._state == "connected":
            device.live._emit(message)
        else:
            device.offline.append(message)

    def _logout(self, conn: SimulatedConnection) -> None:
        with self._lock:
            if conn._device is not None and conn._device.live is conn:
                conn._device.removed = True
            conn._die(None)

    def _message_id(self) -> str:
        return f"3EB0{next(self._ids):08X}{secrets.token_hex(4).upper()}"

    def _latency(self, company_id: str) -> float:
        with self._lock:
            return self.connect_latency + self._faults.get(company_id, _NO_FAULTS).latency


_NO_FAULTS = _CompanyFaults()
_NO_DEVICE = _Device(id="", company_id="", phone="")
_GONE: Future = Future()                # what close() returns: nothing is left to wait for
_GONE.set_result(None)


class SimulatedConnection:
    """One connection attempt of one company to the simulated network."""

    def __init__(self, network: SimulatedNetwork, company_id: str, company_dir: Path, emit: EmitFn) -> None:
        self.network = network
        self.company_id = company_id
        self.company_dir = Path(company_dir)
        self._emit_fn = emit
        self._state = "new"        # new | opening | qr | connected | dead | closed
        self._device: _Device | None = None

    def open(self) -> None:
        with self.network._lock:
            if self._state != "new":
                return
            self._state = "opening"
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
                self.network._unmark_live(self)
        return _GONE

    def alive(self) -> bool:
        return self._state in ("new", "opening", "qr", "connected")

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
        code = secrets.token_hex(4).upper()
        future.set_result(f"{code[:4]}-{code[4:]}")
        return future

    def logout(self) -> Future:
        future: Future = Future()
        self.network._logout(self)
        future.set_result(None)
        return future

    # ---- called by the network with its lock held -------------------------------

    def _emit(self, event: ConnectionEvent) -> None:
        if self._state in ("dead", "closed"):
            return
        self._emit_fn(event)

    def _die(self, event: ConnectionEvent | None) -> None:
        """Terminal: emit the last event, then nothing more."""
        if self._state in ("dead", "closed"):
            return
        if event is not None:
            self._emit_fn(event)
        self._state = "dead"
        self.network._unmark_live(self)

    def _read_credentials(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.company_dir / CREDENTIALS_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _write_credentials(self, device: _Device) -> None:
        self.company_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.company_dir / CREDENTIALS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"device": device.id, "phone": device.phone}, f)


class SimulatedTransport:
    """Makes SimulatedConnections on one shared SimulatedNetwork."""

    name = "simulated"

    def __init__(self, network: SimulatedNetwork | None = None) -> None:
        self.network = network or SimulatedNetwork()

    def connect(self, company_id: str, company_dir: Path, emit: EmitFn) -> SimulatedConnection:
        return SimulatedConnection(self.network, company_id, company_dir, emit)

    def forget(self, company_id: str, company_dir: Path) -> None:
        """Delete the company's simulated device credentials."""
        (Path(company_dir) / CREDENTIALS_FILE).unlink(missing_ok=True)

    def close(self) -> None:
        self.network.close()
