"""The company's record (`<company dir>/session.json`): what must survive the actor.

Desired state (should it be connected?), the resting state and its reason (so a
restarted actor still knows why it is down), and the linked phone. Loaded once when the
actor starts, kept in memory, and written (atomically, 0600) only when a field changes.
Keys this version does not know are kept as they are.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE = "session.json"
# attribute name -> the key it is stored under (session.json, the shared Redis hash)
FIELDS = {"desired": "desired", "state": "state", "last_error": "lastError", "phone": "phone"}
_FIELDS = FIELDS


class RecordFields:
    """The record's fields as attributes, over `_data` (stored keys -> values)."""
    _data: dict[str, Any]

    @property
    def desired(self) -> str | None:
        """"running" or "stopped"; None for a company never started."""
        return self._data.get("desired")

    @property
    def state(self) -> str | None:
        return self._data.get("state")

    @property
    def last_error(self) -> str | None:
        return self._data.get("lastError")

    @property
    def phone(self) -> str | None:
        return self._data.get("phone")

    def _changed(self, changes: dict[str, Any]) -> dict[str, Any] | None:
        """`_data` with `changes` applied, or None when nothing changes."""
        data = dict(self._data)
        for name, value in changes.items():
            data[_FIELDS[name]] = value
        return None if data == self._data else data


class SessionRecord(RecordFields):
    def __init__(self, company_dir: Path, company_id: str = "") -> None:
        self._path = company_dir / FILE
        self._company_id = company_id
        self._data = self._load()

    def update(self, **changes: Any) -> None:
        """Set fields (desired, state, last_error, phone) and write the file if any changed.
        A failed write is logged, not raised: the actor keeps running on what it knows."""
        data = self._changed(changes)
        if data is None:
            return
        self._data = data
        tmp = self._path.with_name(FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self._path)
        except OSError:
            log.exception("[%s] could not save %s", self._company_id, FILE)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
