"""Ownership: at most one live connection per company, behind one small protocol.

A session actor connects only while it owns its company, and releases ownership only
once its connection is gone for good (the Connection's close future), so that no two
connections for one company can overlap. The embedded backend is a lock file; a
distributed one (a Redis lease with a fencing token) implements the same protocol and
calls `on_lost` when it can no longer vouch for the company.
"""
from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Callable, Protocol

LostFn = Callable[[str], None]       # told the reason; the owner must close its connection


class Ownership(Protocol):
    """The right to connect one company. Methods are quick and never block for long."""

    @property
    def held(self) -> bool: ...

    @property
    def token(self) -> int | None:
        """A fencing token that grows with every new owner (None where there is none)."""
        ...

    def acquire(self, on_lost: LostFn) -> bool:
        """Take ownership if nobody else has it; True if held now. Idempotent."""
        ...

    def release(self) -> None:
        """Give it up. Idempotent; safe from any thread."""
        ...

    def describe(self) -> str:
        """Who holds it, for a person: used when acquire() answers False."""
        ...


OwnershipFactory = Callable[[str, Path], Ownership]     # (company id, company dir)


class FileLock:
    """An exclusive flock on `<company dir>/owner.lock`: one connection per company per host.

    flock conflicts between two open files even inside one process, so a restarted
    actor cannot connect while its crashed predecessor's connection is still closing.
    """

    token = None

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._problem: str | None = None
        self._lock = threading.Lock()     # release() may come from a close future's thread

    @classmethod
    def for_company(cls, _company_id: str, company_dir: Path) -> FileLock:
        return cls(company_dir / "owner.lock")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, on_lost: LostFn) -> bool:
        with self._lock:
            if self._fd is not None:
                return True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:      # a full or read-only disk: not ours, and say why
                self._problem = f"cannot create owner.lock: {exc.strerror or exc}"
                return False
            self._problem = None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError:
                os.close(fd)       # held elsewhere, or the disk refused the pid: not ours
                return False
            self._fd = fd
            return True

    def release(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def describe(self) -> str:
        return self._problem or "another process holds this company (owner.lock)"
