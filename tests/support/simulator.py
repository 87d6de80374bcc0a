"""`switchboard simulator` as a process for tests: a free port, a temp data dir, its own
admin key, fast QR timings; and `serve` linked to it. Other tests may use these too:

    with SimulatorProcess(tmp_path / "sim") as sim:
        gateway = serve_linked(tmp_path / "gw", sim)
        ...
        sim.client.scan("acme", "79990001122")
"""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from switchboard.actors.transports.simulated.client import SimulatorClient

from .http import COMMAND, Served, clean_env

SIMULATOR_KEY = "test-simulator-key-0123456789abcdef"
GATEWAY_KEY = "test-gateway-key-0123456789abcdef"


class SimulatorProcess:
    def __init__(self, data_dir: Path, *args: str, qr_first: float = 5.0, qr_next: float = 2.0,
                 qr_count: int = 3) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.args = ["--qr-first", str(qr_first), "--qr-next", str(qr_next), "--qr-count", str(qr_count), *args]
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.stderr_path = self.data_dir.parent / f"simulator-{time.monotonic_ns()}.err"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([*COMMAND, "simulator", "--port", "0", "--data-dir", str(self.data_dir),
                                      *self.args],
                                     cwd=self.data_dir.parent, env=clean_env(SWITCHBOARD_SIMULATOR_KEY=SIMULATOR_KEY),
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        line = self.proc.stdout.readline()
        if "serving http://" not in line:
            self.proc.wait(10)
        assert "serving http://" in line, (line, self.stderr_path.read_text())
        self.banner = line
        self.url = line.split("serving ", 1)[1].split(" ", 1)[0]
        self.client = SimulatorClient(self.url, SIMULATOR_KEY)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_linked(data_dir: Path, simulator: SimulatorProcess, *args: str, **env: str) -> Served:
    """`switchboard serve --transport simulated --simulator-url ...` on a free port."""
    return Served(data_dir, "--transport", "simulated", "--simulator-url", simulator.url, *args,
                  env=clean_env(SWITCHBOARD_ADMIN_KEY=GATEWAY_KEY, **env))


class ServiceInThread:
    """The service's parts in this process (network, link server, control API on a free
    port): what `switchboard simulator` runs, without a process to start. `url` is what a
    gateway's `--simulator-url` would be; `net` is the network itself, for direct control."""

    def __init__(self, data_dir: Path | None = None, **network_options) -> None:
        from switchboard.actors.transports.simulated import SimulatedNetwork
        from switchboard.actors.transports.simulated.service import LinkServer
        from switchboard.http.server import GracefulServer
        from switchboard.http.simulator import make_service_app

        options = {"qr_first": 5.0, "qr_next": 2.0, "qr_count": 3, **network_options}
        self.net = SimulatedNetwork(data_dir=data_dir, **options)
        self.links = LinkServer(self.net).start()
        app = make_service_app(self.net, SIMULATOR_KEY, ("127.0.0.1", self.links.port), data_dir or Path("/nonexistent"))
        self.server = GracefulServer(app, host="127.0.0.1", port=0, threads=4, drain_timeout=2).start_in_thread()
        self.url = self.server.url
        self.client = SimulatorClient(self.url, SIMULATOR_KEY)

    def stop(self) -> None:
        self.server.shutdown(wait=True)
        self.links.stop()
        self.net.close()

    def __enter__(self) -> ServiceInThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
