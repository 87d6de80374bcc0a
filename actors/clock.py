"""The one ISO-8601 formatter: every time the API, the event log or a file shows is UTC with `Z`."""
from __future__ import annotations

import datetime as dt
import time


def iso(ts: float | None, *, ms: bool = False) -> str | None:
    """`2026-11-22T00:51:48Z` (or `...48.418Z` with `ms`); None stays None."""
    if ts is None:
        return None
    spec = "milliseconds" if ms else "seconds"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec=spec).replace("+00:00", "Z")


def now_iso() -> str:
    return iso(time.time())
