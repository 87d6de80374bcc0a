"""Server-Sent Events: the durable event log as a live stream, per company or for all.

Each open stream pins one waitress worker thread for its whole life, so the number of
concurrent streams is capped (503 beyond the cap) and the server gets that many extra
worker threads, so streams never starve ordinary requests. A stream is a reader of the
event log: its `id:` lines are log positions (seq), the same across restarts, so a client
that reconnects with `Last-Event-ID: N` (or `?lastEventId=N`) gets exactly the events after
N, none twice and none missed, even from a gateway that restarted meanwhile. An id the
log no longer holds (older than its retention, or from another data directory) gets an
explicit `reset` event, then the stream goes on from the oldest event kept. Without an id
a stream starts with the next event. Heartbeat comments keep proxies from closing an idle
stream and let waitress notice a client that went away. A slow client only falls behind
in the log; it never holds up anything else.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Iterator

_WAIT = 0.5       # seconds a stream waits for the log before it looks at its client and the shutdown flag


class StreamsFull(Exception):
    pass


class EventStreams:
    def __init__(self, board: Any, *, max_streams: int = 8, heartbeat: float = 15.0) -> None:
        self._board = board
        self.max_streams = max_streams
        self.heartbeat = heartbeat
        self._lock = threading.Lock()
        self._open: dict[object, str | None] = {}     # stream -> the tenant holding it (None: admin)
        self._revoked: set[object] = set()            # streams of a revoked key: end them
        self._closing = False

    @property
    def count(self) -> int:
        return len(self._open)

    def open(self, *, company_id: str | None, kinds: frozenset[str] | None, last_event_id: int | None,
             disconnected: Callable[[], bool], tenant: str | None = None) -> Iterator[str]:
        """Reserve a slot (or raise StreamsFull) and return the stream's generator.

        One tenant cannot take every slot: a tenant key holds at most a quarter of them, and
        tenants together leave one for the admin."""
        token = object()
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
            self._open[token] = tenant
        try:
            event_log = self._board.delivery.log
            reader = event_log.reader(event_log.head if last_event_id is None else last_event_id)
        except Exception:
            self._release(token)
            raise

        def wanted(event: Any) -> bool:
            return (company_id is None or event.company_id == company_id) and (kinds is None or event.kind in kinds)
        return self._run(token, event_log, reader, wanted, last_event_id, disconnected)

    def close_all(self) -> None:
        """Shutdown: end every stream (within a wait) and refuse new ones."""
        with self._lock:
            self._closing = True

    def close_tenant(self, tenant: str) -> None:
        """A key was revoked: end the streams it holds now (within a wait)."""
        with self._lock:
            self._revoked.update(token for token, holder in self._open.items() if holder == tenant)

    def _run(self, token: object, event_log: Any, reader: Any, wanted: Callable[[Any], bool],
             asked: int | None, disconnected: Callable[[], bool]) -> Iterator[str]:
        try:
            yield "retry: 3000\n: stream open\n\n"
            last_sent = time.monotonic()
            while True:
                if self._closing:
                    yield "event: close\ndata: {\"reason\": \"server shutting down\"}\n\n"
                    return
                if token in self._revoked:
                    yield "event: close\ndata: {\"reason\": \"API key revoked\"}\n\n"
                    return
                if disconnected():
                    return
                if reader.reset:
                    reader.reset = False
                    yield _reset(asked if asked is not None else reader.reset_from, reader.position + 1,
                                 event_log.head)
                batch = reader.read(200)
                for event in batch:
                    if wanted(event):
                        last_sent = time.monotonic()
                        yield _format(event)
                if batch:
                    continue
                if time.monotonic() - last_sent >= self.heartbeat:
                    last_sent = time.monotonic()
                    yield ": ping\n\n"
                event_log.wait(reader.position, min(self.heartbeat, _WAIT))
        finally:
            self._release(token)

    def _release(self, token: object) -> None:
        with self._lock:
            self._open.pop(token, None)
            self._revoked.discard(token)


def _reset(asked: int, oldest: int, head: int) -> str:
    data = {"reason": f"event {asked} is not in the log any more (older than its retention, or from another "
                      f"log); the stream goes on from the oldest event kept", "lastEventId": asked,
            "oldestEventId": oldest, "headEventId": head}
    return f"event: reset\ndata: {json.dumps(data)}\n\n"


def _format(event: Any) -> str:
    data = json.dumps(event.as_dict(), ensure_ascii=False, default=str, separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"


def parse_last_event_id(*values: str | None) -> int | None:
    """The first value that is a whole number (0-18 digits), else None (no id given)."""
    for value in values:
        text = str(value).strip() if value is not None else ""
        if text and text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    return None
