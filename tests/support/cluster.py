"""Several in-process gateway instances sharing one Redis, one simulated WhatsApp and one
data directory (shared storage), with timings small enough for tests."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from switchboard.actors.lease import LeasePolicy
from switchboard.actors.transports.simulated import SimulatedNetwork
from switchboard.supervision import Switchboard
from switchboard.supervision.cluster import Cluster, ClusterSettings

from .sessions import FAST_BACKOFF, FAST_RESTARTS, FAST_SETTINGS, make_network

LEASE = LeasePolicy(ttl=2.0, renew_every=0.2, close_budget=0.5)
PATIENT = dataclasses.replace(FAST_SETTINGS, backoff=dataclasses.replace(FAST_BACKOFF, max_attempts=500))


class Instances:
    def __init__(self, redis_url: str, data_dir: Path, network: SimulatedNetwork | None = None) -> None:
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.network = network or make_network()
        self.boards: dict[str, Switchboard] = {}

    def start(self, name: str, capacity: int = 100, max_moves: int = 20, **board_options) -> Switchboard:
        cluster = Cluster(ClusterSettings(self.redis_url, url=f"http://{name}.invalid", instance_id=name,
                                          capacity=capacity, lease=LEASE, tick=0.2, member_ttl=1.0,
                                          max_moves=max_moves))
        board = Switchboard(data_dir=self.data_dir, transport="simulated", network=self.network,
                            settings=PATIENT, restart_policy=FAST_RESTARTS, cluster=cluster, **board_options)
        self.boards[name] = board.start()
        return board

    def stop(self, name: str) -> None:
        self.boards.pop(name).stop()

    def close(self) -> None:
        for name in list(self.boards):
            self.stop(name)
        self.network.close()

    # ---- what the tests look at ---------------------------------------------------------

    def status(self, company_id: str) -> tuple[str | None, dict]:
        """(instance, status) of the one instance running the company, or (None, {})."""
        for name, board in self.boards.items():
            if company_id in board.directory.refs:
                return name, board.session(company_id, create=False).status().get(timeout=5)
        return None, {}

    def connected_on(self) -> dict[str, str]:
        """company -> the instance where it is connected."""
        where = {}
        for name, board in self.boards.items():
            for status in board.statuses():
                if status["status"] == "connected":
                    assert status["companyId"] not in where, f"{status['companyId']} connected twice"
                    where[status["companyId"]] = name
        return where

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str,
             check: Callable[[], None] | None = None) -> float:
        """Poll (with `check` on every look) until `predicate()`; the seconds it took."""
        started = time.monotonic()
        while not predicate():
            if check is not None:
                check()
            assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
            time.sleep(0.05)
        return time.monotonic() - started

    def never_two_links(self, companies: list[str]) -> None:
        for company_id in companies:
            assert self.network.max_seen(company_id) <= 1, f"{company_id} had two live connections"

    def partition(self, name: str) -> None:
        """Cut the instance off from Redis (its connections to Redis fail from now on)."""
        for client in self.boards[name].cluster.clients:
            pool = client.connection_pool
            pool.connection_kwargs["port"] = 1      # nothing listens there: refused at once
            pool.disconnect()
            pool.reset()                            # pooled connections would reconnect to the old port

    def heal(self, name: str, port: int) -> None:
        for client in self.boards[name].cluster.clients:
            pool = client.connection_pool
            pool.connection_kwargs["port"] = port
            pool.disconnect()
            pool.reset()
