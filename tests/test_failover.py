"""The done-when drill, bounded: a real redis-server, `switchboard simulator` and three
`serve` instances as subprocesses, sixty linked companies and senders going through
every instance. SIGKILL one instance, then SIGSTOP another past the lease TTL and
resume it: every company is connected again on a live instance within TTL + 5 s, the
simulator never saw two live links for one account, and every accepted send arrived
exactly once, except one in flight at the instant of a fault, which may arrive twice
(counted apart; see Drill.delivery). (scripts/chaos_cluster runs the long version, scripts/bench_failover
prints the figures.)"""
from __future__ import annotations

import json
import socket
import time

import pytest

from .support.failover import Drill

TTL = 3.0
SENDERS = 3


@pytest.fixture
def drill(tmp_path):
    d = Drill(tmp_path, instances=3, companies=60, lease_ttl=TTL)
    yield d
    d.close()


def test_kill_and_freeze_instances_under_traffic(drill):
    drill.link_all(timeout=90)
    drill.start_traffic(senders=SENDERS)
    time.sleep(1.0)
    on = drill.connected()
    victims = [c for c, name in on.items() if name == "g0"]
    assert victims
    killed = time.monotonic()
    drill.kill("g0")
    times = drill.takeover_times(victims, killed, TTL + 15)
    assert set(times) == set(victims), f"{len(victims) - len(times)} companies of g0 never came back"
    assert max(times.values()) <= TTL + 5, times

    on = drill.connected()
    frozen = [c for c, name in on.items() if name == "g1"]
    assert frozen
    stopped = time.monotonic()
    drill.freeze("g1")
    times = drill.takeover_times(frozen, stopped, TTL + 15)
    assert set(times) == set(frozen), f"{len(frozen) - len(times)} companies of g1 never came back"
    assert max(times.values()) <= TTL + 5, times
    drill.thaw("g1")                          # it comes back, fences what it had, and rejoins
    drill.wait_all_connected(60)

    drill.stop_traffic()
    delivery = drill.delivery(settle=30)
    assert delivery["accepted"] > 20, delivery
    assert delivery["lost"] == 0 and delivery["twice"] == 0, delivery
    # A send in flight at the very instant of a SIGKILL/SIGSTOP may arrive twice (see
    # Drill.delivery): only straddling a fault, and at most one per sender per fault.
    assert delivery["in_flight_at_fault"] <= SENDERS * len(drill.faults), delivery
    links = drill.max_links()
    assert links["max"] <= 1, links


def test_the_simulator_drops_a_link_that_stops_pinging(tmp_path):
    from .support.simulator import SimulatorProcess
    with SimulatorProcess(tmp_path / "sim", "--link-idle-timeout", "0.5") as sim:
        status, link = sim.client.request("GET", "/api/simulator/link")
        assert status == 200
        with socket.create_connection((link["host"], link["port"]), timeout=5) as raw:
            raw.sendall(json.dumps({"op": "hello", "version": 1, "company": "acme", "credentials": None}).encode()
                        + b"\n")
            stream = raw.makefile("rb")
            first = json.loads(stream.readline())
            assert first["op"] == "keepalive" and 0 < first["every"] < 0.5
            started = time.monotonic()
            while stream.readline():                 # QR events, then the service hangs up on us
                assert time.monotonic() - started < 5
            assert time.monotonic() - started >= 0.4
