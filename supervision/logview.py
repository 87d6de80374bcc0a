"""`switchboard logs`: the supervisor log for a person, and following it across rotation.

One line per record: time, company, event, the state change or action, and the error,
e.g. `2026-11-22 00:51:48.123  962302  state  starting -> qr` — coloured by how it reads
(green linked, yellow waiting, red needs attention) on a terminal, plain when piped or
when NO_COLOR is set. `--json` prints the records as they are stored.

Following survives rotation (events.SupervisorLog renames the file to .1 and starts a
new one): the open file is read to its end, then the new file is opened from its start,
so no record is lost or shown twice.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from .events import _filtered, _parse, LOG_BACKUPS

_RESET = "\033[0m"
_COLOURS = {"good": "\033[32m", "wait": "\033[33m", "bad": "\033[31m", "dim": "\033[2m", "bold": "\033[1m"}
_GOOD = {"connected", "paired"}
_WAIT = {"qr", "starting", "reconnecting", "restarting", "stopped"}
_BAD = {"failed", "conflict", "banned", "logged_out", "crashed", "gave_up"}


def use_colour(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR") \
        and os.environ.get("TERM") != "dumb"


def format_record(record: dict[str, Any], colour: bool = False) -> str:
    """One record as a line for a person."""
    ts = str(record.get("ts") or "")
    try:
        when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except ValueError:
        when = ts or "-"
    company = str(record.get("companyId") or "gateway")
    event = str(record.get("event") or "?")
    state = record.get("state")
    what = []
    if state:
        before = record.get("from") or record.get("previous")
        what.append(f"{before} -> {state}" if before else f"-> {state}")
    for name in ("action", "cause", "attempt", "restored", "connected", "waitingForQr", "failed", "pending"):
        value = record.get(name)
        if value is None or (name == "attempt" and not value):
            continue
        what.append(str(value) if name in ("action", "cause") else f"{name}={value}")
    error = record.get("error") or record.get("reason") or record.get("lastError")
    tone = "good" if (state in _GOOD or event in _GOOD) else "bad" if (state in _BAD or event in _BAD) \
        else "wait" if state in _WAIT else None
    detail = " ".join(what)
    line_error = f"  error: {error}" if error else ""
    if not colour:
        return f"{when}  {company:<16} {event:<11} {detail}{line_error}".rstrip()
    paint = _COLOURS.get(tone or "", "")
    return (f"{_COLOURS['dim']}{when}{_RESET}  {_COLOURS['bold']}{company:<16}{_RESET} {event:<11} "
            f"{paint}{detail}{_RESET if paint else ''}"
            f"{(_COLOURS['bad'] + line_error + _RESET) if error else ''}").rstrip()


def render(record: dict[str, Any], as_json: bool, colour: bool) -> str:
    return json.dumps(record, ensure_ascii=False) if as_json else format_record(record, colour)


def read_all(path: Path, *, company: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """The records of the log and its rotated files, oldest first."""
    files = [path.with_name(f"{path.name}.{n}") for n in range(LOG_BACKUPS, 0, -1)] + [path]
    records: list[dict[str, Any]] = []
    for file in files:
        try:
            with open(file, "rb") as f:
                records.extend(_filtered(_parse(f), company, since))
        except FileNotFoundError:
            continue
    return records[-limit:] if limit else records


def follow(path: Path, *, company: str | None = None, since: float | None = None,
           stop: threading.Event | None = None, poll: float = 0.2, from_start: bool = False,
           backlog: int | None = None) -> Iterator[dict[str, Any]]:
    """`tail -f` that survives rotation: new records as they are appended (from the end of
    the file as it is now, unless `from_start`), until `stop` is set. `backlog`: of the
    records already in the file, only the last N (read in the same pass: none is lost
    between showing the old ones and following)."""
    stop = stop or threading.Event()
    current = None            # the open file and its inode
    buffer = b""
    first = backlog is not None
    while not stop.is_set():
        if current is None:
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                stop.wait(poll)
                continue
            if not from_start:
                f.seek(0, os.SEEK_END)
            from_start = True          # every file after the first is read from its start
            current = (f, os.fstat(f.fileno()).st_ino)
        f, inode = current
        chunk = f.read()
        if chunk:
            buffer += chunk
            complete, _, buffer = buffer.rpartition(b"\n")
            if complete:
                records = _filtered(_parse(complete.split(b"\n")), company, since)
                if first:
                    records = list(records)[-backlog:] if backlog else []
                yield from records
            first = False
            continue
        first = False
        try:
            rotated = os.stat(path).st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:
            rest = f.read()            # what was written before the rename
            f.close()
            current = None
            if rest:
                buffer += rest
            if buffer:
                yield from _filtered(_parse(buffer.split(b"\n")), company, since)
            buffer = b""
            # the next file is the one written after this one: the newer backup, or the log
            following = _after(path, inode)
            if following is not None:
                current = following
            continue
        stop.wait(poll)
    if current is not None:
        current[0].close()


def _after(path: Path, inode: int):
    """The file that follows the one with `inode` in the rotation (.3, .2, .1, the log),
    opened from its start; None when that is the log itself (opened by the caller)."""
    chain = [path.with_name(f"{path.name}.{n}") for n in range(LOG_BACKUPS, 0, -1)]
    inodes = []
    for file in chain:
        try:
            inodes.append(os.stat(file).st_ino)
        except FileNotFoundError:
            inodes.append(None)
    start = inodes.index(inode) + 1 if inode in inodes else len(chain)
    for file in chain[start:]:
        try:
            f = open(file, "rb")
        except FileNotFoundError:
            continue
        return f, os.fstat(f.fileno()).st_ino
    return None
