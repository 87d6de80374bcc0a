"""The idempotency window: how many keys a company remembers after their sends went out (configurable)."""
from __future__ import annotations

from switchboard.actors.outbox import Outbox, OutboxEntry
from switchboard.actors.payload import Text
from switchboard.supervision.config import Config, ConfigError

import pytest


def test_the_window_keeps_the_newest_keys_across_a_restart(tmp_path):
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path, keys_kept=3)
    for n in range(5):
        box.add(OutboxEntry(id=f"e{n}", to="7900", jid="7900@s.whatsapp.net", payload=Text("x"), key=f"k{n}"))
        box.done(f"e{n}", f"3EB{n}")
    assert [k for k in ("k0", "k1", "k2", "k3", "k4") if box.by_key(k)] == ["k2", "k3", "k4"]
    box.close()
    again = Outbox(path, keys_kept=3)
    assert again.by_key("k4").message_id == "3EB4" and again.by_key("k0") is None
    again.close()


def test_the_window_is_configured_by_environment():
    assert Config.from_env({"SWITCHBOARD_IDEMPOTENCY_KEYS": "5000"}).session_settings().idempotency_keys == 5000
    assert Config.from_env({}).session_settings().idempotency_keys == 1000
    with pytest.raises(ConfigError):
        Config.from_env({"SWITCHBOARD_IDEMPOTENCY_KEYS": "0"})
