"""Redis Stream sink: every event of the log, XADDed to one stream (`switchboard:events`).

Each entry carries the event's log position (`seq`), `companyId`, `event` (the kind),
`ts` and `data` (JSON). The stream is capped with an approximate `MAXLEN ~ maxlen`
(default 100 000): size it well above the backlog a consumer group may have pending,
since trimming does not care whether an entry was acknowledged.

Exactly once into the stream, per log: before writing, the sink reads the stream's last
entry and skips every event up to its `seq`, so a crash between XADD and saving the
cursor does not add an event twice. One stream per gateway log: several gateway
instances give each their own stream name (`SWITCHBOARD_REDIS_STREAM`).
A consumer group recipe (XREADGROUP, XACK, XAUTOCLAIM) is in the README.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from switchboard.supervision.eventlog import Event

from . import Sink

log = logging.getLogger(__name__)

DEFAULT_STREAM = "switchboard:events"
DEFAULT_MAXLEN = 100_000


class RedisStreamSink:
    name = "redis-stream"

    @classmethod
    def factory(cls, url: str, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN) -> Callable[[Path], Sink]:
        def make(_data_dir: Path) -> Sink:
            import redis
            return cls(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2), stream, maxlen)
        return make

    def __init__(self, client: Any, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self._last_written: int | None = None       # the stream's newest seq, read on the first delivery
        self._log: Any = None
        self.written = 0

    def attach(self, delivery: Any) -> None:
        self._log = delivery.log

    def __call__(self, event: Event) -> None:
        self.deliver_batch([event])

    def deliver_batch(self, events: list[Event]) -> None:
        """XADD the batch in one pipeline (MULTI/EXEC: all or nothing)."""
        if self._last_written is None:
            self._last_written = self._stream_head()
            if self._log is not None and self._last_written > self._log.head:
                log.warning("Redis stream %s is ahead of this gateway's event log (%d > %d): it was written from "
                            "another log; appending without skipping", self.stream, self._last_written,
                            self._log.head)
                self._last_written = 0
        fresh = [e for e in events if e.seq > self._last_written]
        if not fresh:
            return
        pipe = self.client.pipeline(transaction=True)
        for e in fresh:
            pipe.xadd(self.stream, {"seq": e.seq, "companyId": e.company_id or "", "event": e.kind,
                                    "ts": f"{e.ts:.3f}",
                                    "data": json.dumps(e.data, separators=(",", ":"), ensure_ascii=False,
                                                       default=str)},
                      maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except Exception:
            self._last_written = None     # unknown what landed: read the stream's head again
            raise
        self._last_written = fresh[-1].seq
        self.written += len(fresh)

    def _stream_head(self) -> int:
        last = self.client.xrevrange(self.stream, count=1)
        if not last:
            return 0
        seq = last[0][1].get(b"seq") or last[0][1].get("seq")
        try:
            return int(seq)
        except (TypeError, ValueError):
            return 0

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass
