"""The service's end of gateway links: a socket server (wire.py's protocol) in front of a
SimulatedNetwork. One asyncio loop on one thread serves every link; the network calls
its links from any thread (timers, HTTP requests), so a link writes through
`call_soon_threadsafe`, which keeps the order the network emitted in.

A link is live only while its socket is open: when the gateway dies, the kernel closes
its sockets, the read ends, and the link is over (what it had not acknowledged is held
again for the device's next link). A link also ends while its socket is still open: on a
final event (a drop, a logout, a replacement ...) or when the client says `close`; the
socket then stays until the client closes it, so nothing on the way is reset, and any
command that still comes is answered (not connected). A gateway
that is frozen (SIGSTOP) keeps its sockets open, so, like WhatsApp's servers with a client
that stops its keep-alive pings, a service started with an idle timeout drops a link it
heard nothing from for that long; it tells each link, after the hello, how often to ping
(`keepalive`).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any

from ...connection import ConnectionEvent, IncomingMessage
from ...payload import Text
from ...phone import InvalidInput, validate_company_id
from . import wire
from .connection import SimulatedConnection
from .network import SimulatedNetwork, _Device

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 10.0
END_GRACE = 30.0         # how long an ended link's socket waits for the client to close it


class ServiceLink(SimulatedConnection):
    """A gateway's link, as the network sees it: events go down the socket, credentials
    come with the hello and go back to the gateway to be stored."""

    def __init__(self, network: SimulatedNetwork, company_id: str, credentials: dict[str, Any] | None,
                 send: Any) -> None:
        super().__init__(network, company_id, None, self._event_out)
        self._credentials = credentials
        self._send = send                  # thread-safe: wire message (None: close the socket)
        self._unacked: dict[str, IncomingMessage] = {}
        self._defer_close = False

    def _event_out(self, event: ConnectionEvent) -> None:
        self._send(wire.encode_event(event))

    def _emit(self, event: ConnectionEvent) -> None:
        # Raw, as the server sends it: a LID sender stays a LID; the client asks (`lid`).
        if self._state not in ("dead", "closed"):
            self._emit_fn(event)

    def _push(self, message: IncomingMessage) -> None:
        self._unacked[message.id] = message
        self._emit(message)

    def _die(self, event: ConnectionEvent | None) -> None:
        if self._state in ("dead", "closed"):
            return
        super()._die(event)
        if not self._defer_close:
            self._send(None)

    def logout(self) -> Future:
        self._defer_close = True           # the reply goes out first, then the socket closes
        try:
            return super().logout()
        finally:
            self._defer_close = False

    def _read_credentials(self) -> dict[str, Any] | None:
        return self._credentials

    def _write_credentials(self, device: _Device) -> None:
        self._credentials = {"device": device.id, "phone": device.phone}
        self._send({"op": "credentials", "credentials": self._credentials})

    def acked(self, message_id: str) -> None:
        with self.network._lock:
            if self._unacked.pop(message_id, None) is not None:
                self.network._delivered(self, message_id)

    def ended(self) -> None:
        """The socket is gone: the link is over, and what was never acknowledged is held again."""
        with self.network._lock:
            self.close()
            unacked, self._unacked = list(self._unacked.values()), {}
            self.network._requeue(self, unacked)


class LinkServer:
    """Accepts gateway links on `host:port` (0: a free port) until stopped."""

    def __init__(self, network: SimulatedNetwork, host: str = "127.0.0.1", port: int = 0,
                 idle_timeout: float | None = None) -> None:
        self.network = network
        self.host, self.port = host, port
        self.idle_timeout = idle_timeout      # None: a silent link lives as long as its socket
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._serving: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simulator-links", daemon=True)

    def start(self) -> LinkServer:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, self.port, limit=wire.MAX_LINE), self._loop)
        self._server = started.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            if self._serving:                # each link ends in the network before the loop stops
                await asyncio.wait(list(self._serving), timeout=5)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        self._writers.add(writer)
        link: ServiceLink | None = None
        try:
            hello = wire.parse(await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT))
            link = self._link(hello, writer)
            if self.idle_timeout:
                writer.write(wire.line({"op": "keepalive", "every": self.idle_timeout / 3}))
            link.open()
            while raw := await asyncio.wait_for(reader.readline(), self.idle_timeout):
                self._command(link, wire.parse(raw))
        except (wire.ProtocolError, InvalidInput) as exc:
            writer.write(wire.line({"op": "error", "message": str(exc)}))
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            if link is not None:
                link.ended()
            self._writers.discard(writer)
            writer.close()

    def _link(self, hello: dict[str, Any], writer: asyncio.StreamWriter) -> ServiceLink:
        if hello.get("op") != "hello" or hello.get("version") != wire.VERSION:
            raise wire.ProtocolError(f"expected a version {wire.VERSION} hello")
        company_id = validate_company_id(hello.get("company"))
        credentials = hello.get("credentials")
        if credentials is not None and not (isinstance(credentials, dict) and isinstance(credentials.get("device"), str)):
            raise wire.ProtocolError("credentials must be an object with a device id")
        loop = self._loop

        def write(message: dict[str, Any] | None) -> None:
            if writer.is_closing():
                return
            if message is None:
                # The link is over, but the client closes the socket (its transport does once
                # the session closes the connection): closing it here with the client's
                # commands unread would reset it and lose the last event on the way. A
                # command that still comes gets a definite answer (not connected).
                loop.call_later(END_GRACE, writer.close)
            else:
                writer.write(wire.line(message))

        def send(message: dict[str, Any] | None) -> None:
            try:
                loop.call_soon_threadsafe(write, message)
            except RuntimeError:          # the loop is gone: the service is stopping
                pass
        return ServiceLink(self.network, company_id, credentials, send)

    def _command(self, link: ServiceLink, message: dict[str, Any]) -> None:
        op, req = message["op"], message.get("req")
        if op == "ping":
            pass                          # the link is alive; nothing to answer
        elif op == "ack":
            link.acked(str(message.get("id")))
        elif op == "close":
            link.close()
            link._send({"op": "closed"})
        elif op == "lid":
            link._send({"op": "reply", "req": req, "ok": self.network.phone_for_lid(str(message.get("lid", "")))})
        elif op == "send":
            message_id = message.get("id")
            self._reply(link, req, link.send(str(message.get("jid", "")),
                                             Text(str(message.get("text", "")),
                                                  id=message_id if isinstance(message_id, str) else None)))
        elif op == "pair":
            try:
                future = link.pair_phone(str(message.get("phone", "")))
            except InvalidInput as exc:
                future = Future()
                future.set_exception(exc)
            self._reply(link, req, future)
        elif op == "logout":
            future = link.logout()
            self._reply(link, req, future)
            if future.result().told_whatsapp:
                link._send(None)          # unlinked: the link is over after the answer
        else:
            raise wire.ProtocolError(f"unknown op {op!r}")

    @staticmethod
    def _reply(link: ServiceLink, req: Any, future: Future) -> None:
        """Answer `req` when the network's future resolves (at once, later, or never)."""
        def answer(done: Future) -> None:
            error = done.exception()
            link._send({"op": "reply", "req": req, **({"error": wire.encode_error(error)} if error is not None
                                                        else {"ok": wire.encode_result(done.result())})})
        future.add_done_callback(answer)
