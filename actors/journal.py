"""Append-only JSON-lines files: the durable memory a restarted actor recovers from.

A write either lands whole or not at all: on failure (disk full, I/O error) the file
is cut back to where it was, so a torn line can never glue itself to the next record.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Iterator


class Journal:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        self._file = None
        self.records_written = 0

    def read(self) -> Iterator[dict[str, Any]]:
        """Every whole record. A torn last line (crash or full disk mid-write) is skipped
        and cut off, so the next append starts on a clean line."""
        self.records_written = 0
        good_end = 0
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    good_end += len(line)
                    self.records_written += 1
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        yield record
            if good_end < self.path.stat().st_size:
                os.truncate(self.path, good_end)
        except FileNotFoundError:
            return

    def append(self, record: dict[str, Any]) -> None:
        """Write one record whole, or raise OSError and leave the file as it was."""
        data = (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        f = self._open()
        end = f.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                written = f.write(view)      # a raw file may write only part of it
                if not written:
                    raise OSError(errno.ENOSPC, "short write")
                view = view[written:]
            if self._fsync:
                os.fsync(f.fileno())
        except OSError:
            try:
                f.truncate(end)
            except OSError:
                pass
            self.close()
            raise
        self.records_written += 1

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the whole file atomically (write a temp file, then rename)."""
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            for record in records:
                f.write((json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        self.close()
        os.replace(tmp, self.path)
        self.records_written = len(records)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def _open(self):
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "ab", buffering=0)
        return self._file
