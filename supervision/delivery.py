"""Delivery: the durable event log and everything that reads it.

Built by the board at start (before any session runs, so no event precedes the sinks'
cursors): the `EventLog`, a `SinkRunner` per sink (the configured ones, and one per
company webhook), and the webhook dead letters. Company webhooks are kept in
`<data>/webhooks.json` (written atomically, mode 0600: it holds their secrets).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from .eventlog import EventLog, LogSettings
from .sinks import Sink, SinkFactory, SinkRunner
from .sinks.dead_letters import DeadLetters
from .sinks.webhook import DEFAULT_KINDS, DEFAULT_RETRY, WebhookConfig, WebhookSink

log = logging.getLogger(__name__)


class Delivery:
    def __init__(self, data_dir: Path, log_settings: LogSettings | None = None,
                 webhook_retry: Any = DEFAULT_RETRY) -> None:
        self.data_dir = data_dir
        self.log = EventLog(data_dir / "events", log_settings)
        self.webhook_retry = webhook_retry
        self._lock = threading.Lock()
        self.runners: dict[str, SinkRunner] = {}
        self.dead = DeadLetters(data_dir / "webhooks-dead.jsonl", self._sink_named)
        self._webhooks_path = data_dir / "webhooks.json"
        self._company_webhooks: dict[str, WebhookConfig] = {}

    def start(self, factories: Iterable[SinkFactory]) -> None:
        for make in factories:
            self.add_sink(make(self.data_dir))
        for company_id, config in self._load_webhooks().items():
            self._company_webhooks[company_id] = config
            self.add_sink(WebhookSink(config, company_id=company_id))
        self._migrate()

    def _migrate(self) -> None:
        """A data directory of the design before the event log: the webhook deliveries it
        had not confirmed (`webhooks.jsonl`) are appended to the log, so the sinks deliver
        them; the ids of `<company>/inbound-seen.jsonl` count as seen. Each file is renamed
        `*.migrated` once done."""
        from switchboard.actors.journal import Journal
        old = self.data_dir / "webhooks.jsonl"
        if old.exists():
            pending: dict[str, dict[str, Any]] = {}
            for record in Journal(old).read():
                if record.get("op") == "add" and isinstance(record.get("body"), dict):
                    pending[str(record.get("key"))] = record["body"]
                elif record.get("op") == "done":
                    pending.pop(str(record.get("key")), None)
            for body in pending.values():
                try:
                    self.log.append(body.get("companyId"), str(body.get("event")), dict(body.get("data") or {}))
                except (OSError, ValueError, TypeError):
                    log.exception("migrating %s: a pending webhook delivery could not be logged", old)
                    return
            old.rename(old.with_name("webhooks.jsonl.migrated"))
            log.warning("migrated %d unconfirmed webhook deliveries from %s into the event log", len(pending), old)
        for seen in self.data_dir.glob("*/inbound-seen.jsonl"):
            ids = [str(r.get("id")) for r in Journal(seen).read() if r.get("id") is not None]
            self.log.remember(seen.parent.name, ids)
            seen.rename(seen.with_name("inbound-seen.jsonl.migrated"))

    def add_sink(self, sink: Sink) -> SinkRunner:
        attach = getattr(sink, "attach", None)
        if attach is not None:
            attach(self)
        with self._lock:
            if sink.name in self.runners:
                raise ValueError(f"two sinks named {sink.name!r}: each needs its own cursor")
            runner = self.runners[sink.name] = SinkRunner(self.log, sink)
        return runner

    def remove_sink(self, name: str, *, forget: bool = False) -> None:
        """Stop a sink without waiting for a request it has in flight (a slow endpoint must
        not hold up the API call that deletes it): its thread ends by itself after that
        request, closing the sink. Its progress is saved now, or deleted (`forget`)."""
        with self._lock:
            runner = self.runners.pop(name, None)
        if runner is None:
            return
        runner.cursor.save()
        if forget:
            runner.cursor.delete()
        runner.abandon()

    def close(self) -> None:
        with self._lock:
            runners, self.runners = list(self.runners.values()), {}
        for runner in runners:           # all at once: shutdown waits for the slowest, not the sum
            runner.stop_soon()
        deadline = time.monotonic() + 5.0
        for runner in runners:
            runner.close(max(0.1, deadline - time.monotonic()))
        self.dead.close()
        self.log.close()

    # ---- company webhooks -------------------------------------------------------------------

    def webhook(self, company_id: str) -> WebhookConfig | None:
        return self._company_webhooks.get(company_id)

    def set_webhook(self, company_id: str, url: str, secret: str | None, kinds: Iterable[str] | None) -> WebhookConfig:
        """Create or replace a company's webhook (ValueError for a bad one). A replaced
        webhook keeps its cursor: what was not delivered yet goes to the new URL."""
        config = WebhookConfig(url=url, secret=secret, kinds=tuple(kinds) if kinds is not None else DEFAULT_KINDS,
                               retry=self.webhook_retry)
        with self._lock:
            self._company_webhooks[company_id] = config
            self._save_webhooks()
            runner = self.runners.get(f"webhook-{company_id}")
        if runner is not None:
            runner.sink.reconfigure(config)      # the same thread and cursor: no thread per PUT
        else:
            self.add_sink(WebhookSink(config, company_id=company_id))
        return config

    def delete_webhook(self, company_id: str) -> bool:
        with self._lock:
            existed = self._company_webhooks.pop(company_id, None) is not None
            if existed:
                self._save_webhooks()
        self.remove_sink(f"webhook-{company_id}", forget=True)
        return existed

    def _sink_named(self, name: str) -> Any:
        runner = self.runners.get(name)
        return runner.sink if runner is not None else None

    def _load_webhooks(self) -> dict[str, WebhookConfig]:
        try:
            raw = json.loads(self._webhooks_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("company webhooks: %s cannot be read (%s); no company webhook runs until it is fixed",
                      self._webhooks_path, exc)
            return {}
        found = {}
        for company_id, entry in (raw.items() if isinstance(raw, dict) else ()):
            try:
                found[company_id] = WebhookConfig(url=entry["url"], secret=entry.get("secret"),
                                                  kinds=tuple(entry.get("events") or DEFAULT_KINDS),
                                                  retry=self.webhook_retry)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("company webhooks: %s: the entry of %s is invalid (%s); skipped",
                          self._webhooks_path, company_id, exc)
        return found

    def _save_webhooks(self) -> None:
        data = {cid: {"url": c.url, "secret": c.secret, "events": list(c.kinds)}
                for cid, c in sorted(self._company_webhooks.items())}
        tmp = self._webhooks_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._webhooks_path)
