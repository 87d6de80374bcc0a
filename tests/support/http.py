"""Shared helpers for the HTTP tests: a real board, the app, and a waitress server on a free port."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from switchboard.actors.backoff import BackoffPolicy
from switchboard.actors.ratelimit import RateLimit
from switchboard.actors.context import SessionSettings
from switchboard.actors.transports.simulated import SimulatedTransport
from switchboard.http.app import HttpSettings, make_app
from switchboard.http.auth import ApiKeys
from switchboard.http.server import GracefulServer
from switchboard.supervision import Switchboard

ADMIN_KEY = "test-admin-key-0123456789abcdef"


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        pause.wait(interval)
    return predicate()


@contextlib.contextmanager
def running_board(data_dir: Path, *, rate_limit: RateLimit | None = None, ask_timeout: float = 2.0,
                  transport: Any = "simulated") -> Iterator[Switchboard]:
    settings = SessionSettings(rate_limit=rate_limit or RateLimit(max_messages=1000, window=60,
                                                                  per_recipient_max=1000),
                               backoff=BackoffPolicy(base=0.1, factor=2.0, cap=0.5, max_attempts=20, stable_after=1.0))
    board = Switchboard(data_dir=data_dir, transport=transport, settings=settings, ask_timeout=ask_timeout)
    board.start()
    try:
        yield board
    finally:
        board.stop()


def build_app(board: Switchboard, data_dir: Path, **settings: Any):
    keys = ApiKeys(Path(data_dir) / "api-keys.json", ADMIN_KEY)
    defaults = {"sse_heartbeat": 0.5, "send_wait": 3.0}
    return make_app(board, None, keys, HttpSettings(**{**defaults, **settings}))


@contextlib.contextmanager
def serving(app) -> Iterator[GracefulServer]:
    server = GracefulServer(app, host="127.0.0.1", port=0, threads=8, drain_timeout=5).start_in_thread()
    try:
        yield server
    finally:
        server.shutdown(wait=True)
        app.switchboard.close()


class Http:
    """A small JSON client for the server tests (urllib, no keep-alive)."""

    def __init__(self, base: str, key: str | None = ADMIN_KEY) -> None:
        self.base = base
        self.key = key

    def request(self, method: str, path: str, body: Any = None, *, key: str | None | bool = True,
                headers: dict[str, str] | None = None, raw: bytes | None = None,
                timeout: float = 10) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        use_key = self.key if key is True else (key or None)
        if use_key:
            req.add_header("X-Api-Key", use_key)
        if data is not None and not (headers and "Content-Type" in headers):
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return answer.status, dict(answer.headers), _decode(answer.headers, answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), _decode(exc.headers, exc.read())

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any):
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)


def _decode(headers, data: bytes) -> Any:
    if (headers.get("Content-Type") or "").startswith("application/json"):
        return json.loads(data)
    return data


def connect_session(http: Http, company_id: str, phone: str = "79990001122") -> dict[str, Any]:
    """Create, link (simulated scan) and wait until connected."""
    status, _, body = http.post("/api/whatsapp/sessions", {"companyId": company_id})
    assert status in (200, 201), body
    status, _, body = http.post(f"/api/simulator/companies/{company_id}/scan", {"phone": phone})
    assert status == 200, body
    assert wait_until(lambda: http.get(f"/api/whatsapp/sessions/{company_id}/status")[2].get("status")
                      == "connected")
    return http.get(f"/api/whatsapp/sessions/{company_id}/status")[2]


class BlockingTransport(SimulatedTransport):
    """A simulated transport whose connect() hangs for chosen companies until released:
    the session actor, which calls connect() on its own thread, is stuck meanwhile."""

    def __init__(self, stuck: set[str]) -> None:
        super().__init__()
        self.stuck = stuck
        self.release = threading.Event()
        self.entered = threading.Event()

    def connect(self, company_id, company_dir, emit):
        if company_id in self.stuck:
            self.entered.set()
            self.release.wait(60)
        return super().connect(company_id, company_dir, emit)


# ---- `switchboard serve` as a process ------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("switchboard")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "switchboard.supervision.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SWITCHBOARD_", "WHATSAPP_")) and k not in ("PORT", "REDIS_URL")}
    return {**env, **extra}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


class Served:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.stderr_path = data_dir.parent / f"serve-{time.monotonic_ns()}.err"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([*COMMAND, "serve", "--port", "0", "--data-dir", str(data_dir), *args],
                                     cwd=data_dir.parent, env=env or clean_env(), stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True)
        line = self.proc.stdout.readline()
        if "serving http://" not in line:
            self.proc.wait(10)
        assert "serving http://" in line, (line, self.stderr_path.read_text())
        self.banner = line
        self.url = line.split("serving ", 1)[1].split(" ", 1)[0]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        url = [] if args[0] == "logs" else ["--url", self.url]
        result = subprocess.run([*COMMAND, *args, *url, "--data-dir", str(self.data_dir)],
                                cwd=self.data_dir.parent, env=clean_env(), capture_output=True, text=True,
                                timeout=30)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        finally:
            self._stderr.close()
        return self.proc.returncode, self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


