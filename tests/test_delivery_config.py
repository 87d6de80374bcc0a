"""Delivery configuration: the idempotency window (keys a company remembers after their sends went
out), the event log's durability and retention, and which sinks run."""
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


def test_the_event_log_and_its_sinks_are_configured_by_environment():
    from switchboard.supervision.sinks.redis_stream import RedisStreamSink  # noqa: F401

    config = Config.from_env({"SWITCHBOARD_EVENTS_FSYNC": "always", "SWITCHBOARD_EVENTS_MAX_MB": "16"})
    settings = config.log_settings()
    assert settings.fsync == "always" and settings.max_bytes == 16 << 20
    assert Config.from_env({}).log_settings().fsync == "interval"
    assert Config.from_env({"SWITCHBOARD_FSYNC": "1"}).log_settings().fsync == "always"
    for bad in ({"SWITCHBOARD_EVENTS_FSYNC": "sometimes"}, {"SWITCHBOARD_EVENTS_MAX_MB": "0"},
                {"SWITCHBOARD_REDIS_STREAM_MAXLEN": "-1"}, {"WEBHOOK_URL": "ftp://x"}):
        with pytest.raises(ConfigError):
            Config.from_env(bad)
    assert Config.from_env({}).sinks() == []
    with_both = Config.from_env({"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_URL": "http://127.0.0.1:1/h"})
    assert len(with_both.sinks()) == 2
