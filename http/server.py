"""Serving the app with waitress, and shutting down gracefully.

Settings (see the stack notes §3.1): 16 request threads plus one per allowed event
stream (a stream pins a worker for its whole life), `channel_request_lookahead=1` so a
vanished SSE client is noticed, a waitress body limit above the app's own limit so that
the app's JSON 413 answers normal clients, and no `Server` header.

Shutdown (`shutdown()`, called from the SIGTERM/SIGINT handler): stop accepting (the
listening socket is closed), end the event streams, let in-flight requests finish and
their answers flush, close the idle keep-alive connections, then stop the I/O loop and
the workers. `run()` returns after that; the caller then stops the board.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from waitress import create_server
from waitress import wasyncore
from waitress.channel import HTTPChannel

from .wire_errors import limited_channel

log = logging.getLogger(__name__)
# waitress logs "Task queue depth is N" for every request queued while all workers are
# busy: under load that costs CPU exactly when there is none to spare. Saturation shows
# in latency and in the bench instead.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class GracefulServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 3000, threads: int = 16,
                 stream_threads: int | None = None, body_limit: int | None = None, drain_timeout: float = 15.0,
                 connection_limit: int = 1000, connections_per_address: int | None = None,
                 **adjustments: Any) -> None:
        state = getattr(app, "switchboard", None)
        self.state = state
        if stream_threads is None:
            stream_threads = state.settings.sse_max_streams if state is not None else 0
        if body_limit is None:
            body_limit = state.settings.body_limit if state is not None else 1 << 20
        self.drain_timeout = drain_timeout
        # a connection idle this long (a half-open client, a request that never completes) is closed
        adjustments.setdefault("channel_timeout", 60)
        self.server = create_server(
            app, host=host, port=port, threads=threads + stream_threads,
            channel_request_lookahead=1,
            max_request_body_size=2 * body_limit + 4096,   # above the app's limit: its JSON 413 wins
            max_request_header_size=64 * 1024,
            connection_limit=connection_limit,
            asyncore_use_poll=True,                        # no FD_SETSIZE limit on many connections
            expose_tracebacks=False,
            ident=None,
            clear_untrusted_proxy_headers=True,
            **adjustments)
        # waitress's own errors (bad request line/headers, oversize body) as JSON too, and a
        # fair share of the connections per client address
        self.server.channel_class = limited_channel(connections_per_address or max(16, connection_limit // 4))
        self._shutdown_started = threading.Event()
        self._force = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    @property
    def host(self) -> str:
        return str(self.server.effective_host)

    @property
    def url(self) -> str:
        host = self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def run(self) -> None:
        """Serve until shutdown() has completed (blocks)."""
        try:
            self.server.run()
        finally:
            self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
            self._stopped.set()

    def start_in_thread(self) -> GracefulServer:
        """For tests and embedding: serve on a background thread."""
        self._thread = threading.Thread(target=self.run, name="switchboard-http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, wait: bool = False, force: bool = False) -> None:
        """Begin a graceful shutdown; safe from any thread and from a signal handler.
        `force` (a second Ctrl-C): stop waiting for requests in flight."""
        if force:
            self._force.set()
        if not self._shutdown_started.is_set():
            self._shutdown_started.set()
            threading.Thread(target=self._drain, name="switchboard-http-drain", daemon=True).start()
        if wait:
            self._stopped.wait(self.drain_timeout + 10)
            if self._thread is not None:
                self._thread.join(timeout=10)

    # ---- the drain, on its own thread; socket work happens on the I/O loop's thread -------

    def _on_loop(self, fn) -> None:
        try:
            self.server.trigger.pull_trigger(fn)
        except OSError:
            pass

    def _drain(self) -> None:
        server = self.server
        self._on_loop(lambda: wasyncore.dispatcher.close(server))       # stop accepting; keep the trigger
        if self.state is not None:
            self.state.begin_shutdown()
        deadline = time.monotonic() + self.drain_timeout
        remaining = [1]
        done = threading.Event()

        def close_idle() -> None:
            busy = 0
            for channel in list(server._map.values()):
                if not isinstance(channel, HTTPChannel):
                    continue
                if channel.requests or channel.total_outbufs_len or channel.request is not None:
                    busy += 1
                else:
                    channel.handle_close()
            remaining[0] = busy
            done.set()

        while time.monotonic() < deadline and not self._force.is_set():
            done.clear()
            self._on_loop(close_idle)
            done.wait(1.0)
            dispatcher = server.task_dispatcher
            if remaining[0] == 0 and dispatcher.active_count == 0 and not dispatcher.queue:
                break
            self._force.wait(0.05)
        else:
            log.warning("%d connection(s) still busy; closing them", remaining[0])
        self._on_loop(lambda: wasyncore.close_all(server._map))        # empties the map: the loop returns
