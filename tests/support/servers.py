"""Throwaway servers a test starts and stops itself: redis-server (which a test may freeze
with SIGSTOP) and PostgreSQL (initdb + postgres in a temp dir), each on a free port."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait(5)
                pytest.fail(f"{what} did not start")
            time.sleep(0.05)


class RedisServer:
    """A redis-server of the test's own, on a free port in a temp dir."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is missing; scripts/test installs it")
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(workdir), *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.paused = False
        wait_for_port(self.port, self.proc, "redis-server")

    def pause(self) -> None:
        """Freeze it: connections stay open, nothing answers (an unreachable Redis)."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# The newest PostgreSQL installed (Debian puts each major version in its own directory)
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit()
             else 0, default=Path("/usr/lib/postgresql/15/bin"))


class PostgresServer:
    """initdb + postgres in a temp dir on a free port (never the machine's own server).
    PostgreSQL refuses to run as root: as root, it runs as the `postgres` user."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL's initdb is missing; scripts/test installs it")
            pytest.skip("PostgreSQL binaries are not installed")
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="sb-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        data = self.workdir / "data"
        subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "sb", "--auth=trust",
                        "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen([*as_user, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port),
                                      "-k", str(self.workdir), "-c", "listen_addresses=127.0.0.1",
                                      "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, "postgres")
        deadline = time.monotonic() + 15
        while subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode:
            if time.monotonic() > deadline:       # accepting, but still starting up
                self.stop()
                pytest.fail("postgres did not become ready")
            time.sleep(0.05)
        self.url = f"postgres://sb@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def stop(self) -> None:
        self.proc.terminate()        # runuser passes SIGTERM on: a smart shutdown
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)
