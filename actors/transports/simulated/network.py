"""A stand-in for WhatsApp's servers, with the same observable behaviour and fault injection.

These machines cannot reach WhatsApp, so tests, benchmarks, chaos runs and the offline
demo link companies to a `SimulatedNetwork` instead, in-process (connection.py) or as its
own service (service.py, `switchboard simulator`). What it copies from WhatsApp:
QR codes that rotate and run out, a phone that scans them, linked devices the server
remembers (so a restart reconnects without a new QR), delivery between accounts,
messages held for a device that is offline and delivered, in order, when it is back
(and re-held if its link dies before the client acknowledged them), and one live
connection per linked device: a second one replaces the first, which is told `Replaced`.
It records every live connection per company and account over time and the most ever
seen at once, so a test can prove there never were two.

Faults (see `fault`) reproduce what the gateway must survive; faults.py holds their
names, per-company state and how each is applied; ledger.py the record of live links.
The network calls a few methods on its links (a
`SimulatedConnection`, in-process or the service's end of a socket): `_emit`, `_die`,
`_push`, `_read_credentials`, `_write_credentials`.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...connection import (Cause, Connected, Disconnected, IncomingMessage, LoggedOut, LogoutResult, Paired,
                          QrCode, QrExhausted, Receipt, Replaced, SendError, TemporaryBan)
from ...payload import Media, Payload, Text
from ...phone import InvalidInput, USER_SERVER, jid_to_phone, normalize_phone
from ...recipients import GROUP_SERVER, is_group_jid
from ...scheduler import Scheduler
from . import codes
from . import faults
from .faults import CompanyFaults, connect_failure, event, not_on_whatsapp
from .ledger import Ledger
from .store import DeviceStore

if TYPE_CHECKING:
    from .connection import SimulatedConnection



@dataclasses.dataclass
class _Device:
    id: str
    company_id: str
    phone: str
    removed: bool = False
    live: SimulatedConnection | None = None
    foreign_live: bool = False           # an outside client holds the credentials ("replace")
    offline: list[IncomingMessage] = dataclasses.field(default_factory=list)


class SimulatedNetwork:
    """Thread-safe. Every method may be called from any thread. With `data_dir`, the
    linked devices, held messages and what phones received survive a restart."""

    def __init__(self, *, qr_first: float = 60.0, qr_next: float = 20.0, qr_count: int = 6,
                 connect_latency: float = 0.0, send_latency: float = 0.0, ack_deadline: float = 75.0,
                 scheduler: Scheduler | None = None, clock=time.monotonic, data_dir: Path | str | None = None) -> None:
        self.qr_first, self.qr_next, self.qr_count = qr_first, qr_next, qr_count
        self.connect_latency, self.send_latency = connect_latency, send_latency
        self.ack_deadline = ack_deadline     # whatsmeow gives up on a send's answer after 75 s
        self._own_scheduler = scheduler is None
        self._scheduler = scheduler or Scheduler("simulated-network")
        self._clock = clock
        self._lock = threading.RLock()
        self._devices: dict[str, _Device] = {}
        self._by_phone: dict[str, list[_Device]] = {}
        self._company_device: dict[str, str] = {}
        self._known: set[str] = set()                 # companies that ever connected or linked
        self._pending_qr: dict[str, SimulatedConnection] = {}
        self._pair_phone: dict[str, str] = {}
        self._ledger: Ledger[SimulatedConnection] = Ledger()
        self._received: dict[str, list[dict[str, Any]]] = {}
        self._faults: dict[str, CompanyFaults] = {}
        self._not_on_whatsapp: set[str] = set()
        self._lids: dict[str, str] = {}               # LID user -> phone: what the LID store answers
        self._groups: dict[str, list[str]] = {}       # group JID -> member phones (issue 13; not persisted)
        self._ids = itertools.count(1)
        self._store = DeviceStore(Path(data_dir) / "simulator.sqlite3") if data_dir is not None else None
        if self._store is not None:
            self._load()

    @property
    def qr_window(self) -> float:
        """Seconds a QR session lasts from its first code (whatsmeow: 60 + 5 x 20 = 160)."""
        return self.qr_first + (self.qr_count - 1) * self.qr_next

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
                self._remove(old)
            device = _Device(id=codes.message_id(next(self._ids)).lower(), company_id=company_id, phone=phone)
            self._devices[device.id] = device
            self._by_phone.setdefault(phone, []).append(device)
            self._company_device[company_id] = device.id
            self._lids[codes.lid_for(phone)] = phone
            if self._store is not None:
                self._store.save_device(device.id, company_id, phone, False)
            del self._pending_qr[company_id]
            self._pair_phone.pop(company_id, None)
            conn._write_credentials(device)
            device.live, conn._device = conn, device
            self._record(company_id)
            conn._emit(Paired(phone))
            if self._faults.setdefault(company_id, CompanyFaults()).take_pair_stall():
                conn._state = "paired"      # whatsmeow's 515 restart failed: no event, ever
            else:
                conn._state = "connected"
                conn._emit(Connected(phone))
            return {"companyId": company_id, "phone": phone, "device": device.id}

    def fault(self, company_id: str, fault: str, seconds: float = 30.0, *, phone: str | None = None,
              outcome: str | None = None, code: int | None = None) -> dict[str, Any]:
        """Inject a fault (faults.py says what each does). LookupError for a company the
        network never saw, or one without what the fault needs (a live link, a QR code)."""
        return faults.inject(self, company_id, fault, seconds, phone=phone, outcome=outcome, code=code)

    def create_group(self, group: str, members: list[str]) -> dict[str, Any]:
        """A group `group` (`<digits>@g.us`) with these member phones (the companies'
        accounts among them can send to it and receive from it)."""
        if not isinstance(group, str) or not is_group_jid(group):
            raise InvalidInput("group must be a group JID: digits@g.us")
        if not isinstance(members, list) or not 1 <= len(members) <= 256:
            raise InvalidInput("members must be a list of 1-256 phone numbers")
        phones = list(dict.fromkeys(normalize_phone(m) for m in members))
        with self._lock:
            self._groups[group] = phones
        return {"group": group, "members": phones}

    def deliver_inbound(self, company_id: str, sender: str, text: str, message_id: str | None = None,
                        push_name: str = "", *, as_lid: bool = False, group: str | None = None,
                        kind: str = "text", content: dict[str, Any] | None = None) -> str:
        """Someone (`sender`) writes to the company's WhatsApp account. `as_lid`: the
        message arrives from the sender's LID with no phone alternate (whatsmeow's
        `SenderAlt` empty), so the client must ask its LID store for the phone."""
        sender = normalize_phone(sender)
        if not isinstance(text, str):
            raise InvalidInput("text must be a string")
        with self._lock:
            device = self._devices.get(self._company_device.get(company_id, ""))
            if device is None or device.removed:
                raise LookupError(f"company {company_id!r} has no linked device")
            if as_lid:
                lid = codes.lid_for(sender)
                self._lids[lid] = sender
                chat, phone = f"{lid}@{codes.LID_SERVER}", ""
            else:
                chat, phone = f"{sender}@{USER_SERVER}", sender
            participant = ""
            if group is not None:       # a group message: the chat is the group, the sender its participant
                if group not in self._groups:
                    raise LookupError(f"no group {group!r}")
                chat, participant = group, chat
            message = IncomingMessage(id=message_id or self._message_id(), chat=chat, phone=phone, text=text,
                                      timestamp=time.time(), push_name=push_name, is_group=group is not None,
                                      participant=participant, kind=kind, content=dict(content or {}))
            self._deliver(device, message)
            return message.id

    def read(self, phone: str, message_id: str, kind: str = "read") -> dict[str, Any]:
        """The phone `phone` reads (or, `kind` "played", plays) a message it received: the
        sender's live connection gets the receipt, as WhatsApp sends it (issue 13)."""
        phone = normalize_phone(phone)
        if kind not in ("read", "played"):
            raise InvalidInput("kind must be read or played")
        with self._lock:
            record = next((r for r in self._received.get(phone, ()) if r.get("id") == message_id), None)
            if record is None:
                raise LookupError(f"{phone} received no message {message_id!r}")
            sent_by = [d for d in self._by_phone.get(record["from"], ()) if not d.removed and d.live is not None]
            for device in sent_by:
                device.live._emit(Receipt((message_id,), f"{phone}@{USER_SERVER}", kind, time.time()))
            return {"phone": phone, "id": message_id, "receipt": kind, "told": len(sent_by)}

    def phone_for_lid(self, lid: str) -> str | None:
        """What neonize's LID store answers for `<lid>@lid` (None: no mapping known)."""
        with self._lock:
            return self._lids.get(lid.split("@", 1)[0])

    def messages(self, phone: str) -> list[dict[str, Any]]:
        """What `phone` received, in order."""
        with self._lock:
            return list(self._received.get(normalize_phone(phone), []))

    def connections(self, history: int = 200) -> dict[str, Any]:
        """Live connections per company (and the most ever seen at once), per account
        (phone: its linked devices, their live links now, and the most one device ever had
        at once, outside clients included), and the last `history` changes (at most
        ledger.HISTORY are kept). Several companies may link one phone (devices of one
        account, as on WhatsApp); two live links for one device are what must never be."""
        with self._lock:
            ledger = self._ledger
            companies = {cid: {"live": ledger.live_count(cid), "maxSeen": ledger.max_seen(cid),
                               "phone": (self._devices.get(self._company_device.get(cid, "")) or _NO_DEVICE).phone}
                         for cid in ledger.companies()}
            accounts: dict[str, dict[str, int]] = {}
            for device in self._devices.values():
                if device.removed:
                    continue
                acc = accounts.setdefault(device.phone, {"live": 0, "devices": 0, "maxSeen": 0})
                acc["devices"] += 1
                acc["live"] += int(device.live is not None) + int(device.foreign_live)
                acc["maxSeen"] = ledger.account_max(device.phone)
            return {"companies": companies, "accounts": accounts, "history": ledger.history(history)}

    def live_count(self, company_id: str) -> int:
        with self._lock:
            return self._ledger.live_count(company_id)

    def max_seen(self, company_id: str) -> int:
        with self._lock:
            return self._ledger.max_seen(company_id)

    def close(self) -> None:
        if self._own_scheduler:
            self._scheduler.stop()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # ---- used by the links ------------------------------------------------------------

    def _opening(self, conn: SimulatedConnection) -> None:
        with self._lock:
            self._known.add(conn.company_id)

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
            if faults.reject_until > now:
                conn._die(connect_failure(faults.reject_code))
                return
            credentials = conn._read_credentials()
            if credentials is None:
                self._mark_live(conn)
                stale = self._pending_qr.get(cid)
                if stale is not None and stale is not conn:
                    stale._die(event(QrExhausted, reason="another QR session took over (simulated)"))
                self._pending_qr[cid] = conn
                conn._state = "qr"
                self._show_qr(conn, 0)
                return
            device = self._devices.get(str(credentials.get("device", "")))
            if device is None or device.removed:
                conn._die(LoggedOut("device was removed (simulated)"))
                return
            self._company_device[cid] = device.id
            self._mark_live(conn)
            if device.live is not None and device.live is not conn:
                device.live._die(Replaced())
            if device.foreign_live:
                device.foreign_live = False
                self._record(cid)
            device.live, conn._device = conn, device
            conn._state = "connected"
            conn._emit(Connected(device.phone))
            self._drain(device, conn)

    def _show_qr(self, conn: SimulatedConnection, n: int) -> None:
        with self._lock:
            if conn._state != "qr" or self._pending_qr.get(conn.company_id) is not conn:
                return
            if n >= self.qr_count:
                del self._pending_qr[conn.company_id]
                conn._die(QrExhausted())
                return
            if n == 0:
                conn._qr_started = self._clock()
            lifetime = self.qr_first if n == 0 else self.qr_next
            conn._qr = codes.qr_payload()
            conn._qr_expires = self._clock() + lifetime
            conn._emit(QrCode(conn._qr, lifetime))
            self._scheduler.call_later(lifetime, self._show_qr, conn, n + 1)

    def _mark_live(self, conn: SimulatedConnection) -> None:
        self._ledger.mark(conn.company_id, conn, *self._account(conn.company_id))

    def _unmark_live(self, conn: SimulatedConnection) -> None:
        self._ledger.unmark(conn.company_id, conn, *self._account(conn.company_id))
        if self._pending_qr.get(conn.company_id) is conn:
            del self._pending_qr[conn.company_id]
        if conn._device is not None and conn._device.live is conn:
            conn._device.live = None

    def _record(self, company_id: str) -> None:
        self._ledger.record(company_id, *self._account(company_id))

    def _account(self, company_id: str) -> tuple[str | None, int]:
        """The company's account (phone) and the outside clients on its credentials."""
        device = self._devices.get(self._company_device.get(company_id, ""))
        if device is None or device.removed:
            return None, 0
        return device.phone, int(device.foreign_live)

    def _live_connection(self, company_id: str) -> SimulatedConnection | None:
        return self._ledger.any_live(company_id)

    def _send(self, conn: SimulatedConnection, jid: str, payload: Payload) -> Future:
        future: Future = Future()
        media: dict[str, Any] = {}
        if isinstance(payload, Media):
            # What a phone shows of a media message (issue 13); the file itself stays with the gateway.
            media = {"mediaType": payload.media_type, "mime": payload.mime, "size": payload.size,
                     "caption": payload.caption, "fileName": payload.file_name, "sha256": payload.sha256}
            text = payload.caption
        elif not isinstance(payload, Text):
            future.set_exception(SendError(f"the simulator cannot send {payload.kind}", retryable=False))
            return future
        else:
            text = payload.text
        with self._lock:
            device = conn._device
            if conn._state == "interrupted":
                future.set_exception(SendError("websocket not connected", retryable=True))
                return future
            if conn._state == "blackhole":
                # Into a dead socket: no answer until whatsmeow's deadline says "unknown".
                conn._unanswered.add(future)
                self._scheduler.call_later(self.ack_deadline, self._timed_out, conn, future)
                return future
            if conn._state != "connected" or device is None or device.live is not conn:
                future.set_exception(SendError("not connected", retryable=True))
                return future
            group = jid if jid.endswith("@" + GROUP_SERVER) else None
            to = jid_to_phone(jid)
            if group is None and to in self._not_on_whatsapp:
                future.set_exception(not_on_whatsapp(jid))
                return future
            message_id = getattr(payload, "id", None) or self._message_id()
            chat = group or f"{device.phone}@{USER_SERVER}"
            first = group or to
            if any(r["id"] == message_id for r in self._received.get(first, ())[-1000:]):
                # The same message id again (a client repeating a send it had no answer for):
                # recipients take a message id once; the repeat is only acknowledged.
                future.set_result(message_id)
                return future
            if group:              # the group's own record, so a repeat to the group is seen too
                self._received.setdefault(group, []).append({"id": message_id})
            delivered = False
            # A group nobody told the simulator about counts as one with no other members.
            for member in (self._groups.get(group, ()) if group else [to]):
                if member == device.phone:
                    continue
                record = {"id": message_id, "from": device.phone, "text": text, "timestamp": time.time(),
                          **({"group": group} if group else {}), **({"type": "media", **media} if media else {})}
                self._received.setdefault(member, []).append(record)
                if self._store is not None:
                    self._store.add_received(member, record)
                for target in self._by_phone.get(member, ()):
                    if not target.removed:
                        self._deliver(target, IncomingMessage(
                            id=message_id, chat=chat, phone=device.phone, text=text, timestamp=time.time(),
                            is_group=group is not None,
                            participant=f"{device.phone}@{USER_SERVER}" if group else "",
                            kind="media" if media else "text", content=dict(media)))
                        delivered = delivered or target.live is not None
            faults = self._faults.get(conn.company_id, _NO_FAULTS)
            latency = self.send_latency + faults.latency + faults.slow
            if latency >= self.ack_deadline:
                conn._unanswered.add(future)
                self._scheduler.call_later(self.ack_deadline, self._timed_out, conn, future)
                return future
            if latency > 0:
                conn._unanswered.add(future)
                self._scheduler.call_later(latency, self._ack, conn, future, message_id, delivered, jid)
                return future
        self._ack(conn, future, message_id, delivered, jid)
        return future

    def _ack(self, conn: SimulatedConnection, future: Future, message_id: str, delivered: bool, jid: str) -> None:
        """The server's ack resolves the send; a linked recipient's phone also sends a
        delivery receipt, as WhatsApp does (unlinked numbers never answer)."""
        with self._lock:
            conn._unanswered.discard(future)
            if future.done() or not conn.alive():
                return              # the link went first: its close failed the send as unconfirmed
            future.set_result(message_id)
            if delivered:
                # whatsmeow sends DMs to the recipient's LID, so its receipts name the LID
                # chat; the client maps it back to the phone (as the neonize child does).
                lid = codes.lid_for(jid_to_phone(jid))
                self._lids[lid] = jid_to_phone(jid)
                conn._emit(Receipt((message_id,), f"{lid}@{codes.LID_SERVER}", "delivered", time.time()))

    def _timed_out(self, conn: SimulatedConnection, future: Future) -> None:
        with self._lock:
            conn._unanswered.discard(future)
            if not future.done():
                future.set_exception(SendError("timed out waiting for message send response",
                                               retryable=False, unconfirmed=True))

    def _deliver(self, device: _Device, message: IncomingMessage) -> None:
        if self._store is not None:
            self._store.hold(device.id, message.id, dataclasses.asdict(message))
        if device.live is not None and device.live._state == "connected":
            device.live._push(message)
        else:
            device.offline.append(message)

    def _drain(self, device: _Device, conn: SimulatedConnection) -> None:
        """Deliver what was held while the device was offline, in order."""
        offline, device.offline = device.offline, []
        for message in offline:
            conn._push(message)

    def _delivered(self, conn: SimulatedConnection, message_id: str) -> None:
        """The client has the message (acknowledged it): it is no longer held."""
        if self._store is not None and conn._device is not None:
            self._store.release(conn._device.id, message_id)

    def _requeue(self, conn: SimulatedConnection, messages: list[IncomingMessage]) -> None:
        """Messages the link took but the client never acknowledged are held again, first."""
        device = conn._device
        if device is not None and messages and not device.removed:
            device.offline[:0] = messages

    def _remove(self, device: _Device) -> None:
        device.removed = True
        device.offline.clear()
        if self._store is not None:
            self._store.save_device(device.id, device.company_id, device.phone, True)
            self._store.drop_held(device.id)

    def _logout(self, conn: SimulatedConnection) -> LogoutResult:
        with self._lock:
            device = conn._device
            if conn._state != "connected" or device is None or device.live is not conn:
                return LogoutResult(False, "not connected: WhatsApp was not told, the phone still lists the device")
            self._remove(device)
            conn._die(None)
            return LogoutResult(True)

    def _message_id(self) -> str:
        return codes.message_id(next(self._ids))

    def _latency(self, company_id: str) -> float:
        with self._lock:
            return self.connect_latency + self._faults.get(company_id, _NO_FAULTS).latency

    def _load(self) -> None:
        """What the service remembered from its last run (with the lock not yet shared)."""
        assert self._store is not None
        for device_id, company_id, phone, removed in self._store.devices():
            device = _Device(id=device_id, company_id=company_id, phone=phone, removed=removed)
            self._devices[device_id] = device
            self._by_phone.setdefault(phone, []).append(device)
            self._known.add(company_id)
            self._lids[codes.lid_for(phone)] = phone
            if not removed:
                self._company_device[company_id] = device_id
        fields = {f.name for f in dataclasses.fields(IncomingMessage)}
        for device_id, body in self._store.held():
            device = self._devices.get(device_id)
            if device is not None and not device.removed:
                device.offline.append(IncomingMessage(**{k: v for k, v in body.items() if k in fields}))
        for phone, record in self._store.received():
            self._received.setdefault(phone, []).append(record)


_NO_FAULTS = CompanyFaults()
_NO_DEVICE = _Device(id="", company_id="", phone="")
