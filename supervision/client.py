"""The client commands of `switchboard`: sessions, send and qr talk to a running server
through switchboard.http.client; logs reads the supervisor log file directly (it works
while the server is down). See cli.py for the usage.

Which server, and which key, without flags (so the commands work from any directory):
  --url, else SWITCHBOARD_URL, else the URL a local `serve` wrote to `<data>/server.json`
  (while it runs), else http://127.0.0.1:PORT;
  --key/--api-key, else SWITCHBOARD_API_KEY, else SWITCHBOARD_ADMIN_KEY, else `<data>/admin.key`.
`<data>` is --data-dir, else WHATSAPP_SESSION_PATH, else ./data (the `switchboard` wrapper
that scripts/setup installs sets WHATSAPP_SESSION_PATH to the repository's data directory).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from switchboard.actors.phone import validate_company_id
from switchboard.http import qr as qr_mod
from switchboard.http.client import ApiError, Client

from .config import Config
from .events import parse_since
from .logview import follow, read_all, render, use_colour

SERVER_FILE = "server.json"


class ClientError(Exception):
    pass


def write_server_file(data_dir: Path, url: str) -> Path:
    """Where a local server says it listens (read by the client commands); mode 0600."""
    path = data_dir / SERVER_FILE
    tmp = path.with_name(SERVER_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "pid": os.getpid()}, f)
    os.replace(tmp, path)
    return path


def remove_server_file(data_dir: Path) -> None:
    try:
        path = data_dir / SERVER_FILE
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def server_url(args: argparse.Namespace, config: Config) -> str:
    if getattr(args, "url", None):
        return args.url
    if os.environ.get("SWITCHBOARD_URL"):
        return os.environ["SWITCHBOARD_URL"]
    try:
        found = json.loads((config.data_dir / SERVER_FILE).read_text())
        os.kill(int(found["pid"]), 0)                 # only while that server runs
        return str(found["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"http://127.0.0.1:{config.port}"


def _client(args: argparse.Namespace, config: Config) -> Client:
    key = getattr(args, "api_key", None) or config.api_key or config.admin_key
    if not key:
        try:
            key = (config.data_dir / "admin.key").read_text().strip()
        except OSError:
            key = None
    return Client(server_url(args, config), key, retries=2)


def _call(fn, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        hint = " (is `switchboard serve` running? --url or SWITCHBOARD_URL says where)" if exc.status == 0 else ""
        raise ClientError(f"{exc}{hint}") from None


def _print(data: dict[str, Any]) -> None:
    data = {k: v for k, v in data.items() if k != "success"}
    print(json.dumps(data, indent=2, ensure_ascii=False))


def sessions(args: argparse.Namespace, config: Config) -> int:
    client = _client(args, config)
    action = args.action or "list"
    if action == "list":
        rows = _call(client.sessions).get("sessions", [])
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
        _print(_call(client.session, args.id))
    elif action == "create":
        _print(_call(client.create_session, args.id))
    elif action == "delete":
        _print(_call(client.delete, args.id))
    else:
        _print(_call(getattr(client, action), args.id))
    return 0


def send(args: argparse.Namespace, config: Config) -> int:
    _print(_call(_client(args, config).send, args.id, args.phone, args.text))
    return 0


def qr(args: argparse.Namespace, config: Config) -> int:
    client = _client(args, config)
    answer = _call(client.qr, args.id)
    print(qr_mod.terminal(answer["qr"]))
    print(f"Scan with WhatsApp > Linked devices > Link a device (expires {answer.get('qrExpiresAt')}).")
    if answer.get("pageUrl"):
        print(f"Browser page (valid 15 min): {client.url}{answer['pageUrl']}")
    return 0


def logs(args: argparse.Namespace, config: Config) -> int:
    path = config.data_dir / "supervisor.log"
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    if args.company:
        validate_company_id(args.company)
    as_json = getattr(args, "json", False)
    colour = not as_json and use_colour(sys.stdout)
    if not args.follow:
        for record in read_all(path, company=args.company, since=since, limit=args.limit):
            print(render(record, as_json, colour))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for record in follow(path, company=args.company, since=since, stop=stop, from_start=True,
                             backlog=args.limit if args.limit is not None else 10):
            print(render(record, as_json, colour), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0
