"""Server-Sent Events: the event bus as a live stream, per company or for all.

Each open stream pins one waitress worker thread for its whole life, so the number of
concurrent streams is capped (503 beyond the cap) and the server gets that many extra
worker threads, so streams never starve ordinary requests. Every stream sends `id:`
lines (the bus sequence number), so a client that reconnects with `Last-Event-ID`
resumes from the bus's recent history; heartbeat comments keep proxies from closing an
idle stream and let waitress notice a client that went away. The bus callback only
puts into a bounded queue: a slow client can never hold up the event bus; if it falls
too far behind, its stream ends with an `overflow` event and it reconnects.
"""
from __future__ import annotations

import json
import queue
import threading
from typing import Any, Callable, Iterator

QUEUE_SIZE = 1000
_CLOSE = object()
_OVERFLOW = object()
_REVOKED = object()


class StreamsFull(Exception):
    pass


class EventStreams:
    def __init__(self, board: Any, *, max_streams: int = 8, heartbeat: float = 15.0) -> None:
        self._board = board
        self.max_streams = max_streams
        self.heartbeat = heartbeat
        self._lock = threading.Lock()
        self._open: dict[queue.Queue, str | None] = {}     # stream -> the tenant holding it (None: admin)
        self._closing = False

    @property
    def count(self) -> int:
        return len(self._open)

    def open(self, *, company_id: str | None, kinds: frozenset[str] | None, last_event_id: int,
             disconnected: Callable[[], bool], tenant: str | None = None) -> Iterator[str]:
        """Reserve a slot (or raise StreamsFull) and return the stream's generator.

        One tenant cannot take every slot: a tenant key holds at most a quarter of them, and
        tenants together leave one for the admin."""
        q: queue.Queue = queue.Queue(QUEUE_SIZE)
        with self._lock:
            if self._closing or len(self._open) >= self.max_streams:
                raise StreamsFull(f"too many open event streams (limit {self.max_streams}); try again later")
            if tenant is not None:
                held = list(self._open.values())
                per_tenant = max(1, self.max_streams // 4)
                if held.count(tenant) >= per_tenant:
                    raise StreamsFull(f"this key already has {per_tenant} open event stream(s); close one first")
                if sum(h is not None for h in held) >= self.max_streams - 1:
                    raise StreamsFull(f"too many open event streams (limit {self.max_streams}); try again later")
            self._open[q] = tenant

        def wanted(event: Any) -> bool:
            return (company_id is None or event.company_id == company_id) and (kinds is None or event.kind in kinds)

        def deliver(event: Any) -> None:
            if wanted(event):
                try:
                    q.put_nowait(event)
                except queue.Full:
                    _force(q, _OVERFLOW)

        try:
            unsubscribe = self._board.bus.subscribe(deliver)
        except Exception:
            self._release(q)
            raise
        backlog = [e for e in self._board.bus.recent(last_event_id) if wanted(e)] if last_event_id else []
        return self._run(q, unsubscribe, backlog, last_event_id, disconnected)

    def close_all(self) -> None:
        """Shutdown: end every stream now and refuse new ones."""
        with self._lock:
            self._closing = True
            streams = list(self._open)
        for q in streams:
            _force(q, _CLOSE)

    def close_tenant(self, tenant: str) -> None:
        """A key was revoked: end the streams it holds now."""
        with self._lock:
            streams = [q for q, holder in self._open.items() if holder == tenant]
        for q in streams:
            _force(q, _REVOKED)

    def _run(self, q: queue.Queue, unsubscribe: Callable[[], None], backlog: list[Any], last_seq: int,
             disconnected: Callable[[], bool]) -> Iterator[str]:
        try:
            yield "retry: 3000\n: stream open\n\n"
            for event in backlog:
                last_seq = event.seq
                yield _format(event)
            while not disconnected():
                try:
                    item = q.get(timeout=self.heartbeat)
                except queue.Empty:
                    yield ": ping\n\n"
                    continue
                if item is _CLOSE:
                    yield "event: close\ndata: {\"reason\": \"server shutting down\"}\n\n"
                    return
                if item is _REVOKED:
                    yield "event: close\ndata: {\"reason\": \"API key revoked\"}\n\n"
                    return
                if item is _OVERFLOW:
                    yield ("event: overflow\ndata: {\"reason\": \"client too slow; reconnect with "
                           "Last-Event-ID to resume\"}\n\n")
                    return
                if item.seq <= last_seq:
                    continue      # already sent from the backlog
                last_seq = item.seq
                yield _format(item)
        finally:
            unsubscribe()
            self._release(q)

    def _release(self, q: queue.Queue) -> None:
        with self._lock:
            self._open.pop(q, None)


def _force(q: queue.Queue, item: object) -> None:
    """Put a control item even into a full queue (dropping the oldest event)."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass


def _format(event: Any) -> str:
    data = json.dumps(event.as_dict(), ensure_ascii=False, default=str, separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"


def parse_last_event_id(*values: str | None) -> int:
    for value in values:
        if value and str(value).strip().isascii() and str(value).strip().isdigit():
            return int(str(value).strip())
    return 0
