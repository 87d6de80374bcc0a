"""`switchboard simulator`: the simulated WhatsApp as its own loopback service.

The composition root of the service, as `serve` is the gateway's: the network (with its
memory in the data directory), the link server gateways connect to, and the control API
over HTTP. The control API needs the simulator's admin key (SWITCHBOARD_SIMULATOR_KEY,
else `<data>/admin.key`, generated with mode 0600); links need none (like WhatsApp, anyone
may open a QR session; a linked device's credentials are its own secret), so the service
listens on loopback unless told otherwise, and says so when it is not.
"""
from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
from pathlib import Path
from typing import Any

from switchboard.actors.transports.simulated import SimulatedNetwork
from switchboard.actors.transports.simulated.service import LinkServer
from switchboard.http.auth import load_or_create_admin_key
from switchboard.http.server import GracefulServer
from switchboard.http.simulator import make_service_app

from .config import Config, ConfigError

DEFAULT_DATA = Path("simulator-data")


def add_parser(commands: Any) -> None:
    p = commands.add_parser("simulator", help="run the simulated WhatsApp as a loopback service")
    p.add_argument("--host", default="127.0.0.1", help="listen address for the API and the links (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4000, help="control API port (default 4000; 0: any free port)")
    p.add_argument("--link-port", type=int, default=0,
                   help="port gateways link to (default: any free port; they ask GET /api/simulator/link)")
    p.add_argument("--data-dir", help=f"where linked devices and held messages are kept (default ./{DEFAULT_DATA})")
    p.add_argument("--qr-first", type=float, default=60.0, help="seconds the first QR code lasts (default 60)")
    p.add_argument("--qr-next", type=float, default=20.0, help="seconds each later QR code lasts (default 20)")
    p.add_argument("--qr-count", type=int, default=6, help="QR codes before the login times out (default 6)")
    p.add_argument("--ack-deadline", type=float, default=75.0,
                   help="seconds before an unanswered send fails as unconfirmed, as whatsmeow's (default 75)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, config: Config) -> int:
    """Serve until SIGTERM/SIGINT; then stop accepting, close every link, keep the data."""
    if not 0 <= args.port < 65536 or not 0 <= args.link_port < 65536:
        raise ConfigError("ports must be 0-65535")
    if args.qr_first <= 0 or args.qr_next <= 0 or args.qr_count < 1 or args.ack_deadline <= 0:
        raise ConfigError("QR timings, QR count and the ack deadline must be positive")
    data_dir = Path(args.data_dir or DEFAULT_DATA).resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    admin_key, key_path, generated = load_or_create_admin_key(data_dir, config.simulator_key)
    network = SimulatedNetwork(qr_first=args.qr_first, qr_next=args.qr_next, qr_count=args.qr_count,
                               ack_deadline=args.ack_deadline, data_dir=data_dir)
    links: LinkServer | None = None
    try:
        links = LinkServer(network, args.host, args.link_port).start()
        app = make_service_app(network, admin_key, (args.host, links.port), data_dir)
        server = GracefulServer(app, host=args.host, port=args.port, threads=8, drain_timeout=5)
    except OSError as exc:
        _stop(links, network)
        raise ConfigError(f"cannot listen on {args.host}: {exc.strerror or exc}") from None
    except BaseException:
        _stop(links, network)
        raise

    seen: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        seen.append(signum)
        server.shutdown(force=len(seen) > 1)       # a second signal: stop without waiting
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if key_path is None:
        key_note = "admin key: from SWITCHBOARD_SIMULATOR_KEY"
    else:
        key_note = f"admin key: {'generated and stored' if generated else 'in'} {key_path}"
    print(f"switchboard simulator: serving {server.url} (links on {args.host}:{links.port}, data {data_dir}); "
          f"{key_note}", flush=True)
    if not _loopback(args.host):
        print(f"switchboard simulator: warning: {args.host} is not loopback; links are not authenticated",
              file=sys.stderr, flush=True)
    try:
        server.run()
    finally:
        _stop(links, network)
        print("switchboard simulator: stopped", file=sys.stderr, flush=True)
    return 0


def _stop(links: LinkServer | None, network: SimulatedNetwork) -> None:
    if links is not None:
        links.stop()
    network.close()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
