"""Webhook sink: POSTs events to a URL, signed with HMAC-SHA256, retried with backoff.

Deliveries are journaled (`<data>/webhooks.jsonl`) before the first attempt and marked
done on a 2xx, so a crash or restart of the gateway resends what was not confirmed
(at-least-once; the `X-Switchboard-Event-Id` header is stable across retries, for the
receiver's dedupe). A delivery that keeps failing, or is answered with a 4xx that
retrying cannot fix, goes to `<data>/webhooks-dead.jsonl` with the last error.

Headers of every request:
    X-Switchboard-Event-Id   companyId:kind:id, stable across retries
    X-Switchboard-Timestamp  Unix seconds of this attempt
    X-Switchboard-Signature  sha256=HMAC(secret, "<timestamp>.<body>") in hex
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.journal import Journal
from switchboard.actors.kinds import WEBHOOK_DEFAULT, EventKind
from switchboard.supervision.events import Event

from . import Sink

log = logging.getLogger(__name__)

DEFAULT_KINDS = tuple(kind.value for kind in WEBHOOK_DEFAULT)
# 4xx answers that say "try again later"; every other 4xx is final.
RETRYABLE_4XX = {408, 409, 425, 429}
# Events that carry a message's id: a redelivery of one keeps its key (the receiver's dedupe).
_KEYED_BY_ID = (EventKind.MESSAGE, EventKind.SENT, EventKind.FAILED)
MAX_PENDING = 100_000      # beyond this backlog, new deliveries go straight to the dead letters


@dataclasses.dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: str | None = None
    kinds: tuple[str, ...] = DEFAULT_KINDS
    timeout: float = 10.0
    retry: BackoffPolicy = BackoffPolicy(base=1.0, factor=2.0, cap=300.0, jitter=0.2, max_attempts=12)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("webhook url must start with http:// or https://")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink:
    @classmethod
    def factory(cls, config: WebhookConfig) -> Callable[[Path], Sink]:
        """For `Switchboard(sinks=[WebhookSink.factory(config)])`."""
        return lambda data_dir: cls(config, data_dir)

    def __init__(self, config: WebhookConfig, data_dir: Path, *,
                 post: Callable[[str, bytes, dict[str, str], float], int] | None = None) -> None:
        self.config = config
        self._post = post or _post
        self._journal = Journal(data_dir / "webhooks.jsonl")
        self._dead = Journal(data_dir / "webhooks-dead.jsonl")
        self._pending: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._due: list[tuple[float, int, str]] = []     # heap of (due, seq, key); stale keys skipped
        self._seq = itertools.count()
        for record in self._journal.read():
            if record.get("op") == "add":
                self._pending[record["key"]] = {**record, "attempts": 0}
            elif record.get("op") == "done":
                self._pending.pop(record.get("key"), None)
        for key in self._pending:
            heapq.heappush(self._due, (0.0, next(self._seq), key))
        self._cv = threading.Condition()
        self._stopped = False
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="switchboard-webhooks", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        """Bus subscriber: journal the delivery, then wake the sender."""
        if event.kind not in self.config.kinds:
            return
        ident = event.data.get("id") if event.kind in _KEYED_BY_ID else None
        key = f"{event.company_id}:{event.kind}:{ident or uuid.uuid4().hex}"
        body = {"event": event.kind, "companyId": event.company_id, "id": key,
                "timestamp": event.as_dict()["ts"], "data": event.data}
        record = {"op": "add", "key": key, "body": body}
        with self._cv:
            if key in self._pending:
                return
            if len(self._pending) >= MAX_PENDING:
                self._bury({**record, "attempts": 0}, "webhook backlog full: the endpoint is down or too slow")
                return
            try:
                self._journal.append(record)
            except OSError:
                log.exception("could not journal webhook %s; delivering from memory", key)
            self._pending[key] = {**record, "attempts": 0}
            heapq.heappush(self._due, (0.0, next(self._seq), key))
            self._cv.notify()

    def pending(self) -> int:
        with self._cv:
            return len(self._pending)

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():       # a sender stuck in a request still writes to them
            self._journal.close()
            self._dead.close()

    def _run(self) -> None:
        while True:
            with self._cv:
                due = None
                while not self._stopped:
                    while self._due and self._due[0][2] not in self._pending:
                        heapq.heappop(self._due)
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        due = self._pending[heapq.heappop(self._due)[2]]
                        break
                    self._cv.wait(self._due[0][0] - now if self._due else None)
                if self._stopped:
                    return
            self._attempt(due)

    def _attempt(self, item: dict[str, Any]) -> None:
        body = json.dumps(item["body"], separators=(",", ":"), ensure_ascii=False, default=str).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "switchboard-webhook",
                   "X-Switchboard-Event-Id": item["key"], "X-Switchboard-Timestamp": timestamp}
        if self.config.secret:
            headers["X-Switchboard-Signature"] = sign(self.config.secret, timestamp, body)
        try:
            status = self._post(self.config.url, body, headers, self.config.timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}"
            final = error is not None and 400 <= status < 500 and status not in RETRYABLE_4XX
        except Exception as exc:     # network errors, timeouts: retry
            error, final = f"{type(exc).__name__}: {exc}", False
        with self._cv:
            if error is None:
                self.delivered += 1
                self._finish(item)
                return
            item["attempts"] += 1
            if final or item["attempts"] >= self.config.retry.max_attempts:
                self._bury(item, error)
                self._finish(item)
                return
            heapq.heappush(self._due, (time.monotonic() + self.config.retry.delay(item["attempts"] - 1),
                                       next(self._seq), item["key"]))

    def _bury(self, item: dict[str, Any], error: str) -> None:
        """Into the dead-letter file, for an operator to replay."""
        self.failed += 1
        try:
            self._dead.append({"key": item["key"], "body": item["body"], "error": error,
                               "attempts": item["attempts"]})
        except OSError:
            log.exception("could not write the webhook dead-letter file")
        log.warning("webhook %s given up after %d attempts: %s", item["key"], item["attempts"], error)

    def _finish(self, item: dict[str, Any]) -> None:
        self._pending.pop(item["key"], None)
        try:
            self._journal.append({"op": "done", "key": item["key"]})
            if self._journal.records_written > 1000 + 2 * len(self._pending):
                self._journal.rewrite([{"op": "add", "key": k, "body": v["body"]} for k, v in self._pending.items()])
        except OSError:
            log.exception("could not journal a webhook delivery; it may be sent again after a restart")


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
