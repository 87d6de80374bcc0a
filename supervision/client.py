"""The client commands of `switchboard`: sessions, send and qr talk to a running server
over HTTP; logs reads the supervisor log file directly. See cli.py for the usage."""
from __future__ import annotations

import argparse
import json
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from switchboard.actors.phone import validate_company_id
from switchboard.http import qr as qr_mod

from .config import Config
from .events import follow_log, parse_since, read_log


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


def _client(args: argparse.Namespace, config: Config) -> Client:
    url = args.url or f"http://127.0.0.1:{config.port}"
    key = args.api_key or config.api_key or config.admin_key
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


def sessions(args: argparse.Namespace, config: Config) -> int:
    client = _client(args, config)
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


def send(args: argparse.Namespace, config: Config) -> int:
    answer = _client(args, config).call("POST", f"/api/whatsapp/sessions/{_quote(args.id)}/send",
                                        {"phone": args.phone, "message": args.text})
    _print(answer)
    return 0


def qr(args: argparse.Namespace, config: Config) -> int:
    client = _client(args, config)
    answer = client.call("GET", f"/api/whatsapp/sessions/{_quote(args.id)}/qr")
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
