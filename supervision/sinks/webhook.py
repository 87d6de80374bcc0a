"""Webhook sink: POSTs the log's events to a URL, one at a time, in log order, signed.

One `WebhookSink` per destination: the global webhook (`WEBHOOK_URL`, cursor `webhook`)
and each company's own (`PUT .../sessions/:companyId/webhook`, cursor `webhook-<company>`,
only that company's events). Each reads the event log through its own cursor (see
sinks/__init__.py), so a crash or restart resends what was not confirmed (at-least-once),
and one slow endpoint never holds up another. A destination delivers strictly in log
order, so each company's events arrive in the order they happened; an event that keeps
failing goes to the dead letters after `retry.max_attempts`, and the next one goes on.

Headers of every request:
    X-Switchboard-Event-Id   the event's log position (seq): stable across retries and
                             restarts, the receiver's dedupe key
    X-Switchboard-Event      the event kind
    X-Switchboard-Timestamp  Unix seconds of this attempt
    X-Switchboard-Signature  sha256=hex(HMAC-SHA256(secret, "<timestamp>.<body>")) when a secret is set
    X-Switchboard-Attempt    1, 2, ...

Answers: 2xx is delivered. 408, 425, 429 (honouring Retry-After), 5xx and network errors
are retried with exponential backoff and jitter. Any other 4xx is final. A 3xx is never
followed (it would turn the POST into a body-less GET somewhere else): it is a final
failure whose error names where it pointed. Final failures go to the dead letters
(`<data>/webhooks-dead.jsonl`), listed and replayed by `GET /api/webhooks/dead`,
`POST /api/webhooks/dead/replay` and `switchboard webhooks dead|replay`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import json
import logging
import re
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.clock import iso
from switchboard.actors.kinds import NAMES, WEBHOOK_DEFAULT
from switchboard.supervision.eventlog import Event

from . import Sink, SinkStopping

log = logging.getLogger(__name__)

DEFAULT_KINDS = tuple(kind.value for kind in WEBHOOK_DEFAULT)
RETRYABLE_4XX = frozenset({408, 425, 429})     # "try again later"; every other 4xx is final
MAX_URL = 2048
MAX_SECRET = 256
DEFAULT_RETRY = BackoffPolicy(base=1.0, factor=2.0, cap=300.0, jitter=0.2, max_attempts=12)


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: str | None = None
    kinds: tuple[str, ...] = DEFAULT_KINDS
    timeout: float = 10.0
    retry: BackoffPolicy = DEFAULT_RETRY

    def __post_init__(self) -> None:
        validate_url(self.url)
        if self.secret is not None and (not isinstance(self.secret, str) or not _SECRET.fullmatch(self.secret)):
            raise ValueError(f"webhook secret must be 1-{MAX_SECRET} printable ASCII characters")
        unknown = [k for k in self.kinds if k not in NAMES]
        if unknown or not self.kinds:
            raise ValueError("webhook events must be a non-empty list of event kinds, of: " + ", ".join(sorted(NAMES)))

    def public(self) -> dict[str, Any]:
        """What the API shows: never the secret itself."""
        return {"url": self.url, "events": list(self.kinds), "secretSet": self.secret is not None}


_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# What a webhook URL may be, as the OpenAPI document says it too: http(s), a host name or
# an [IPv6] literal (no credentials: use the secret), a port up to 65535, then printable ASCII.
URL_PATTERN = r"^https?://(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::" + _PORT + r")?(?:[/?#][!-~]*)?$"
SECRET_PATTERN = r"^[ -~]{1,256}$"
_URL = re.compile(URL_PATTERN)
_SECRET = re.compile(SECRET_PATTERN)


def validate_url(url: Any) -> str:
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL:
        raise ValueError(f"webhook url must be a string of 1-{MAX_URL} characters")
    if not _URL.fullmatch(url):
        raise ValueError("webhook url must be http:// or https:// with a host (no credentials: use the secret), "
                         "an optional port, then printable ASCII without spaces (percent-encode the rest)")
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def payload(event: Event) -> dict[str, Any]:
    return {"id": str(event.seq), "event": event.kind, "companyId": event.company_id,
            "timestamp": iso(event.ts, ms=True), "data": event.data}


Post = Callable[[str, bytes, dict[str, str], float], tuple[int, dict[str, str]]]


class WebhookSink:
    # The cursor is saved every 10 deliveries (a file write and rename each): a killed
    # gateway repeats at most those and the POST it had in flight.
    save_every = 10

    @classmethod
    def factory(cls, config: WebhookConfig) -> Callable[[Path], Sink]:
        """For `Switchboard(sinks=[WebhookSink.factory(config)])`: the global webhook."""
        return lambda data_dir: cls(config)

    def __init__(self, config: WebhookConfig, *, company_id: str | None = None, post: Post | None = None,
                 dead: Any = None) -> None:
        self.config = config
        self.company_id = company_id
        self.name = "webhook" if company_id is None else f"webhook-{company_id}"
        self.dead = dead                   # DeadLetters, set by attach() when run by the board
        self._post = post or Poster().post
        self._stop = threading.Event()
        self._wake = threading.Event()     # a new config: stop waiting, try the new URL
        self.delivered = 0
        self.failed = 0

    def reconfigure(self, config: WebhookConfig) -> None:
        """A new URL, secret or kinds: the next attempt uses them (a wait is cut short)."""
        self.config = config
        self._wake.set()

    def attach(self, delivery: Any) -> None:
        self.dead = delivery.dead

    def wants(self, event: Event) -> bool:
        return event.kind in self.config.kinds and (self.company_id is None or event.company_id == self.company_id)

    def __call__(self, event: Event) -> None:
        if not self.wants(event):
            return
        body = json.dumps(payload(event), separators=(",", ":"), ensure_ascii=False, default=str).encode()
        error, attempts = self.deliver(body, event, self.config.retry)
        if error is None:
            self.delivered += 1
            return
        self.failed += 1
        log.warning("webhook %s: event %d given up after %d attempt(s): %s", self.name, event.seq, attempts, error)
        if self.dead is not None:
            self.dead.add(self.name, event, body, error, attempts)

    def deliver(self, body: bytes, event: Event, retry: BackoffPolicy) -> tuple[str | None, int]:
        """Attempts until delivered (None), or a final error with the attempts made.
        Raises SinkStopping if closed meanwhile."""
        attempt = 0
        while True:
            attempt += 1
            error, final, wait_hint = self._attempt(body, event, attempt)
            if error is None:
                return None, attempt
            if final or attempt >= retry.max_attempts:
                return error, attempt
            delay = retry.delay(attempt - 1)
            if wait_hint is not None:
                delay = min(retry.cap, max(delay, wait_hint))
            self._wake.clear()
            deadline = time.monotonic() + delay
            while not self._wake.is_set() and not self._stop.is_set() and time.monotonic() < deadline:
                self._wake.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            if self._stop.is_set():
                raise SinkStopping()

    def _attempt(self, body: bytes, event: Event, attempt: int) -> tuple[str | None, bool, float | None]:
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "switchboard-webhook",
                   "X-Switchboard-Event-Id": str(event.seq), "X-Switchboard-Event": event.kind,
                   "X-Switchboard-Timestamp": timestamp, "X-Switchboard-Attempt": str(attempt)}
        if self.config.secret:
            headers["X-Switchboard-Signature"] = sign(self.config.secret, timestamp, body)
        try:
            status, answer = self._post(self.config.url, body, headers, self.config.timeout)
        except Exception as exc:          # refused, reset, timed out: try again
            return f"{type(exc).__name__}: {exc}", False, None
        if 200 <= status < 300:
            return None, False, None
        if 300 <= status < 400:
            where = answer.get("location") or "nowhere (no Location header)"
            return f"HTTP {status} redirect to {where}; not followed (a redirect is not a delivery)", True, None
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            return f"HTTP {status}", True, None
        return f"HTTP {status}", False, _retry_after(answer.get("retry-after"))

    def interrupt(self) -> None:
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        self.interrupt()


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 3600 else None


class Poster:
    """POSTs over one kept-alive connection per host (a new one after any error)."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, dict[str, str]]:
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port)
        conn = self._conns.pop(key, None)
        if conn is None:
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(parts.hostname, parts.port, timeout=timeout)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(1 << 16)
            answer = {k.lower(): v for k, v in response.getheaders()}
            status = response.status
        except Exception:
            conn.close()
            raise
        if response.will_close or not response.isclosed():      # closing, or a body too big to drain
            conn.close()
        else:
            self._conns[key] = conn
        return status, answer
