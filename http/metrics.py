"""Prometheus exposition for `GET /metrics`.

A custom collector reads the gateway at scrape time: sessions by state and queued
messages come from the sessions' published snapshots (`board.metrics()`, no actor is
asked); counters (messages, reconnects by reason, crashes, rate-limit refusals) are
counted from the event bus and the HTTP layer since this process started.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

try:   # the same bounded reason labels the session's diagnostics use
    from switchboard.actors.session import _reason_kind as reason_kind
except ImportError:                                          # pragma: no cover
    def reason_kind(reason: str) -> str:
        return "other"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Counters:
    """Monotonic counters fed by the event bus and by the HTTP layer. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.received = 0
        self.failed = 0
        self.crashes = 0
        self.reconnects: collections.Counter[str] = collections.Counter()
        self.rate_limited: collections.Counter[str] = collections.Counter()

    def on_event(self, event: Any) -> None:
        kind = event.kind
        with self._lock:
            if kind == "message.sent":
                self.sent += 1
            elif kind == "message":
                self.received += 1
            elif kind == "message.failed":
                self.failed += 1
            elif kind == "crashed":
                self.crashes += 1
            elif kind == "state" and event.data.get("state") == "reconnecting":
                self.reconnects[reason_kind(str(event.data.get("error") or ""))] += 1

    def rate_limit_refused(self, scope: str) -> None:
        with self._lock:
            self.rate_limited[scope] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"sent": self.sent, "received": self.received, "failed": self.failed, "crashes": self.crashes,
                    "reconnects": dict(self.reconnects), "rate_limited": dict(self.rate_limited)}


class SwitchboardCollector:
    def __init__(self, board: Any, counters: Counters, streams: Callable[[], int]) -> None:
        self._board = board
        self._counters = counters
        self._streams = streams

    def collect(self):
        metrics = self._board.metrics()
        counts = self._counters.snapshot()
        sessions = GaugeMetricFamily("switchboard_sessions", "Sessions by lifecycle state", labels=["state"])
        for state, n in metrics["sessionsByState"].items():
            sessions.add_metric([state], n)
        yield sessions
        yield GaugeMetricFamily("switchboard_messages_queued", "Messages accepted and waiting in the outboxes",
                                value=metrics["queuedMessages"])
        yield CounterMetricFamily("switchboard_messages_sent", "Messages WhatsApp accepted", value=counts["sent"])
        yield CounterMetricFamily("switchboard_messages_received", "Incoming messages (de-duplicated)",
                                  value=counts["received"])
        yield CounterMetricFamily("switchboard_messages_failed", "Sends that failed for good", value=counts["failed"])
        reconnects = CounterMetricFamily("switchboard_reconnects", "Reconnects scheduled, by reason",
                                         labels=["reason"])
        for reason, n in sorted(counts["reconnects"].items()):
            reconnects.add_metric([reason], n)
        yield reconnects
        limited = CounterMetricFamily("switchboard_rate_limited", "Sends refused by the rate limit, by scope",
                                      labels=["scope"])
        for scope in sorted({"company", "recipient", *counts["rate_limited"]}):
            limited.add_metric([scope], counts["rate_limited"].get(scope, 0))
        yield limited
        yield CounterMetricFamily("switchboard_session_crashes", "Session actors that crashed (and were restarted)",
                                  value=counts["crashes"])
        yield GaugeMetricFamily("switchboard_event_streams", "Open Server-Sent Event streams", value=self._streams())
        yield GaugeMetricFamily("switchboard_uptime_seconds", "Seconds since the gateway started",
                                value=metrics["uptimeSeconds"])


def make_registry(board: Any, counters: Counters, streams: Callable[[], int]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SwitchboardCollector(board, counters, streams))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
