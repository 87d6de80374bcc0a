"""Fair shares of what every caller shares: request threads, event streams, sign-in tries.

waitress has one pool of request threads for everybody. Without a cap, one tenant (or
one client address) running many slow requests at once — sends that wait for WhatsApp,
QR waits — takes every thread and the others queue behind it. So requests in progress
are counted per tenant key and per client address, and one over its share answers 429
at once (with `retryAfter`) instead of queueing. The admin key is exempt: it is the
operator, and the dashboard and CLI must keep working while a tenant misbehaves.

The same counter caps event streams per client address (the per-key cap lives in
sse.EventStreams), and failed dashboard sign-ins per address (a key cannot be guessed
at line rate).
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Iterator

from .auth import Principal


class TooMany(Exception):
    def __init__(self, message: str, retry_after_ms: int = 1000) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Shares:
    def __init__(self, *, per_key: int, per_address: int, streams_per_address: int,
                 sign_ins_per_minute: int = 10) -> None:
        self.per_key = per_key
        self.per_address = per_address
        self.streams_per_address = streams_per_address
        self.sign_ins_per_minute = sign_ins_per_minute
        self._lock = threading.Lock()
        self._keys: collections.Counter[str] = collections.Counter()
        self._addresses: collections.Counter[str] = collections.Counter()
        self._streams: collections.Counter[str] = collections.Counter()
        self._failed_sign_ins: dict[str, collections.deque[float]] = {}

    @contextlib.contextmanager
    def request(self, principal: Principal | None, address: str) -> Iterator[None]:
        """Hold one request slot of this key and this address for the request's life."""
        if principal is not None and principal.admin:
            yield
            return
        key = principal.key_id if principal is not None else None
        with self._lock:
            if key is not None and self._keys[key] >= self.per_key:
                raise TooMany(f"this API key already has {self.per_key} requests in progress; retry shortly")
            if self._addresses[address] >= self.per_address:
                raise TooMany(f"this client address already has {self.per_address} requests in progress; "
                              "retry shortly")
            if key is not None:
                self._keys[key] += 1
            self._addresses[address] += 1
        try:
            yield
        finally:
            with self._lock:
                if key is not None:
                    _decrement(self._keys, key)
                _decrement(self._addresses, address)

    def open_stream(self, principal: Principal, address: str) -> None:
        """Take a stream slot of this address (release with close_stream)."""
        if principal.admin:
            return
        with self._lock:
            if self._streams[address] >= self.streams_per_address:
                raise TooMany(f"this client address already has {self.streams_per_address} open event "
                              "stream(s); close one first", 5000)
            self._streams[address] += 1

    def close_stream(self, principal: Principal, address: str) -> None:
        if principal.admin:
            return
        with self._lock:
            _decrement(self._streams, address)

    def stream_wrapper(self, principal: Principal, address: str, stream: Iterator[str]) -> Iterator[str]:
        """The stream, releasing the address's slot when it ends (waitress closes it)."""
        try:
            yield from stream
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            self.close_stream(principal, address)

    def check_sign_in(self, address: str, now: float | None = None) -> None:
        now = now or time.monotonic()
        with self._lock:
            tries = self._failed_sign_ins.get(address)
            while tries and tries[0] < now - 60:
                tries.popleft()
            if tries is not None and len(tries) >= self.sign_ins_per_minute:
                raise TooMany("too many failed sign-ins from this address; wait a minute",
                              int((tries[0] + 60 - now) * 1000) + 1)

    def failed_sign_in(self, address: str, now: float | None = None) -> None:
        with self._lock:
            if len(self._failed_sign_ins) > 10_000:       # bounded memory under a spray of addresses
                self._failed_sign_ins.clear()
            self._failed_sign_ins.setdefault(address, collections.deque()).append(now or time.monotonic())


def _decrement(counter: collections.Counter[str], name: str) -> None:
    counter[name] -= 1
    if counter[name] <= 0:
        del counter[name]
