"""The `switchboard` command.

    switchboard serve [--host 127.0.0.1] [--port 3000] [--data-dir DIR]
                      [--transport neonize|simulated] [--redis-url URL]
    switchboard sessions [list | show ID | start ID | stop ID | logout ID]
    switchboard send ID PHONE TEXT
    switchboard qr ID
    switchboard logs [-f] [--company ID] [--since TIME]

`serve` runs the gateway; flags override the environment (see Config). The client
commands talk to a running server over HTTP (`--url`, default http://127.0.0.1:PORT) with
the key from `--api-key`, `SWITCHBOARD_API_KEY`, `SWITCHBOARD_ADMIN_KEY` or
`<data>/admin.key`. `logs` reads `<data>/supervisor.log` directly.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import signal
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from .config import Config, ConfigError

log = logging.getLogger("switchboard")


# ---- serve ------------------------------------------------------------------------------------

def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ[name]) if os.environ.get(name) else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {os.environ[name]!r}") from None


def serve(args: argparse.Namespace) -> int:
    from switchboard.http.app import HttpSettings, make_app
    from switchboard.http.auth import ApiKeys, load_or_create_admin_key
    from switchboard.http.server import GracefulServer

    from .board import Switchboard

    config = _config(args)
    if args.host:
        config.host = args.host
    if args.port is not None and args.port != 0:    # 0: any free port (the URL printed says which)
        config.port = args.port
    if args.transport:
        config.transport = args.transport
    if args.redis_url:
        config.redis_url = args.redis_url
    config.validate()
    if args.port == 0:
        config.port = 0
    data_dir = config.data_dir.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    admin_key, key_path, generated = load_or_create_admin_key(data_dir, config.admin_key)
    keys = ApiKeys(data_dir / "api-keys.json", admin_key)
    settings = HttpSettings(
        send_wait=_env_float("SWITCHBOARD_SEND_WAIT", 5.0),
        sse_max_streams=int(_env_float("SWITCHBOARD_SSE_MAX_STREAMS", 8)),
        sse_heartbeat=_env_float("SWITCHBOARD_SSE_HEARTBEAT", 15.0),
    )

    board_options: dict[str, Any] = {"settings": config.session_settings()}
    board_params = inspect.signature(Switchboard).parameters
    if config.redis_url:
        if "redis_url" in board_params:
            board_options["redis_url"] = config.redis_url
        else:
            print("switchboard: Redis is not supported by this build yet; running embedded (memory limiter, "
                  "file locks)", file=sys.stderr)
    webhook = config.webhook_config()
    if webhook is not None:
        from .sinks.webhook import WebhookSink
        board_options["sinks"] = [WebhookSink.factory(webhook)]
    if config.transport == "neonize" and "transport_options" in board_params:
        options = {"device_name": config.device_name, "proxy": config.proxy, "go_log_level": config.go_log_level}
        try:
            from switchboard.actors.transports.neonize import NeonizeTransport
            accepted = inspect.signature(NeonizeTransport).parameters
            options = {k: v for k, v in options.items() if k in accepted and v is not None}
        except ImportError as exc:
            print(f"switchboard: the neonize transport is not available: {exc}", file=sys.stderr)
            return 2
        board_options["transport_options"] = options

    _check_port(config.host, config.port)     # before any session starts
    board = Switchboard(data_dir=data_dir, transport=config.transport, **board_options)
    board.start()
    try:
        app = make_app(board, config, keys, settings)
        server = GracefulServer(app, host=config.host, port=config.port, threads=config.http_threads,
                                drain_timeout=_env_float("SWITCHBOARD_DRAIN_SECONDS", 15.0))
    except OSError as exc:
        board.stop()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    except BaseException:
        board.stop()
        raise

    signals_seen = []

    def on_signal(signum: int, _frame: Any) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            print(f"switchboard: {signal.Signals(signum).name}: stopping (draining requests, stopping sessions)",
                  file=sys.stderr, flush=True)
            server.shutdown()
        else:
            print("switchboard: stopping now, without waiting for requests in flight", file=sys.stderr, flush=True)
            server.shutdown(force=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if key_path is None:
        key_note = "admin key: from SWITCHBOARD_ADMIN_KEY"
    elif generated:
        key_note = f"admin key: generated and stored in {key_path} (mode 0600; read it from there)"
    else:
        key_note = f"admin key: in {key_path}"
    print(f"switchboard: serving {server.url} (transport {config.transport}, data {data_dir}); {key_note}",
          flush=True)
    try:
        server.run()
    finally:
        board.stop()
        print("switchboard: stopped", file=sys.stderr, flush=True)
    return 0


def _check_port(host: str, port: int) -> None:
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _config(args: argparse.Namespace) -> Config:
    config = Config.from_env()
    if getattr(args, "data_dir", None):
        config.data_dir = Path(args.data_dir)
    return config


# ---- HTTP client commands --------------------------------------------------------------------

class ClientError(Exception):
    pass


class Client:
    def __init__(self, url: str, key: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if self.key:
            request.add_header("X-Api-Key", self.key)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read()).get("error")
            except ValueError:
                error = exc.reason
            raise ClientError(f"HTTP {exc.code}: {error}") from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc.reason} (is `switchboard serve` running?)") from None


def _client(args: argparse.Namespace) -> Client:
    config = _config(args)
    url = args.url or f"http://127.0.0.1:{config.port}"
    key = args.api_key or os.environ.get("SWITCHBOARD_API_KEY") or config.admin_key
    if not key:
        try:
            key = (config.data_dir / "admin.key").read_text().strip()
        except OSError:
            key = None
    return Client(url, key)


def _quote(company_id: str) -> str:
    return urllib.parse.quote(company_id, safe="")


def _print(data: dict[str, Any]) -> None:
    data = {k: v for k, v in data.items() if k != "success"}
    print(json.dumps(data, indent=2, ensure_ascii=False))


def sessions(args: argparse.Namespace) -> int:
    client = _client(args)
    action = args.action or "list"
    if action == "list":
        answer = client.call("GET", "/api/whatsapp/sessions")
        rows = answer.get("sessions", [])
        if not rows:
            print("no sessions")
            return 0
        print(f"{'COMPANY':<24} {'STATUS':<13} {'PHONE':<16} {'QUEUED':>6}  LAST ERROR")
        for s in rows:
            print(f"{s.get('companyId', ''):<24} {s.get('status', ''):<13} {s.get('phoneNumber') or '-':<16} "
                  f"{s.get('queued', 0):>6}  {s.get('lastError') or ''}")
        return 0
    if not args.id:
        raise ClientError(f"sessions {action} needs a company id")
    if action == "show":
        _print(client.call("GET", f"/api/whatsapp/sessions/{_quote(args.id)}"))
    else:
        _print(client.call("POST", f"/api/whatsapp/sessions/{_quote(args.id)}/{action}"))
    return 0


def send(args: argparse.Namespace) -> int:
    answer = _client(args).call("POST", f"/api/whatsapp/sessions/{_quote(args.id)}/send",
                                {"phone": args.phone, "message": args.text})
    _print(answer)
    return 0


def qr(args: argparse.Namespace) -> int:
    from switchboard.http import qr as qr_mod

    client = _client(args)
    answer = client.call("GET", f"/api/whatsapp/sessions/{_quote(args.id)}/qr")
    print(qr_mod.terminal(answer["qr"]))
    print(f"Scan with WhatsApp > Linked devices > Link a device (expires {answer.get('qrExpiresAt')}).")
    if answer.get("pageUrl"):
        print(f"Browser page (valid 15 min): {client.url}{answer['pageUrl']}")
    return 0


def logs(args: argparse.Namespace) -> int:
    from .events import follow_log, parse_since, read_log

    config = _config(args)
    path = config.data_dir / "supervisor.log"
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    if args.company:
        from switchboard.actors.phone import validate_company_id
        validate_company_id(args.company)
    if not args.follow:
        for record in read_log(path, company=args.company, since=since, limit=args.limit):
            print(json.dumps(record, ensure_ascii=False))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for record in follow_log(path, company=args.company, since=since, stop=stop):
            print(json.dumps(record, ensure_ascii=False), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


# ---- argument parsing ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Multi-tenant WhatsApp session gateway")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", help="data directory (default: WHATSAPP_SESSION_PATH or ./data)")
    client = argparse.ArgumentParser(add_help=False, parents=[data])
    client.add_argument("--url", help="the server (default http://127.0.0.1:PORT)")
    client.add_argument("--api-key", help="API key (default: SWITCHBOARD_API_KEY, SWITCHBOARD_ADMIN_KEY, "
                                          "<data>/admin.key)")

    p = commands.add_parser("serve", parents=[data], help="run the gateway")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default PORT or 3000; 0: any free port)")
    p.add_argument("--transport", choices=("neonize", "simulated"), help="default neonize")
    p.add_argument("--redis-url", help="Redis for distributed mode (default REDIS_URL; unset: embedded)")
    p.set_defaults(func=serve)

    p = commands.add_parser("sessions", parents=[client], help="list or manage sessions")
    p.add_argument("action", nargs="?", choices=("list", "show", "start", "stop", "logout"), default="list")
    p.add_argument("id", nargs="?", help="company id")
    p.set_defaults(func=sessions)

    p = commands.add_parser("send", parents=[client], help="send a text message")
    p.add_argument("id", help="company id")
    p.add_argument("phone", help="recipient phone number")
    p.add_argument("text", help="message text")
    p.set_defaults(func=send)

    p = commands.add_parser("qr", parents=[client], help="draw the current QR code in the terminal")
    p.add_argument("id", help="company id")
    p.set_defaults(func=qr)

    p = commands.add_parser("logs", parents=[data], help="show the supervisor log")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    p.add_argument("--company", help="only this company")
    p.add_argument("--since", help="ISO time, Unix seconds, or 30s/10m/2h/1d back from now")
    p.add_argument("--limit", type=int, help="only the last N records")
    p.set_defaults(func=logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("SWITCHBOARD_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigError, ClientError, ValueError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
