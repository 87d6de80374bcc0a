"""The `switchboard` command.

    switchboard serve [--host 127.0.0.1] [--port 3000] [--data-dir DIR]
                      [--transport neonize|simulated] [--simulator-url URL] [--redis-url URL]
    switchboard simulator [--host 127.0.0.1] [--port 4000] [--data-dir DIR]
    switchboard sessions [list | show ID | create ID | start ID | stop ID | reconnect ID | logout ID | delete ID]
    switchboard send ID PHONE TEXT
    switchboard qr ID
    switchboard logs [-f] [--json] [--company ID] [--since TIME] [--limit N]
    switchboard webhooks dead|replay [--company ID] [--id ID ...]

`serve` runs the gateway; flags override the environment (see Config). This module is
the composition root: `serve` builds the board, the HTTP app and the server from the
Config, and nothing else does. The client commands (supervision/client.py) talk to a
running server over HTTP: `--url`, SWITCHBOARD_URL, or the URL a local server wrote to
`<data>/server.json`; the key from `--key`, `SWITCHBOARD_API_KEY`, `SWITCHBOARD_ADMIN_KEY`
or `<data>/admin.key`; `logs` reads `<data>/supervisor.log` directly.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Sequence

from switchboard.http.app import HttpSettings, make_app
from switchboard.http.auth import ApiKeys, load_or_create_admin_key
from switchboard.http.server import GracefulServer

from . import client, cluster_cli, simulator, webhook_commands
from .board import Switchboard
from .cluster import Cluster
from .config import Config, ConfigError
from .progress import RestoreProgress


# ---- serve: the composition root ---------------------------------------------------------------

def serve(args: argparse.Namespace, config: Config) -> int:
    """Run the gateway until SIGTERM/SIGINT: the board, the app and the server, from Config."""
    if args.host:
        config.host = args.host
    if args.port is not None and args.port != 0:    # 0: any free port (the URL printed says which)
        config.port = args.port
    if args.transport:
        config.transport = args.transport
    if args.redis_url:
        config.redis_url = args.redis_url
    _cluster_flags(args, config)
    if args.simulator_url:
        config.simulator_url = args.simulator_url
    config.validate()
    if args.port == 0:
        config.port = 0
    data_dir = config.data_dir.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    admin_key, key_path, generated = load_or_create_admin_key(data_dir, config.admin_key)
    keys = ApiKeys(data_dir / "api-keys.json", admin_key)
    threads = config.http_threads
    settings = HttpSettings(send_wait=config.send_wait, sse_max_streams=config.sse_max_streams,
                            sse_heartbeat=config.sse_heartbeat,
                            # no tenant, and no client address, holds more than its share of the threads
                            max_requests_per_key=max(2, threads // 4), max_requests_per_address=max(4, threads // 2),
                            max_streams_per_address=max(2, config.sse_max_streams // 2))

    _check_port(config.host, config.port)     # before any session starts
    cluster_settings = config.cluster_settings()
    cluster = Cluster(cluster_settings) if cluster_settings is not None else None
    board = Switchboard(data_dir=data_dir, transport=config.transport, settings=config.session_settings(),
                        transport_options=config.transport_options(), sinks=config.sinks(),
                        restore_stagger=config.restore_stagger,
                        redis_url=config.redis_url, cluster=cluster, log_settings=config.log_settings())
    board.start()
    progress = RestoreProgress(board, board.company_ids()).start()      # restored at start: show how it goes
    try:
        app = make_app(board, config, keys, settings)
        server = GracefulServer(app, host=config.host, port=config.port, threads=config.http_threads,
                                drain_timeout=config.drain_seconds)
    except OSError as exc:
        progress.stop()
        board.stop()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    except BaseException:
        progress.stop()
        board.stop()
        raise

    _stop_on_signals(server)
    if cluster is not None and not config.advertise_url:
        cluster.advertise(server.url)
    if key_path is None:
        key_note = "admin key: from SWITCHBOARD_ADMIN_KEY"
    elif generated:
        key_note = f"admin key: generated and stored in {key_path} (mode 0600; read it from there)"
    else:
        key_note = f"admin key: in {key_path}"
    client.write_server_file(data_dir, server.url)      # the client commands find this server by it
    transport = config.transport + (f" at {config.simulator_url}" if config.simulator_url else "")
    mode = f"cluster instance {cluster.id} via Redis" if cluster is not None else "embedded"
    print(f"switchboard: serving {server.url} (transport {transport}, data {data_dir}, {mode}); {key_note}",
          flush=True)
    try:
        server.run()
    finally:
        client.remove_server_file(data_dir)
        progress.stop()
        board.stop()
        print("switchboard: stopped", file=sys.stderr, flush=True)
    return 0


def _cluster_flags(args: argparse.Namespace, config: Config) -> None:
    for flag in ("instance_id", "advertise_url", "capacity", "lease_ttl", "store_url"):
        if getattr(args, flag, None) is not None:
            setattr(config, flag, getattr(args, flag))


def _stop_on_signals(server: GracefulServer) -> None:
    """SIGTERM/SIGINT drain gracefully; a second one stops without waiting."""
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


# ---- argument parsing ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Multi-tenant WhatsApp session gateway")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", help="data directory (default: WHATSAPP_SESSION_PATH or ./data)")
    remote = argparse.ArgumentParser(add_help=False, parents=[data])
    remote.add_argument("--url", help="the server (default: SWITCHBOARD_URL, else the local server's "
                                      "<data>/server.json, else http://127.0.0.1:PORT)")
    remote.add_argument("--key", "--api-key", dest="api_key",
                        help="API key (default: SWITCHBOARD_API_KEY, SWITCHBOARD_ADMIN_KEY, <data>/admin.key)")

    p = commands.add_parser("serve", parents=[data], help="run the gateway")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default PORT or 3000; 0: any free port)")
    p.add_argument("--transport", choices=("neonize", "simulated"), help="default neonize")
    p.add_argument("--redis-url", help="Redis for distributed mode (default REDIS_URL; unset: embedded)")
    p.add_argument("--instance-id", help="distributed mode: this instance's id (default host-pid-random)")
    p.add_argument("--advertise-url", help="distributed mode: where other instances reach this one "
                                           "(default: the listen URL)")
    p.add_argument("--capacity", type=int, help="distributed mode: placement weight, companies this instance "
                                                "is sized for (default 1000)")
    p.add_argument("--lease-ttl", type=float, help="distributed mode: lease TTL in seconds (default 15)")
    p.add_argument("--store-url", help="neonize credentials in PostgreSQL (postgres://user:pw@host/db; a database "
                                       "per company; default SWITCHBOARD_STORE_URL; unset: files in the data dir)")
    p.add_argument("--simulator-url", help="with --transport simulated: link every company to `switchboard "
                                           "simulator` at this URL (default SWITCHBOARD_SIMULATOR_URL; unset: "
                                           "an in-process simulator)")
    p.set_defaults(func=serve)

    simulator.add_parser(commands)

    p = commands.add_parser("cluster", parents=[remote], help="distributed mode: members, drain, undrain")
    p.add_argument("action", nargs="?", choices=("show", "drain", "undrain"), default="show")
    p.add_argument("instance", nargs="?", help="the member to drain or undrain (default: the one at --url)")
    p.set_defaults(func=cluster_cli.cluster)

    p = commands.add_parser("sessions", parents=[remote], help="list or manage sessions")
    p.add_argument("action", nargs="?", default="list",
                   choices=("list", "show", "create", "start", "stop", "reconnect", "logout", "delete"))
    p.add_argument("id", nargs="?", help="company id")
    p.set_defaults(func=client.sessions)

    p = commands.add_parser("send", parents=[remote], help="send a text message")
    p.add_argument("id", help="company id")
    p.add_argument("phone", help="recipient phone number")
    p.add_argument("text", help="message text")
    p.set_defaults(func=client.send)

    p = commands.add_parser("qr", parents=[remote], help="draw the current QR code in the terminal")
    p.add_argument("id", help="company id")
    p.set_defaults(func=client.qr)

    webhook_commands.add_parser(commands, [remote]).set_defaults(func=webhook_commands.webhooks)
    p = commands.add_parser("logs", parents=[data], help="show the supervisor log")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new records (across rotation)")
    p.add_argument("--json", action="store_true", help="the raw JSON lines, as stored")
    p.add_argument("--company", help="only this company")
    p.add_argument("--since", help="ISO time, Unix seconds, or 30s/10m/2h/1d back from now")
    p.add_argument("--limit", type=int, help="only the last N records")
    p.set_defaults(func=client.logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_env()
        if args.data_dir:
            config.data_dir = Path(args.data_dir)
        logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return args.func(args, config)
    except (ConfigError, client.ClientError, ValueError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
