"""The gateway's transport for `switchboard simulator`: every company link is its own
socket to the service (wire.py's protocol), so a killed gateway really drops them.

One asyncio loop on one thread runs every link of the gateway. A link reads lines as
they come: answers to commands resolve their futures at once; everything else (events,
credentials) goes through one ordered queue per link, so a LID sender's lookup (a round
trip to the service, like neonize asking its LID store) never reorders what follows.
The link address comes from the service itself (`GET <url>/api/simulator/link`), asked
again whenever a connect fails (the service may have restarted elsewhere).
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import threading
import urllib.request
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

from ...connection import (Cause, ConnectionEvent, Disconnected, EmitFn, IncomingMessage, Receipt, SendError)
from ...payload import Payload, Text
from . import codes, wire
from .connection import CREDENTIALS_FILE, lid_sender, pn_chat, read_credentials, write_credentials

log = logging.getLogger(__name__)
CLOSE_GRACE = 5.0            # how long a closing link waits for the service's `closed`


class RemoteTransport:
    """Connections to a simulator service at `url` (http://host:port)."""

    name = "simulated"
    pins_message_ids = True      # the simulated WhatsApp sends under the payload's id

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.connect_timeout = connect_timeout
        self._address: tuple[str, int] | None = None
        self._asking: asyncio.Future | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simulator-client", daemon=True)
        self._thread.start()
        self._links: set[RemoteConnection] = set()
        self._guard = threading.Lock()
        self._ids = itertools.count(1)

    def connect(self, company_id: str, company_dir: Path, emit: EmitFn) -> RemoteConnection:
        link = RemoteConnection(self, company_id, Path(company_dir), emit)
        with self._guard:
            self._links.add(link)
        return link

    def forget(self, company_id: str, company_dir: Path) -> None:
        (Path(company_dir) / CREDENTIALS_FILE).unlink(missing_ok=True)

    def close(self) -> None:
        """Close every link (waits, bounded, until their sockets are gone), then the loop."""
        with self._guard:
            links = list(self._links)
        closing = [link.close() for link in links]
        for future in closing:
            try:
                future.result(timeout=CLOSE_GRACE + 2)
            except Exception:
                pass
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def _done(self, link: RemoteConnection) -> None:
        with self._guard:
            self._links.discard(link)

    async def _link_address(self) -> tuple[str, int]:
        """The link server's address; links opening at once share one question."""
        if self._address is not None:
            return self._address
        if self._asking is None or self._asking.done():
            def ask() -> tuple[str, int]:
                with urllib.request.urlopen(self.url + "/api/simulator/link", timeout=self.connect_timeout) as r:
                    body = json.loads(r.read())
                return str(body["host"]), int(body["port"])
            self._asking = self._loop.run_in_executor(None, ask)
        address = await asyncio.shield(self._asking)
        self._address = address
        return address


class RemoteConnection:
    """One company's link to the simulator service. See actors/connection.py for the contract."""

    def __init__(self, transport: RemoteTransport, company_id: str, company_dir: Path, emit: EmitFn) -> None:
        self.transport = transport
        self.company_id = company_id
        self.company_dir = company_dir
        self._emit = emit
        self._guard = threading.Lock()
        self._state = "new"                # new | opening | open | closing | gone
        self._over = False                 # a terminal event arrived, or close() was called
        self._gone: Future = Future()
        self._writer: asyncio.StreamWriter | None = None
        self._requests: dict[int, tuple[str, Future]] = {}

    # ---- the contract -----------------------------------------------------------------

    def open(self) -> None:
        with self._guard:
            if self._state != "new":
                return
            self._state = "opening"
        if self.transport._loop.is_closed():     # the transport is closed: no loop to run the link on
            self._finish(Disconnected("the simulator transport is closed", Cause.OPEN_FAILED))
            return
        asyncio.run_coroutine_threadsafe(self._run(), self.transport._loop)

    def close(self) -> Future:
        with self._guard:
            self._over = True
            if self._state == "new":
                self._state = "gone"
                self._gone.set_result(None)
                self.transport._done(self)
            if self._state in ("gone", "closing"):
                return self._gone
            was_open, self._state = self._state == "open", "closing"
        if was_open:
            self.transport._loop.call_soon_threadsafe(self._begin_close)
        return self._gone

    def alive(self) -> bool:
        return not self._over and self._state != "gone"

    def send(self, jid: str, payload: Payload) -> Future:
        if not isinstance(payload, Text):
            return _failed(SendError(f"the simulator sends text only, not {payload.kind}", retryable=False))
        return self._request("send", jid=jid, text=payload.text, id=payload.id)

    def pair_phone(self, phone: str) -> Future:
        return self._request("pair", phone=phone)

    def logout(self) -> Future:
        return self._request("logout")

    # ---- on the loop ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            host, port = await self.transport._link_address()
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=wire.MAX_LINE),
                                                    self.transport.connect_timeout)
        except Exception as exc:
            self.transport._address = None          # ask again next time: the service may have moved
            self._finish(Disconnected(f"cannot reach the simulator at {self.transport.url}: {exc}",
                                      Cause.UNREACHABLE))
            return
        with self._guard:
            closing = self._state == "closing"
            self._writer = writer
            if not closing:
                self._state = "open"
        if closing:                        # closed while connecting: never say hello
            writer.close()
            self._finish(Disconnected("closed before the link was up"))
            return
        credentials = read_credentials(self.company_dir)
        writer.write(wire.line({"op": "hello", "version": wire.VERSION, "company": self.company_id,
                                "credentials": credentials}))
        inbox: asyncio.Queue = asyncio.Queue()
        consumer = asyncio.ensure_future(self._consume(inbox, writer))
        lost: Exception | None = None
        try:
            while raw := await reader.readline():
                message = wire.parse(raw)
                if message["op"] == "reply":
                    self._answered(message)
                else:
                    inbox.put_nowait(message)
        except Exception as exc:                 # reset, a bad line, a line past the limit
            lost = exc
        inbox.put_nowait(None)
        await consumer
        writer.close()
        try:
            await writer.wait_closed()
        except Exception:
            pass
        self._finish(Disconnected("lost the link to the simulator" + (f": {lost}" if lost else ""),
                                  Cause.DROPPED))

    async def _consume(self, inbox: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        """Events in the order the service sent them."""
        while (message := await inbox.get()) is not None:
            op = message["op"]
            try:
                if op == "credentials":
                    write_credentials(self.company_dir, message["credentials"])
                elif op == "event":
                    await self._event(wire.decode_event(message), writer)
                elif op == "closed":
                    writer.close()
                elif op == "keepalive":       # the service drops a link that stays silent
                    asyncio.ensure_future(self._ping(writer, float(message["every"])))
                elif op == "error":
                    log.warning("company %s: the simulator refused the link: %s", self.company_id,
                                message.get("message"))
            except Exception:
                log.exception("company %s: bad message from the simulator: %.200r", self.company_id, message)
                writer.close()

    async def _event(self, event: ConnectionEvent, writer: asyncio.StreamWriter) -> None:
        if isinstance(event, IncomingMessage) and not event.phone and lid_sender(event):
            phone = await self._lookup(lid_sender(event))
            event = dataclasses.replace(event, phone=phone or "")
        elif isinstance(event, Receipt) and event.chat.endswith("@" + codes.LID_SERVER):
            event = dataclasses.replace(event, chat=pn_chat(event.chat, await self._lookup(event.chat)))
        with self._guard:
            closing, over = self._state == "closing", self._over
        # The service holds a message until it is acknowledged, which the gateway does once
        # the message is in its event log (Inbound): a gateway killed before that gets it again.
        if isinstance(event, IncomingMessage):
            event = dataclasses.replace(event, ack=self._acker(writer, event.id))
        # After close(): only what WhatsApp will not send again (messages, receipts).
        if not over or (closing and isinstance(event, (IncomingMessage, Receipt))):
            self._emit(event)
        if isinstance(event, wire.TERMINAL):
            with self._guard:
                self._over = True

    @staticmethod
    async def _ping(writer: asyncio.StreamWriter, every: float) -> None:
        while not writer.is_closing():
            writer.write(wire.line({"op": "ping"}))
            await asyncio.sleep(max(0.05, every))

    def _acker(self, writer: asyncio.StreamWriter, message_id: str) -> Callable[[], None]:
        """An ack callable for any thread: the write happens on the link's loop."""
        loop = self.transport._loop

        def write() -> None:
            if not writer.is_closing():
                writer.write(wire.line({"op": "ack", "id": message_id}))

        def ack() -> None:
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            write() if here else loop.call_soon_threadsafe(write)
        return ack

    async def _lookup(self, lid_chat: str) -> str | None:
        """The phone of a LID, from the service's LID store (None when it has none)."""
        try:
            phone = await asyncio.wait_for(asyncio.wrap_future(self._request("lid", lid=lid_chat)), 10)
        except Exception:
            return None
        return phone if isinstance(phone, str) else None

    def _begin_close(self) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        writer.write(wire.line({"op": "close"}))
        # A service that never answers `closed` must not hold the close forever.
        self.transport._loop.call_later(CLOSE_GRACE, lambda: writer.is_closing() or writer.transport.abort())

    def _finish(self, last: Disconnected) -> None:
        """The socket is gone: a link that ended by itself says so once; waiting commands fail."""
        with self._guard:
            said_enough = self._over
            self._over, self._state = True, "gone"
            requests, self._requests = self._requests, {}
        for op, future in requests.values():
            if not future.done():
                future.set_exception(SendError("the link closed before the simulator answered", retryable=False,
                                               unconfirmed=True) if op == "send"
                                     else SendError("the link to the simulator closed", retryable=True))
        try:
            if not said_enough:
                self._emit(last)
        finally:
            self.transport._done(self)
            if not self._gone.done():
                self._gone.set_result(None)

    # ---- commands ---------------------------------------------------------------------

    def _request(self, op: str, **fields: Any) -> Future:
        future: Future = Future()
        with self._guard:
            usable = self._state in ("open", "closing") if op == "lid" else self._state == "open" and not self._over
            if not usable:
                future.set_exception(SendError("not connected", retryable=True))
                return future
            req = next(self.transport._ids)
            self._requests[req] = (op, future)
            writer = self._writer
        assert writer is not None
        data = wire.line({"op": op, "req": req, **fields})
        self.transport._loop.call_soon_threadsafe(lambda: writer.is_closing() or writer.write(data))
        return future

    def _answered(self, message: dict[str, Any]) -> None:
        with self._guard:
            op, future = self._requests.pop(message.get("req"), (None, None))   # type: ignore[arg-type]
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(wire.decode_error(message["error"]))
            return
        result = wire.decode_result(op, message.get("ok"))
        if op == "logout" and getattr(result, "told_whatsapp", False):
            with self._guard:
                self._over = True          # our own logout: the socket closes next, and that is no news
        future.set_result(result)


def _failed(error: Exception) -> Future:
    future: Future = Future()
    future.set_exception(error)
    return future
