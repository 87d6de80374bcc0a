"""Configuration: environment variables (the names of the replaced system where they
exist), overridden by command-line flags. Every environment variable the gateway and
its command line read is read here, in `Config.from_env`."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.lease import LeasePolicy
from switchboard.actors.context import SessionSettings
from switchboard.actors.ratelimit import RateLimit
from switchboard.actors.transports.neonize.pgstore import validate_store_url
from switchboard.actors.transports.proxy import validate_proxy

from .cluster import ClusterSettings
from .eventlog import FSYNC_POLICIES, LogSettings
from .sinks import SinkFactory
from .sinks.redis_stream import DEFAULT_MAXLEN, DEFAULT_STREAM, RedisStreamSink
from .sinks.webhook import DEFAULT_KINDS, WebhookConfig, WebhookSink


class ConfigError(ValueError):
    pass


@dataclasses.dataclass
class Config:
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 3000
    transport: str = "neonize"                 # neonize | simulated
    redis_url: str | None = None
    admin_key: str | None = None
    rate_limit_window_ms: int = 60_000
    rate_limit_max: int = 30
    rate_limit_per_recipient_max: int = 10
    health_check_interval_ms: int = 30_000
    max_reconnect_attempts: int = 10
    reconnect_base_delay_ms: int = 5_000
    reconnect_max_delay_ms: int = 300_000      # retries never stop for a cause that can heal: cap them
    device_name: str = "Switchboard"
    proxy: str | None = None                   # http:// or socks5:// for every company's neonize client
    go_log_level: str = "WARNING"
    fsync: bool = False
    http_threads: int = 16
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_events: str | None = None          # comma-separated event kinds; default: see sinks/webhook.py
    send_wait: float = 5.0                     # seconds a send waits for WhatsApp's ack before answering 202
    sse_max_streams: int = 8                   # concurrent event streams (each pins a worker thread)
    sse_heartbeat: float = 15.0                # seconds between event stream pings
    drain_seconds: float = 15.0                # how long a shutdown waits for requests in flight
    log_level: str = "WARNING"
    api_key: str | None = None                 # the client commands' key (else the admin key)
    # distributed mode (only with redis_url)
    instance_id: str | None = None             # default: host-pid-random
    advertise_url: str | None = None           # where other instances reach this one (default: the listen URL)
    capacity: int = 1000                       # placement weight: companies this instance is sized for
    lease_ttl: float = 15.0                    # seconds; takeover after a crash takes about this long
    store_url: str | None = None               # postgres://: neonize credentials there (a database per company)
    # the durable event log and its sinks (supervision/eventlog.py, sinks/)
    events_fsync: str | None = None            # always | interval | never; None: interval (always if fsync)
    events_max_mb: int = 64                    # retention: the log's size on disk
    redis_stream: str = DEFAULT_STREAM         # with a Redis URL, every event is XADDed here
    redis_stream_maxlen: int = DEFAULT_MAXLEN
    idempotency_keys: int = 1000               # the idempotency window, per company (see README)
    # Start-up at scale (neonize): how children start, how many start up at once, and the
    # delay between restored companies' first attempts (None: the gateway's default).
    neonize_start: str = "forkserver"          # forkserver | spawn
    neonize_max_starting: int = 0              # 0: the number of CPUs (at least 2)
    restore_stagger: float | None = None
    simulator_url: str | None = None           # simulated transport: `switchboard simulator` at this URL
    simulator_key: str | None = None           # `switchboard simulator`'s admin key (else <data>/admin.key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        config = cls()
        ints = {
            "WHATSAPP_RATE_LIMIT_WINDOW": "rate_limit_window_ms",
            "WHATSAPP_RATE_LIMIT_MAX": "rate_limit_max",
            "WHATSAPP_RATE_LIMIT_PER_RECIPIENT_MAX": "rate_limit_per_recipient_max",
            "WHATSAPP_HEALTH_CHECK_INTERVAL": "health_check_interval_ms",
            "WHATSAPP_MAX_RECONNECT_ATTEMPTS": "max_reconnect_attempts",
            "WHATSAPP_RECONNECT_BASE_DELAY": "reconnect_base_delay_ms",
            "WHATSAPP_RECONNECT_MAX_DELAY": "reconnect_max_delay_ms",
            "PORT": "port",
            "SWITCHBOARD_HTTP_THREADS": "http_threads",
            "SWITCHBOARD_SSE_MAX_STREAMS": "sse_max_streams",
            "SWITCHBOARD_CAPACITY": "capacity",
            "SWITCHBOARD_EVENTS_MAX_MB": "events_max_mb",
            "SWITCHBOARD_REDIS_STREAM_MAXLEN": "redis_stream_maxlen",
            "SWITCHBOARD_IDEMPOTENCY_KEYS": "idempotency_keys",
            "SWITCHBOARD_NEONIZE_MAX_STARTING": "neonize_max_starting",
        }
        floats = {"SWITCHBOARD_SEND_WAIT": "send_wait", "SWITCHBOARD_SSE_HEARTBEAT": "sse_heartbeat",
                  "SWITCHBOARD_DRAIN_SECONDS": "drain_seconds", "SWITCHBOARD_LEASE_TTL": "lease_ttl",
                  "SWITCHBOARD_RESTORE_STAGGER": "restore_stagger"}
        for kind, names in ((int, ints), (float, floats)):
            for name, field in names.items():
                if env.get(name):
                    setattr(config, field, _number(kind, name, env[name]))
        strings = {
            "WHATSAPP_SESSION_PATH": "data_dir", "REDIS_URL": "redis_url", "SWITCHBOARD_ADMIN_KEY": "admin_key",
            "SWITCHBOARD_TRANSPORT": "transport", "SWITCHBOARD_HOST": "host",
            "SWITCHBOARD_DEVICE_NAME": "device_name", "WHATSAPP_PROXY": "proxy",
            "SWITCHBOARD_GO_LOG_LEVEL": "go_log_level",
            "WEBHOOK_URL": "webhook_url", "WEBHOOK_SECRET": "webhook_secret", "WEBHOOK_EVENTS": "webhook_events",
            "SWITCHBOARD_LOG_LEVEL": "log_level", "SWITCHBOARD_API_KEY": "api_key",
            "SWITCHBOARD_INSTANCE_ID": "instance_id", "SWITCHBOARD_ADVERTISE_URL": "advertise_url",
            "SWITCHBOARD_STORE_URL": "store_url",
            "SWITCHBOARD_EVENTS_FSYNC": "events_fsync", "SWITCHBOARD_REDIS_STREAM": "redis_stream",
            "SWITCHBOARD_NEONIZE_START": "neonize_start",
            "SWITCHBOARD_SIMULATOR_URL": "simulator_url", "SWITCHBOARD_SIMULATOR_KEY": "simulator_key",
        }
        for name, field in strings.items():
            if env.get(name):
                setattr(config, field, Path(env[name]) if field == "data_dir" else env[name])
        if env.get("SWITCHBOARD_FSYNC"):
            config.fsync = env["SWITCHBOARD_FSYNC"].lower() in ("1", "true", "yes")
        config.validate()
        return config

    def validate(self) -> None:
        if self.transport not in ("neonize", "simulated"):
            raise ConfigError(f"transport must be neonize or simulated, not {self.transport!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, not {self.port}")
        for field in ("rate_limit_window_ms", "rate_limit_max", "rate_limit_per_recipient_max",
                      "health_check_interval_ms", "max_reconnect_attempts", "reconnect_base_delay_ms",
                      "reconnect_max_delay_ms", "http_threads"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"{field} must be positive")
        for field in ("send_wait", "sse_max_streams", "drain_seconds"):
            if getattr(self, field) < 0:
                raise ConfigError(f"{field} must not be negative")
        if self.neonize_start not in ("forkserver", "spawn"):
            raise ConfigError(f"SWITCHBOARD_NEONIZE_START must be forkserver or spawn, not {self.neonize_start!r}")
        if self.neonize_max_starting < 0 or (self.restore_stagger is not None and self.restore_stagger < 0):
            raise ConfigError("neonize_max_starting and restore_stagger must not be negative")
        if self.sse_heartbeat <= 0:
            raise ConfigError("sse_heartbeat must be positive")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"SWITCHBOARD_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                              f"not {self.log_level!r}")
        if self.proxy:
            try:
                validate_proxy(self.proxy)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.simulator_url:
            check_simulator_url(self.simulator_url)
            if self.transport != "simulated":
                raise ConfigError("--simulator-url needs --transport simulated")
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ConfigError("WEBHOOK_URL must start with http:// or https://")
        if self.events_fsync is not None and self.events_fsync not in FSYNC_POLICIES:
            raise ConfigError(f"SWITCHBOARD_EVENTS_FSYNC must be one of {', '.join(FSYNC_POLICIES)}, "
                              f"not {self.events_fsync!r}")
        if self.events_max_mb <= 0 or self.redis_stream_maxlen <= 0 or self.idempotency_keys <= 0:
            raise ConfigError("SWITCHBOARD_EVENTS_MAX_MB, SWITCHBOARD_REDIS_STREAM_MAXLEN and SWITCHBOARD_IDEMPOTENCY_KEYS "
                              "must be positive")
        if not 1 <= len(self.redis_stream) <= 200:
            raise ConfigError("SWITCHBOARD_REDIS_STREAM must be 1-200 characters")
        self._validate_cluster()

    def _validate_cluster(self) -> None:
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.capacity <= 0:
            raise ConfigError("capacity must be positive")
        if not 2.0 <= self.lease_ttl <= 300.0:
            raise ConfigError("the lease TTL must be from 2 to 300 seconds")
        if self.instance_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", self.instance_id):
            raise ConfigError("the instance id must be 1-100 letters, digits, '_', '.' or '-'")
        if self.advertise_url and not self.advertise_url.startswith(("http://", "https://")):
            raise ConfigError("the advertised URL must start with http:// or https://")
        if self.store_url:
            try:
                validate_store_url(self.store_url)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def cluster_settings(self) -> ClusterSettings | None:
        """Distributed mode's settings; None in embedded mode (no Redis)."""
        if not self.redis_url:
            return None
        ttl = self.lease_ttl
        # Renew five times a TTL; allow 30% of it (at most 5 s) to close a connection.
        lease = LeasePolicy(ttl=ttl, renew_every=ttl / 5, close_budget=min(5.0, ttl * 0.3))
        return ClusterSettings(self.redis_url, url=self.advertise_url or "", instance_id=self.instance_id,
                               capacity=self.capacity, lease=lease, tick=min(1.0, ttl / 10))

    def webhook_config(self) -> WebhookConfig | None:
        if not self.webhook_url:
            return None
        kinds = tuple(k.strip() for k in self.webhook_events.split(",") if k.strip()) if self.webhook_events \
            else DEFAULT_KINDS
        return WebhookConfig(url=self.webhook_url, secret=self.webhook_secret, kinds=kinds)

    def sinks(self) -> list[SinkFactory]:
        """The sinks events go to besides the supervisor log: one line per kind of sink
        (company webhooks are added at run time, through the API)."""
        webhook = self.webhook_config()
        sinks = [WebhookSink.factory(webhook)] if webhook is not None else []
        if self.redis_url:
            sinks.append(RedisStreamSink.factory(self.redis_url, self.redis_stream, self.redis_stream_maxlen))
        return sinks

    def log_settings(self) -> LogSettings:
        fsync = self.events_fsync or ("always" if self.fsync else "interval")
        max_bytes = self.events_max_mb << 20
        return LogSettings(fsync=fsync, max_bytes=max_bytes, segment_bytes=min(32 << 20, max(1 << 20, max_bytes // 8)))

    def transport_options(self) -> dict[str, Any]:
        """What the transport is built with: the neonize client's options (set ones only)."""
        if self.transport == "simulated":
            return {"simulator_url": self.simulator_url} if self.simulator_url else {}
        if self.transport != "neonize":
            return {}
        options = {"device_name": self.device_name, "proxy": self.proxy, "go_log_level": self.go_log_level,
                   "store_url": self.store_url,
                   "start_method": self.neonize_start, "max_starting": self.neonize_max_starting}
        return {k: v for k, v in options.items() if v is not None}

    def session_settings(self) -> SessionSettings:
        return SessionSettings(
            backoff=BackoffPolicy(base=self.reconnect_base_delay_ms / 1000, cap=self.reconnect_max_delay_ms / 1000,
                                  max_attempts=self.max_reconnect_attempts),
            rate_limit=RateLimit(max_messages=self.rate_limit_max, window=self.rate_limit_window_ms / 1000,
                                 per_recipient_max=self.rate_limit_per_recipient_max),
            health_interval=self.health_check_interval_ms / 1000,
            fsync=self.fsync,
            idempotency_keys=self.idempotency_keys,
        )


def check_simulator_url(url: str) -> str:
    """http://host:port of `switchboard simulator` (its control API; links are asked from it)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"the simulator URL must be http://host:port, not {url!r}")
    return url


def _number(kind: type[int] | type[float], name: str, value: str) -> int | float:
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, not {value!r}") from None
