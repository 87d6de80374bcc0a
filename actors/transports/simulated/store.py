"""The simulated WhatsApp's own memory, in `<data>/simulator.sqlite3`: which devices are
linked to which account, the messages held for a device that is offline, and what each
phone received. WhatsApp's servers remember these across anything a gateway does; with a
data directory the simulator also remembers them across its own restarts.

sqlite (standard library) because the writes are small, frequent and must be atomic:
one held message per inbound, one row per send. Every call is made with the network's
lock held, so one connection is shared (check_same_thread off).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, company_id TEXT NOT NULL, phone TEXT NOT NULL,
                                    removed INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held (seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
                                 message_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS held_by_device ON held (device_id, message_id);
CREATE TABLE IF NOT EXISTS received (seq INTEGER PRIMARY KEY AUTOINCREMENT, phone TEXT NOT NULL,
                                     body TEXT NOT NULL);
"""


class DeviceStore:
    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)

    def devices(self) -> Iterator[tuple[str, str, str, bool]]:
        """(id, company_id, phone, removed), oldest link first."""
        for row in self._db.execute("SELECT id, company_id, phone, removed FROM devices ORDER BY seq"):
            yield row[0], row[1], row[2], bool(row[3])

    def save_device(self, device_id: str, company_id: str, phone: str, removed: bool) -> None:
        self._db.execute("INSERT INTO devices (id, company_id, phone, removed, seq) "
                         "VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM devices)) "
                         "ON CONFLICT (id) DO UPDATE SET removed = excluded.removed",
                         (device_id, company_id, phone, int(removed)))

    def held(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(device_id, message) for every message not yet delivered, in arrival order."""
        for device_id, body in self._db.execute("SELECT device_id, body FROM held ORDER BY seq"):
            yield device_id, json.loads(body)

    def hold(self, device_id: str, message_id: str, message: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO held (device_id, message_id, body) VALUES (?, ?, ?)",
                         (device_id, message_id, json.dumps(message)))

    def release(self, device_id: str, message_id: str) -> None:
        self._db.execute("DELETE FROM held WHERE device_id = ? AND message_id = ?", (device_id, message_id))

    def drop_held(self, device_id: str) -> None:
        self._db.execute("DELETE FROM held WHERE device_id = ?", (device_id,))

    def received(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for phone, body in self._db.execute("SELECT phone, body FROM received ORDER BY seq"):
            yield phone, json.loads(body)

    def add_received(self, phone: str, record: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO received (phone, body) VALUES (?, ?)", (phone, json.dumps(record)))

    def close(self) -> None:
        self._db.close()
