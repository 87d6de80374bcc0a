"""NeonizeTransport: makes one NeonizeConnection per company attempt, and ends them all.

It owns no process itself; it keeps each connection until its link is gone (the future
of `gone()`), so that close() can wait for the ones still ending.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
from pathlib import Path

from ...connection import EmitFn
from ..proxy import validate_proxy
from . import spawner
from .connection import COMMAND_TIMEOUT, DB_FILES, SEND_TIMEOUT, NeonizeConnection

log = logging.getLogger("switchboard.neonize")


class NeonizeTransport:
    """Makes NeonizeConnections; owns no process itself but ends all of them on close()."""

    name = "neonize"

    def __init__(self, *, device_name: str = "Switchboard", proxy: str | None = None,
                 proxies: dict[str, str] | None = None, go_log_level: str = "WARNING",
                 stop_grace: float = 3.0, connect_deadline: float | None = None,
                 command_timeout: float = COMMAND_TIMEOUT, send_timeout: float = SEND_TIMEOUT,
                 start_method: str | None = None, max_starting: int | None = None) -> None:
        """`start_method` ("forkserver", the default, or "spawn") and `max_starting` (children
        starting up at once; 0: the CPU count) set the process-wide spawner (spawner.py)."""
        spawner.configure(start_method=start_method, max_starting=max_starting)
        self.device_name = device_name
        self.proxy = validate_proxy(proxy)
        self.proxies = {company: validate_proxy(url) for company, url in (proxies or {}).items()}
        self.go_log_level = go_log_level
        self.stop_grace = stop_grace
        self.connect_deadline = connect_deadline
        self.command_timeout = command_timeout
        self.send_timeout = send_timeout
        self._lock = threading.Lock()
        self._connections: set[NeonizeConnection] = set()     # until each one is gone

    def connect(self, company_id: str, company_dir: Path, emit: EmitFn) -> NeonizeConnection:
        """A new, not yet opened connection (the owner calls open())."""
        proxy = self.proxies.get(company_id, self.proxy)
        conn = NeonizeConnection(company_id, Path(company_dir), emit, device_name=self.device_name,
                                 proxy=proxy, go_log_level=self.go_log_level,
                                 stop_grace=self.stop_grace, connect_deadline=self.connect_deadline,
                                 command_timeout=self.command_timeout,
                                 send_timeout=self.send_timeout)
        with self._lock:
            self._connections.add(conn)
        conn.gone().add_done_callback(lambda _f: self._discard(conn))
        return conn

    def _discard(self, conn: NeonizeConnection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def forget(self, company_id: str, company_dir: Path) -> None:
        """Delete the company's stored WhatsApp credentials (the sqlite store)."""
        for name in DB_FILES:
            (Path(company_dir) / name).unlink(missing_ok=True)
        log.info("company %s: WhatsApp credentials deleted", company_id)

    def close(self) -> None:
        """Close every connection not yet gone, and wait for them all together, bounded by
        one stop sequence (stop_grace + 5 s), so that no child outlives the gateway."""
        with self._lock:
            connections = list(self._connections)
        futures = [conn.close() for conn in connections]
        _, late = concurrent.futures.wait(futures, timeout=self.stop_grace + 5.0)
        if late:
            log.warning("%d session processes still ending after %.0f s", len(late), self.stop_grace + 5.0)
