"""The failover drill, shared by the bounded test in the suite and scripts/chaos_cluster
and scripts/bench_failover: a real redis-server, `switchboard simulator` and N `serve`
instances as subprocesses on loopback ports (one shared data directory: the simulated
devices' credentials are files there, as neonize's would be rows in PostgreSQL), a few
hundred linked companies, senders going through every instance, and faults: SIGKILL of
an instance, SIGSTOP of another past the lease TTL, then SIGCONT.

What it measures: the time each company of a failed instance takes to be connected
again elsewhere; the most live connections the simulator ever saw for one account; and,
for every send an instance accepted (200/202), whether the recipient got it exactly once.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import random
import signal
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .http import Served, clean_env
from .servers import RedisServer
from .simulator import GATEWAY_KEY, SimulatorProcess


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"X-Api-Key": GATEWAY_KEY, "Content-Type": "application/json",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return 0, {}                     # refused, reset, timed out: the instance is down or frozen


@dataclasses.dataclass
class Send:
    company: str
    text: str
    key: str
    accepted: bool = False
    final: bool = False              # refused for good (a 4xx that is not "try again")


class Drill:
    def __init__(self, workdir: Path, *, instances: int = 3, companies: int = 200, lease_ttl: float = 3.0,
                 seed: int = 1) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.lease_ttl = lease_ttl
        self.companies = [f"co{i:05d}" for i in range(companies)]
        self.redis = RedisServer(workdir)
        # Like WhatsApp's servers, the simulator drops a link that stops its keep-alive pings
        # (a frozen instance), well before that instance's leases can expire.
        self.sim = SimulatorProcess(workdir / "sim", "--link-idle-timeout", str(lease_ttl / 2),
                                    qr_first=120.0, qr_next=60.0, qr_count=3)
        self.data_dir = workdir / "gateways" / "data"
        self.env = clean_env(SWITCHBOARD_ADMIN_KEY=GATEWAY_KEY, REDIS_URL=self.redis.url,
                             SWITCHBOARD_LEASE_TTL=str(lease_ttl))
        self.gateways: dict[str, Served] = {}
        self.frozen: set[str] = set()
        self.dead: set[str] = set()
        self.faults: list[float] = []          # wall-clock times of each SIGKILL / SIGSTOP
        for n in range(instances):
            self.start_gateway(f"g{n}")
        self.sends: list[Send] = []
        self._stop_traffic = threading.Event()
        self._senders: list[threading.Thread] = []
        self._lock = threading.Lock()

    # ---- processes ---------------------------------------------------------------------

    def start_gateway(self, name: str, *args: str) -> Served:
        served = Served(self.data_dir, "--transport", "simulated", "--simulator-url", self.sim.url,
                        "--instance-id", name, *args, env=self.env)
        self.dead.discard(name)
        self.gateways[name] = served
        return served

    def live(self) -> list[str]:
        return [name for name in self.gateways if name not in self.dead and name not in self.frozen]

    def kill(self, name: str) -> None:
        self.faults.append(time.time())
        self.gateways[name].kill()            # SIGKILL
        self.dead.add(name)

    def freeze(self, name: str) -> None:
        self.faults.append(time.time())
        self.gateways[name].proc.send_signal(signal.SIGSTOP)
        self.frozen.add(name)

    def thaw(self, name: str) -> None:
        self.gateways[name].proc.send_signal(signal.SIGCONT)
        self.frozen.discard(name)

    def close(self) -> None:
        self.stop_traffic()
        for name, served in self.gateways.items():
            if name in self.frozen:
                self.thaw(name)
            if name in self.dead:
                continue
            else:
                try:
                    served.stop()
                except Exception:
                    served.kill()
        self.sim.stop()
        self.redis.stop()

    # ---- companies ---------------------------------------------------------------------

    def url(self, name: str | None = None) -> str:
        return self.gateways[name or self.rng.choice(self.live())].url

    def link_all(self, timeout: float = 120.0, workers: int = 1) -> None:
        """Create every company through some instance and scan its QR at the simulator
        (`workers` threads at a time)."""
        def create(company: str) -> None:
            for _ in range(50):
                status, body = http("POST", self.url() + "/api/whatsapp/sessions", {"companyId": company},
                                    timeout=30)
                if status in (200, 201):
                    return
                time.sleep(0.2)               # an instance busy or not yet a member: another try
            raise AssertionError(f"{company} could not be created: {status} {body}")

        def scan(company: str) -> bool:
            try:
                self.sim.client.scan(company, self.phone(company))
                return True
            except LookupError:
                return False                  # not showing its QR code yet
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(create, self.companies))
            pending = set(self.companies)
            deadline = time.monotonic() + timeout
            while pending:
                assert time.monotonic() < deadline, f"{len(pending)} companies never showed a QR code"
                done = [c for c, ok in zip(sorted(pending), pool.map(scan, sorted(pending))) if ok]
                pending.difference_update(done)
                if pending:
                    time.sleep(0.2)
        self.wait_all_connected(timeout)

    @staticmethod
    def phone(company: str) -> str:
        return "7999" + company[2:].rjust(7, "0")

    @staticmethod
    def recipient(company: str) -> str:
        return "7900" + company[2:].rjust(7, "0")

    def connected(self) -> dict[str, str]:
        """company -> the live instance where it is connected (each asked for its own only:
        with the hop header, an instance does not add the other members' lists)."""
        where: dict[str, str] = {}
        for name in self.live():
            status, body = http("GET", self.url(name) + "/api/whatsapp/sessions", timeout=5,
                                headers={"X-Switchboard-Forwarded-By": "drill"})
            if status != 200:
                continue
            for session in body.get("sessions", []):
                if session.get("status") == "connected":
                    where[session["companyId"]] = name
        return where

    def wait_all_connected(self, timeout: float) -> float:
        started = time.monotonic()
        while len(self.connected()) < len(self.companies):
            assert time.monotonic() - started < timeout, \
                f"only {len(self.connected())} of {len(self.companies)} connected after {timeout} s"
            time.sleep(0.2)
        return time.monotonic() - started

    def takeover_times(self, companies: list[str], since: float, timeout: float) -> dict[str, float]:
        """Seconds from `since` until each company was connected on a live instance."""
        times: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(times) < len(companies) and time.monotonic() < deadline:
            now = time.monotonic()
            where = self.connected()
            for company in companies:
                if company not in times and company in where:
                    times[company] = now - since
            time.sleep(0.1)
        return times

    # ---- traffic -----------------------------------------------------------------------

    def start_traffic(self, senders: int = 4, pause: float = 0.02) -> None:
        def run(worker: int) -> None:
            n = 0
            while not self._stop_traffic.is_set():
                company = self.rng.choice(self.companies)
                send = Send(company, f"w{worker}-{n}", f"k-w{worker}-{n}")
                n += 1
                with self._lock:
                    self.sends.append(send)
                self._deliver(send)
                self._stop_traffic.wait(pause)
        self._senders = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(senders)]
        for thread in self._senders:
            thread.start()

    def _deliver(self, send: Send, attempts: int = 200) -> None:
        """Send until an instance accepts it or refuses it for good; a retry carries the same
        Idempotency-Key, so an answer lost on the way cannot make it go twice."""
        for _ in range(attempts):
            if self._stop_traffic.is_set() and not send.accepted:
                return
            path = f"/api/whatsapp/sessions/{send.company}/messages"
            status, _body = http("POST", self.url() + path, {"to": self.recipient(send.company),
                                                              "message": send.text},
                                 headers={"Idempotency-Key": send.key}, timeout=15)
            if status in (200, 202):
                send.accepted = True
                return
            if status in (400, 404, 413, 415):
                send.final = True
                return
            time.sleep(0.2)          # 0 (down), 409 (reconnecting/busy), 429, 503: try again

    def stop_traffic(self) -> None:
        self._stop_traffic.set()
        for thread in self._senders:
            thread.join(30)

    # ---- checks --------------------------------------------------------------------------

    def delivery(self, settle: float = 30.0) -> dict[str, Any]:
        """accepted, delivered once, lost, twice (waiting up to `settle` s for outboxes).

        A send in flight on an instance at the instant it is killed or frozen may arrive
        twice: the instance had handed it to WhatsApp, but not yet recorded WhatsApp's
        answer, so its successor sends it again (at-least-once at a crash, as a crash of
        one process is; issue 8's unconfirmed outbox makes that at-most-once). Those are
        counted apart, as `in_flight_at_fault`: their first copy arrived before a fault
        and the second after it. Every other duplicate is `twice`."""
        accepted = [s for s in self.sends if s.accepted]
        deadline = time.monotonic() + settle
        while True:
            got: dict[str, dict[str, list[float]]] = {}
            for company in {s.company for s in accepted}:
                arrivals: dict[str, list[float]] = collections.defaultdict(list)
                for message in self.sim.client.messages(self.recipient(company)):
                    arrivals[message.get("text")].append(float(message.get("timestamp", 0)))
                got[company] = arrivals
            lost = [s for s in accepted if not got[s.company].get(s.text)]
            if not lost or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        repeated = [s for s in accepted if len(got[s.company].get(s.text, ())) > 1]

        def at_fault(send: Send) -> bool:
            first, second = sorted(got[send.company][send.text])[:2]
            return len(got[send.company][send.text]) == 2 and any(first <= f + 0.05 < second for f in self.faults)
        in_flight = [s for s in repeated if at_fault(s)]
        twice = [s for s in repeated if not at_fault(s)]
        return {"accepted": len(accepted), "once": len(accepted) - len(lost) - len(repeated), "lost": len(lost),
                "twice": len(twice), "in_flight_at_fault": len(in_flight), "attempted": len(self.sends),
                "examples": [(s.company, s.text) for s in (lost + twice)[:5]]}

    def max_links(self) -> dict[str, Any]:
        view = self.sim.client.connections()
        per_company = {c: v.get("maxSeen", 0) for c, v in view["companies"].items()}
        per_account = {a: v.get("maxSeen", 0) for a, v in view["accounts"].items()}
        worst = max(list(per_company.values()) + list(per_account.values()) + [0])
        return {"max": worst, "companies_over_1": sorted(c for c, n in per_company.items() if n > 1)}


def summary(times: dict[str, float]) -> str:
    if not times:
        return "none"
    values = sorted(times.values())
    pct = lambda p: values[min(len(values) - 1, int(p * len(values)))]     # noqa: E731
    return (f"n={len(values)} min={values[0]:.1f}s p50={statistics.median(values):.1f}s p95={pct(0.95):.1f}s "
            f"max={values[-1]:.1f}s")
