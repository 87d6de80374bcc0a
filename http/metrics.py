"""Prometheus exposition for `GET /metrics`.

A custom collector reads the gateway at scrape time: sessions by state and queued
messages come from the sessions' published snapshots (`board.metrics()`, no actor is
asked); counters (messages, reconnects by reason, crashes, rate-limit refusals) are
counted from the event bus and the HTTP layer since this process started, and so are
the requests each route served and the seconds they took (RequestTimes, fed by the
plumbing's plugin).
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from switchboard.actors.kinds import EventKind
from switchboard.supervision.board import Switchboard
from switchboard.supervision.events import Event


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

    def on_event(self, event: Event) -> None:
        kind = event.kind
        with self._lock:
            if kind == EventKind.SENT:
                self.sent += 1
            elif kind == EventKind.MESSAGE:
                self.received += 1
            elif kind == EventKind.FAILED:
                self.failed += 1
            elif kind == EventKind.CRASHED:
                self.crashes += 1
            elif kind == EventKind.STATE and event.data.get("state") == "reconnecting":
                # the transport's typed cause (connection.Cause), a short bounded label
                self.reconnects[str(event.data.get("cause") or "other")] += 1

    def rate_limit_refused(self, scope: str) -> None:
        with self._lock:
            self.rate_limited[scope] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"sent": self.sent, "received": self.received, "failed": self.failed, "crashes": self.crashes,
                    "reconnects": dict(self.reconnects), "rate_limited": dict(self.rate_limited)}


class RequestTimes:
    """Requests served and seconds spent per route (to the first byte of the answer; an
    event stream counts until it starts). Read by the Prometheus collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cells: dict[str, list[float]] = {}

    def cell(self, name: str) -> list[float]:
        """The [count, seconds] cell of one route, made once when the route is built."""
        with self._lock:
            return self._cells.setdefault(name, [0, 0.0])

    def add(self, cell: list[float], seconds: float) -> None:
        with self._lock:
            cell[0] += 1
            cell[1] += seconds

    def snapshot(self) -> dict[str, tuple[int, float]]:
        with self._lock:
            return {name: (int(c[0]), c[1]) for name, c in self._cells.items()}


class SwitchboardCollector:
    def __init__(self, board: Switchboard, counters: Counters, streams: Callable[[], int],
                 request_times: RequestTimes) -> None:
        self._board = board
        self._counters = counters
        self._streams = streams
        self._request_times = request_times

    def collect(self) -> Iterator[Metric]:
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
        from switchboard.actors.redis_limiter import ON_FALLBACK      # only its set: redis-py is imported anyway
        yield GaugeMetricFamily("switchboard_rate_limit_fallback",
                                "Companies whose send limit counts in memory because Redis is unreachable",
                                value=len(ON_FALLBACK))
        delivery = getattr(self._board, "delivery", None)
        if delivery is not None:
            yield GaugeMetricFamily("switchboard_event_log_head", "The newest event's position in the event log",
                                    value=delivery.log.head)
            behind = GaugeMetricFamily("switchboard_sink_behind", "Events a sink has not delivered yet",
                                       labels=["sink"])
            for name, runner in sorted(delivery.runners.items()):
                behind.add_metric([name], runner.lag)
            yield behind
            yield GaugeMetricFamily("switchboard_webhook_dead_letters", "Webhook deliveries that failed for good",
                                    value=delivery.dead.count())
        yield GaugeMetricFamily("switchboard_uptime_seconds", "Seconds since the gateway started",
                                value=metrics["uptimeSeconds"])
        requests = CounterMetricFamily("switchboard_http_requests", "HTTP requests served, by route",
                                       labels=["route"])
        seconds = CounterMetricFamily("switchboard_http_request_seconds",
                                      "Seconds spent answering HTTP requests (to the answer's start), by route",
                                      labels=["route"])
        for route, (count, spent) in sorted(self._request_times.snapshot().items()):
            requests.add_metric([route], count)
            seconds.add_metric([route], spent)
        yield requests
        yield seconds


def make_registry(board: Switchboard, counters: Counters, streams: Callable[[], int],
                  request_times: RequestTimes) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SwitchboardCollector(board, counters, streams, request_times))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
